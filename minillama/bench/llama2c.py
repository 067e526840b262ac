"""llama2.c's `run` (fp32, v0 files) and `runq` (int8, v2 files) as a same-run baseline.

The user builds them from llama2.c's sources (see README); the bench writes the very
random weights it benchmarks as llama2.c files, runs each binary greedy for the same number
of timed forward steps as the engine, and reads back both its speed and its greedy token ids.

Counting steps (llama2.c run.c `generate`, with no -i prompt, so the prompt is just BOS):
`run CKPT -n N` calls forward N times, at positions 0..N-1, the first on BOS. It starts its
timer after the first forward and reports `achieved tok/s` = (N - 1) / time, so it times N - 1
steps, at positions 1..N-1. Every forward picks a token, which it prints, so N ids come out,
unless it picks BOS (id 1), where it stops without printing it. The engine's decode times
n_tokens steps at positions 0..n_tokens-1 from BOS, so the bench passes N = n_tokens + 1
(hence n_tokens <= seq_len - 1: run.c caps N at seq_len), and C's first n_tokens ids are
the engine's greedy ids.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from minillama.bench.launch import launch

BINARIES = {"run": 0, "runq": 2}  # binary -> the llama2.c file version it reads
BOS, EOS = 1, 2
_TOK_S = re.compile(r"achieved tok/s:\s*([0-9.eE+-]+)")
# piece i of the stand-in vocabulary is "[i]"; llama2c's writer stores EOS as "\n</s>\n"
_PIECE = re.compile(r"\[(\d+)\]|</s>")


class NumberedPieces:
    """A stand-in tokenizer for random weights, which have no real vocabulary: piece i is
    "[i]", so the text llama2.c prints maps back to ids. No piece looks like a "<0xAB>" byte
    piece or starts with a space, which run.c's decode would rewrite."""

    bos_id, eos_id = BOS, EOS

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def id_to_piece(self, i: int) -> str:
        return f"[{i}]"

    def score(self, i: int) -> float:
        return 0.0  # only encode() merges by score, and an empty prompt merges nothing


def find_binaries(directory: str | Path) -> tuple[dict[str, Path], list[str]]:
    """({name: path} of the executable run/runq in directory, one problem line per missing one)."""
    found, problems = {}, []
    for name in BINARIES:
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path
        else:
            problems.append(f"llama2.c: no executable {path}; its column is left out "
                            f"(build it with `sh ../shared/tools/llama2c/build.sh {directory}`)")
    return found, problems


def write_model_files(directory: str | Path, args, state_dict, names) -> dict[str, Path]:
    """Write the weights for each binary in names (v0 for run, v2 for runq) and a stand-in
    tokenizer.bin into directory: {"run": ckpt, "runq": ckpt, "tokenizer": path}."""
    from minillama.formats.llama2c import write_llama2c, write_tokenizer_bin

    directory = Path(directory)
    files = {"tokenizer": directory / "tokenizer.bin"}
    write_tokenizer_bin(files["tokenizer"], NumberedPieces(args.vocab_size))
    for name in names:
        files[name] = directory / f"model_v{BINARIES[name]}.bin"
        write_llama2c(files[name], args, state_dict, version=BINARIES[name], group_size=64)
    return files


def parse_tok_s(text: str) -> float:
    """The `achieved tok/s: X` figure llama2.c prints to stderr."""
    m = _TOK_S.search(text)
    if not m:
        raise ValueError(f"no 'achieved tok/s' in llama2.c's output: {text[-200:]!r}")
    return float(m.group(1))


def parse_ids(text: str, steps: int) -> list[int]:
    """Token ids from what llama2.c printed with the NumberedPieces vocabulary. Fewer than
    `steps` ids means it picked BOS, which it does not print: BOS is appended."""
    ids = [int(m.group(1)) if m.group(1) else EOS for m in _PIECE.finditer(text)]
    return ids + [BOS] if len(ids) < steps else ids


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where a and b differ, over their common length; None if none."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def run_binary(binary: Path, files: dict[str, Path], name: str, n_tokens: int, threads: int) -> dict:
    """One greedy run timing n_tokens forward steps: {"tok_s", "ids", "timed_steps", "peak_mb"}
    (fewer timed steps if it picked BOS, where llama2.c stops). Raises
    RuntimeError with llama2.c's last words if it fails."""
    steps = n_tokens + 1  # see the module docstring: C's timer skips its first step
    cmd = [str(binary), str(files[name]), "-z", str(files["tokenizer"]), "-t", "0", "-n", str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # and GOMP_SPINCOUNT, as the engine's
    r = launch(cmd, env)  # from a small process: the peak RSS is C's own
    if r["returncode"] != 0:
        last = r["stderr"].strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"{binary} failed (exit code {r['returncode']}): {last[0]}")
    ids = parse_ids(r["stdout"], steps)
    return dict(tok_s=parse_tok_s(r["stderr"]), ids=ids, timed_steps=len(ids) - 1,
                peak_mb=r["peak_mb"])


def run_all(binaries: dict, files: dict, n_tokens: int, threads: int, runs: int) -> dict:
    """{binary: {"decode": [tok/s per run], "ids", "peak_mb"}} for each llama2.c binary; one
    that fails is reported in one line and dropped from `binaries` for the rest of the bench."""
    out = {}
    for name, path in list(binaries.items()):
        try:
            results = [run_binary(path, files, name, n_tokens, threads) for _ in range(runs)]
        except (RuntimeError, ValueError) as e:
            print(f"llama2.c: {e}; its column is left out from here on", flush=True)
            del binaries[name]
            continue
        short = min(r["timed_steps"] for r in results)
        if short < n_tokens:
            print(f"llama2.c: {name} picked BOS and stopped after {short} of {n_tokens} steps: "
                  "its tok/s covers fewer steps", flush=True)
        out[name] = dict(decode=[r["tok_s"] for r in results], ids=results[0]["ids"],
                         peak_mb=max(r["peak_mb"] for r in results))
    return out


def parity(c_ids: list[int], engine_ids: list[int]) -> dict:
    """Where llama2.c's greedy ids first differ from the engine's over their common length."""
    n = min(len(c_ids), len(engine_ids))
    k = first_difference(c_ids[:n], engine_ids[:n])
    return dict(compared=n, first_difference=k, c_id=None if k is None else c_ids[k],
                engine_id=None if k is None else engine_ids[k])
