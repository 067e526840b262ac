"""Peak memory of loading a checkpoint into the engine, per format, against the file's size.

    minillama bench formats                       # stories110M-shape random weights
    minillama bench formats --shape stories15M --formats hf,gguf:q8_0

One random-weight model is written in each format (float32 unless the format says
otherwise), then each file is loaded by `Engine.from_pretrained` in a fresh process (started
through `minillama.bench.launch`, so its peak RSS is its own). The child measures its RSS
after the imports (the baseline), loads, and reports what the engine holds; the table shows
the peak above the baseline, the engine's own arrays (weights, KV cache and buffers), and the
difference: what loading cost on top of the result. "no drop" repeats the load with
`FileMap.drop` disabled, to show what memory-mapping without handing pages back would cost.
Meta's .pth is read by torch (`torch.load(mmap=True)`), so its child imports torch first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minillama.bench.launch import launch
from minillama.bench.machine import describe, machine_info

FORMATS = ["hf", "meta", "llama2c", "llama2c:q8_0", "gguf", "gguf:q8_0", "gguf:q4_0"]

_CHILD = """
import json, resource, sys, time
import numpy as np
fmt, path, drop = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
if fmt == "meta":
    import torch  # torch.load reads the .pth: count its import in the baseline
from minillama.engine import Engine
from minillama.formats.mapped import FileMap
if not drop:
    FileMap.drop = lambda self: None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
e = Engine.from_pretrained(path)
t = time.perf_counter() - t0
def nbytes(x):
    return x.nbytes if isinstance(x, np.ndarray) else sum(a.nbytes for a in x if isinstance(a, np.ndarray))
w = e.weights
tied = lambda k, x: k == "output" and any(isinstance(a, np.ndarray) and np.shares_memory(a, w.tok_embeddings)
                                         for a in x)
weights = sum(nbytes(x) for k, x in zip(w._fields, w) if not tied(k, x))
print(json.dumps(dict(base_kb=base, load_s=t, weights=weights, state=nbytes(e.state))))
"""


def random_state_dict(args, seed: int = 0) -> dict[str, np.ndarray]:
    """Every weight of args' shape, float32 N(0, 0.02) (norms 1): the bytes of a real model."""
    from minillama.config import weight_shapes

    rng = np.random.default_rng(seed)
    sd = {}
    for name, shape in weight_shapes(args).items():
        sd[name] = np.ones(shape, np.float32) if len(shape) == 1 else \
            (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02))
    return sd


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())


def _weights_size(path: Path) -> int:
    """Bytes of the weight files alone (tokenizers and configs left out)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".safetensors", ".pth"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama bench formats", description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="stories110M", help="a preset name (default stories110M)")
    p.add_argument("--formats", default=",".join(FORMATS),
                   help=f"comma-separated (default {','.join(FORMATS)})")
    p.add_argument("--dir", help="where to write the files (default: a temporary directory)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    from minillama.config import get_preset
    from minillama.formats.checkpoint import QUANTS, write_checkpoint

    a = _parser().parse_args(argv)
    fmts = a.formats.split(",")
    for f in fmts:
        fmt, _, quant = f.partition(":")
        if fmt not in QUANTS or (quant or None) not in QUANTS[fmt]:
            raise SystemExit(f"error: unknown format {f!r}; accepted: {', '.join(FORMATS)}")
    args = get_preset(a.shape)
    print(describe(machine_info(probe=False)))
    tmp = tempfile.TemporaryDirectory() if a.dir is None else None
    root = Path(a.dir or tmp.name)
    sd = random_state_dict(args)
    print(f"\n{a.shape}: {sum(x.size for x in sd.values()):,} parameters; files in {root}")
    rows = []
    try:
        for f in fmts:
            fmt, _, quant = f.partition(":")
            t0 = time.perf_counter()
            path = write_checkpoint(root / f.replace(":", "-"), fmt, args, sd, None, quant or None)
            write_s = time.perf_counter() - t0
            row = dict(format=f, file_bytes=_weights_size(path), write_s=write_s)
            for drop in (True, False):
                r = launch([sys.executable, "-c", _CHILD, fmt, str(path), "1" if drop else "0"])
                if r["returncode"] != 0:
                    raise RuntimeError(f"loading {f} failed: {r['stderr'][-400:]}")
                child = json.loads(r["stdout"].strip().splitlines()[-1])
                peak = r["peak_mb"] * 2**20 - child["base_kb"] * 1024
                row["drop" if drop else "no_drop"] = dict(peak_above_base=peak, load_s=child["load_s"])
                row.update(weights=child["weights"], state=child["state"])
            rows.append(row)
            print(f"  {f}: written in {write_s:.1f} s, loaded in {row['drop']['load_s']:.2f} s", flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    mib = 2**20
    print(f"\npeak RSS of Engine.from_pretrained above the child's baseline (MiB), {a.shape} shape:")
    head = (f"{'format':<14}{'file':>8}{'engine':>9}{'peak':>8}{'extra':>8}{'peak/file':>11}{'no drop':>9}"
            f"{'load s':>8}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        engine = r["weights"] + r["state"]
        p = r["drop"]["peak_above_base"]
        no_drop = r["no_drop"]["peak_above_base"]
        print(f"{r['format']:<14}{r['file_bytes'] / mib:>8.0f}{engine / mib:>9.0f}{p / mib:>8.0f}"
              f"{(p - engine) / mib:>8.0f}{p / r['file_bytes']:>11.2f}{no_drop / mib:>9.0f}"
              f"{r['drop']['load_s']:>8.2f}")
    print("file: the weight files; engine: the engine's weights (as it stores them: Q8_0/Q4_0 stay "
          "quantized, llama2c:q8_0 is dequantized) plus its KV cache and buffers; extra: peak - engine; "
          "no drop: peak with FileMap.drop disabled")
    if a.json:
        payload = dict(machine=machine_info(probe=False), shape=a.shape, rows=rows)
        Path(a.json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
