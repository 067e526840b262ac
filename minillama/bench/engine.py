"""`minillama bench engine`: the Numba engine against PyTorch eager, plain NumPy and llama2.c.

Random-weight models with llama2.c's shapes (stories15M, stories42M, stories110M). For
each shape and thread count, each implementation runs in its own fresh process, so thread
pools start at the right size and peak memory (max RSS) is its own:

- engine: `Engine.step` (one jitted call per token), greedy, and `Engine.prefill`;
- torch:  the course's `Llama` in eager mode with a `KVCache`, under inference_mode;
- numpy:  the same step written with the NumPy twins of the kernels (`kernels_ref`);
- run, runq (with --llama2c DIR): llama2.c's fp32 and int8 binaries, built by the user,
  on the same random weights written as llama2.c files (see minillama/bench/llama2c.py),
  whose greedy ids are also compared with the engine's: an independent parity check.

Decode is tokens/s over --tokens positions from an empty cache (min, median and max of
--runs runs); prefill is a --tokens prompt in one batched pass. The bandwidth ceiling is
bytes of weights read per token divided by the read bandwidth measured at that thread count
(row sums over 256 MB, see `memory_bandwidth`): a decode step only reads its weights, so
reading is the bound. The copy bandwidth (bytes copied per second) is printed beside it;
it is lower, and a ceiling made from it would be too easy to reach. Then the time to first
token and peak RSS of `minillama generate` with the shipped model. The CPU, the vector width
the kernels were compiled for and the load average come first: timings on a shared
machine are noisy, and a figure means something only next to others from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from minillama.bench import llama2c, report
from minillama.bench.machine import describe, machine_info
from minillama.bench.startup import print_generate, time_generate

SHAPES = ("stories15M", "stories42M", "stories110M")


# ---------------------------------------------------------------------------------------
# Memory bandwidth (also used by lesson 09)
# ---------------------------------------------------------------------------------------


def memory_bandwidth(n_bytes: int = 2**28, runs: int = 5) -> tuple[float, float]:
    """(read, copy) bandwidth in bytes/s over an n_bytes float32 array at the current Numba
    thread count, best of `runs`. Read sums each 4 KB row in a prange over rows: the access
    pattern of a decode matvec, with nothing to multiply. (A flat sum split into 64 chunks
    measured 12 / 22 GB/s at 1 / 2 threads against 18 / 35 for this, and numpy's sum 16 on
    one thread: the ceiling is only honest if the read kernel is the fastest we have.) Copy
    counts bytes copied. Make n_bytes far bigger than the CPU's caches."""
    import numba
    from numba import njit, prange

    from minillama.kernels import FASTMATH

    @njit(parallel=True, fastmath=FASTMATH)
    def row_sums(a):  # a decode matvec without the multiply: each row summed, prange over rows
        out = np.empty(a.shape[0], np.float32)
        for i in prange(a.shape[0]):
            acc = np.float32(0.0)
            for j in range(a.shape[1]):
                acc += a[i, j]
            out[i] = acc
        return out

    @njit(parallel=True)
    def pcopy(dst, src):  # a slice per block of rows: a memcpy each
        n = src.shape[0]
        chunk = (n + 63) // 64
        for c in prange(64):
            dst[c * chunk:min(n, (c + 1) * chunk)] = src[c * chunk:min(n, (c + 1) * chunk)]

    src = np.ones((n_bytes // 4096, 1024), np.float32)  # rows of 4 KB
    dst = np.empty_like(src)

    def best(fn) -> float:
        fn()  # compiles, and touches every page
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return src.nbytes / min(times)

    copy = (lambda: np.copyto(dst, src)) if numba.get_num_threads() == 1 else (lambda: pcopy(dst, src))
    return best(lambda: row_sums(src)), best(copy)


# ---------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# ---------------------------------------------------------------------------------------


def _random_state_dict(args, seed: int = 0) -> dict[str, np.ndarray]:
    """llama2.c-shaped random float32 weights (std 0.02, norms 1), Meta's names."""
    rng = np.random.default_rng(seed)
    dim, hd, hidden = args.dim, args.head_dim, args.ffn_hidden_dim

    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    sd = {"tok_embeddings.weight": rand(args.vocab_size, dim), "norm.weight": np.ones(dim, np.float32)}
    if not args.tie_embeddings:
        sd["output.weight"] = rand(args.vocab_size, dim)
    for l in range(args.n_layers):
        p = f"layers.{l}."
        sd[p + "attention_norm.weight"] = np.ones(dim, np.float32)
        sd[p + "ffn_norm.weight"] = np.ones(dim, np.float32)
        sd[p + "attention.wq.weight"] = rand(args.n_heads * hd, dim)
        sd[p + "attention.wk.weight"] = rand(args.n_kv_heads * hd, dim)
        sd[p + "attention.wv.weight"] = rand(args.n_kv_heads * hd, dim)
        sd[p + "attention.wo.weight"] = rand(dim, args.n_heads * hd)
        sd[p + "feed_forward.w1.weight"] = rand(hidden, dim)
        sd[p + "feed_forward.w2.weight"] = rand(dim, hidden)
        sd[p + "feed_forward.w3.weight"] = rand(hidden, dim)
    return sd


def weight_bytes_per_token(args) -> int:
    """Bytes of float32 weights one decode step reads: every matrix, the norms, one embedding row."""
    from minillama.model import count_parameters

    embeddings = args.vocab_size * args.dim
    classifier = args.vocab_size * args.dim  # tied: the embedding matrix is read once more
    return 4 * (count_parameters(args) - embeddings + (classifier if args.tie_embeddings else 0)
                + args.dim)


def _decode_runs(step, reset, n_tokens: int, runs: int) -> tuple[list[float], list[int]]:
    """(tok/s of each run, the greedy ids of the last) decoding n_tokens from BOS and an
    empty cache; ids[i] is the argmax of the logits at position i."""
    speeds = []
    for _ in range(runs):
        reset()
        token, ids, t0 = 1, [], time.perf_counter()
        for pos in range(n_tokens):
            token = int(np.argmax(step(token, pos)))
            ids.append(token)
        speeds.append(n_tokens / (time.perf_counter() - t0))
    return speeds, ids


def _prefill_runs(prefill, reset, n_tokens: int, runs: int) -> list[float]:
    prompt = np.arange(n_tokens) % 1000 + 1
    speeds = []
    for _ in range(runs):
        reset()
        t0 = time.perf_counter()
        prefill(prompt)
        speeds.append(n_tokens / (time.perf_counter() - t0))
    return speeds


def _worker_engine(args, n_tokens: int, runs: int, quant: str | None = None) -> dict:
    from numba import njit

    from minillama import engine as engine_module
    from minillama.engine import Engine, forward_step
    from minillama.kernels import JIT

    engine = Engine.from_state_dict(args, _random_state_dict(args), quant=quant)
    w, s = engine.weights, engine.state

    def step(token, pos):
        return engine.step(token)

    t0 = time.perf_counter()
    engine.step(1), engine.prefill([1, 2, 3])  # compile, or load from the cache
    first_call = time.perf_counter() - t0
    decode, ids = _decode_runs(step, engine.reset, n_tokens, runs)
    prefill = _prefill_runs(engine.prefill, engine.reset, n_tokens, runs)

    # time outside the jitted step: the same greedy loop with a no-op in place of the step
    # (same arguments, so the call's unboxing counts as outside; argmax and checks too)
    @njit(**dict(JIT, cache=False))
    def no_op(w, s, token, pos, n_heads, eps, n_spans):
        return pos

    no_op(w, s, 1, 0, args.n_heads, args.norm_eps, 1)
    engine_module.forward_step = no_op
    try:
        around, _ = _decode_runs(step, engine.reset, n_tokens, max(runs, 5))
    finally:
        engine_module.forward_step = forward_step
    outside = statistics.median(decode) / statistics.median(around)  # time ratio
    return dict(decode=decode, prefill=prefill, first_call_s=first_call, outside_fraction=outside,
                greedy_ids=ids, bytes_per_token=engine.bytes_per_token())


def _worker_torch(args, n_tokens: int, runs: int) -> dict:
    import torch

    from minillama.model import KVCache, Llama

    model = Llama(args).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in _random_state_dict(args).items()},
                          strict=False)  # tied: output.weight is tok_embeddings.weight
    cache = KVCache(args)

    def step(token, pos):
        return model(torch.tensor([[token]]), pos, cache)[0, -1]

    def prefill(prompt):
        return model(torch.as_tensor(prompt)[None], 0, cache)[0, -1]

    with torch.inference_mode():
        step(1, 0)
        decode, _ = _decode_runs(step, lambda: None, n_tokens, runs)
        prefill = _prefill_runs(prefill, lambda: None, n_tokens, runs)
    return dict(decode=decode, prefill=prefill)


def _call(name, fn, *args):
    return fn(*args)


def python_step(kernels, w, s, token, pos, n_heads, eps, call=_call, n_spans=1):
    """engine.forward_step, line for line, in Python with the kernels of module `kernels`:
    the NumPy twins (the numpy baseline), or the Numba kernels called one at a time (the
    profile, whose `call(name, fn, *args)` times each). Returns the logits (vocab_size,)."""
    x, xb = s.x, s.xb
    hd = s.key_cache.shape[3]
    x[:] = w.tok_embeddings[token]
    q, out = s.q.reshape(n_heads, hd), xb.reshape(n_heads, hd)
    for l in range(w.attention_norm.shape[0]):
        call("rmsnorm", kernels.rmsnorm, xb, x, w.attention_norm[l], eps)
        k, v = s.key_cache[l, pos], s.value_cache[l, pos]
        call("qkv matvec", kernels.qkv_matvec, s.q, k.reshape(-1), v.reshape(-1), w.wq, w.wk, w.wv,
             l, xb)
        call("rope", kernels.rope, q, s.cos[pos], s.sin[pos])
        call("rope", kernels.rope, k, s.cos[pos], s.sin[pos])
        call("attention", kernels.attention, out, q, s.key_cache[l], s.value_cache[l], s.att, pos + 1,
             s.parts[:n_spans])
        call("wo matvec+add", kernels.matvec_add, x, w.wo, l, xb)
        call("rmsnorm", kernels.rmsnorm, xb, x, w.ffn_norm[l], eps)
        call("w1/w3 swiglu", kernels.swiglu_matvec, s.hb, w.w1, w.w3, l, xb)
        call("w2 matvec+add", kernels.matvec_add, x, w.w2, l, s.hb)
    call("rmsnorm", kernels.rmsnorm, xb, x, w.norm, eps)
    call("classifier", kernels.matvec, s.logits, w.output, np.int64(0), xb)
    return s.logits


def _worker_numpy(args, n_tokens: int, runs: int) -> dict:
    from minillama import kernels_ref as R
    from minillama.engine import Engine

    engine = Engine.from_state_dict(args, _random_state_dict(args))
    w, s = engine.weights, engine.state

    def step(token, pos):
        return python_step(R, w, s, token, pos, args.n_heads, args.norm_eps)

    decode, _ = _decode_runs(step, lambda: None, n_tokens, runs)
    return dict(decode=decode, prefill=[])


def _worker_bandwidth(args, n_tokens: int, runs: int) -> dict:
    read, copy = memory_bandwidth(runs=max(runs, 5))
    return dict(read_gbs=read / 1e9, copy_gbs=copy / 1e9)


def _worker_profile(args, n_tokens: int, runs: int) -> dict:
    """Time per kernel class per token: the step's kernels called one by one from Python
    (each call's dispatch overhead, measured on a no-op with the same arguments, taken off)."""
    import numba
    from numba import njit

    from minillama import kernels as K
    from minillama.engine import Engine, forward_step
    from minillama.kernels import JIT

    engine = Engine.from_state_dict(args, _random_state_dict(args))
    w, s, nh, eps = engine.weights, engine.state, args.n_heads, args.norm_eps

    @njit(**dict(JIT, cache=False))
    def noop(a, b, c, d):
        return c

    def timed(name, fn, *a):
        t0 = time.perf_counter()
        fn(*a)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0 - overhead

    noop(w.wq, s.q, 0, s.xb)  # compile it first
    calls = []
    for _ in range(200):
        t0 = time.perf_counter()
        noop(w.wq, s.q, 0, s.xb)
        calls.append(time.perf_counter() - t0)
    spent, overhead = {}, statistics.median(calls)
    for pos in range(n_tokens):  # the first token compiles the kernels: not counted
        if pos == 1:
            spent = {}
        python_step(K, w, s, 1, pos, nh, eps, call=timed, n_spans=numba.get_num_threads())
    per_token_us = {k: 1e6 * v / (n_tokens - 1) for k, v in spent.items()}
    nb = numba.get_num_threads()
    forward_step(w, s, 1, 0, nh, eps, nb)  # compile, or load from the cache, before timing
    t0 = time.perf_counter()
    for pos in range(n_tokens):
        forward_step(w, s, 1, pos, nh, eps, nb)
    step_us = 1e6 * (time.perf_counter() - t0) / n_tokens
    return dict(kernels_us=per_token_us, step_us=step_us, dispatch_us=1e6 * overhead, decode=[])


WORKERS = {"engine": _worker_engine, "torch": _worker_torch, "numpy": _worker_numpy,
           "bandwidth": _worker_bandwidth, "profile": _worker_profile}


def _worker_llama2c_files(args, opts) -> dict:
    """Write this shape's random weights as llama2.c files into opts.out; their paths. In a
    worker, so that the bench process never holds them (stories110M is 440 MB): a child
    process starts with its parent's peak RSS, and every later peak would include it."""
    names = opts.c_binaries.split(",")
    files = llama2c.write_model_files(opts.out, args, _random_state_dict(args), names)
    return {k: str(v) for k, v in files.items()}


def _run_worker(what: str, shape: str, threads: int, n_tokens: int, runs: int, *extra: str) -> dict:
    # every implementation gets the same OpenMP spin setting (see minillama/__init__.py)
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "minillama.bench.engine", "--worker", what, "--shapes", shape,
           "--threads", str(threads), "--tokens", str(n_tokens), "--runs", str(runs), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} worker failed ({shape}, {threads} threads):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worker_main(opts) -> int:
    import numba
    import torch

    from minillama.config import get_preset

    threads = int(opts.threads)
    numba.set_num_threads(threads)
    torch.set_num_threads(threads)
    args = get_preset(opts.shapes)
    if opts.worker == "llama2c-files":
        result = _worker_llama2c_files(args, opts)
    elif opts.worker == "engine" and opts.quant:
        result = _worker_engine(args, min(opts.tokens, args.max_seq_len), opts.runs, opts.quant)
    else:
        result = WORKERS[opts.worker](args, min(opts.tokens, args.max_seq_len), opts.runs)
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------
# Rows: one shape at one thread count, every backend
# ---------------------------------------------------------------------------------------


def _row(shape: str, threads: int, n_tokens: int, runs: int, baselines: list[str],
         c_binaries: dict, c_files: dict | None, quants: list[str] = ()) -> dict:
    from minillama.config import get_preset

    args = get_preset(shape)
    r = {w: _run_worker(w, shape, threads, n_tokens, runs) for w in ["bandwidth", "engine", *baselines]}
    for q in quants:
        r[f"engine {q}"] = _run_worker("engine", shape, threads, n_tokens, runs, "--quant", q)
    c = llama2c.run_all(c_binaries, c_files, n_tokens, threads, runs) if c_files else {}
    engines = ["engine", *(f"engine {q}" for q in quants)]
    measured = {**{w: r[w] for w in [*engines, *baselines]}, **c}
    read = r["bandwidth"]["read_gbs"] * 1e9
    # what each quantized engine reads per token, as stored (a kind whose rows are not a
    # whole number of blocks stays float32), against the float32 parameters read
    qbytes = {b: r[b]["bytes_per_token"] for b in engines[1:]}
    params = weight_bytes_per_token(args) / 4
    return dict(shape=shape, threads=threads, tokens=n_tokens,
                quant_ceiling={b: read / v for b, v in qbytes.items()},
                quant_bits={b: 8 * v / params for b, v in qbytes.items()},
                decode={w: m["decode"] for w, m in measured.items()},
                ceiling=r["bandwidth"]["read_gbs"] * 1e9 / weight_bytes_per_token(get_preset(shape)),
                read_gbs=r["bandwidth"]["read_gbs"], copy_gbs=r["bandwidth"]["copy_gbs"],
                prefill={w: r[w]["prefill"] for w in ["engine", "torch"] if w in r},
                outside=r["engine"]["outside_fraction"], first_call_s=r["engine"]["first_call_s"],
                peak_mb={w: m["peak_mb"] for w, m in measured.items()},
                parity={w: llama2c.parity(m["ids"], r["engine"]["greedy_ids"]) for w, m in c.items()})


def _shape_rows(shape: str, threads: list[int], opts, baselines: list[str], c_binaries: dict) -> list[dict]:
    """The rows of one shape; with llama2.c, its files live in a temporary directory meanwhile."""
    from minillama.config import get_preset

    # at most seq_len - 1 tokens, so that llama2.c, whose timer skips its first step, times as many
    n_tokens = min(opts.tokens, get_preset(shape).max_seq_len - 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="minillama-bench-") as tmp:
        files = None
        if c_binaries:
            paths = _run_worker("llama2c-files", shape, 1, n_tokens, 1, "--out", tmp,
                                "--c-binaries", ",".join(c_binaries))
            files = {k: Path(v) for k, v in paths.items() if k != "peak_mb"}
        for n in threads:
            rows.append(_row(shape, n, n_tokens, opts.runs, baselines, c_binaries, files,
                             _quants(opts)))
            print(f"  {shape} at {n} thread(s): " + ", ".join(
                f"{b} {report.spread(v)}" for b, v in rows[-1]["decode"].items()) + " tok/s", flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------


def _profile(shapes: list[str], threads: list[int], n_tokens: int, runs: int) -> int:
    print(f"us per decoded token, averaged over {n_tokens} positions; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    for shape in shapes:
        for n in threads:
            r = _run_worker("profile", shape, n, n_tokens, runs)
            total = sum(r["kernels_us"].values())
            print(f"{shape}, {n} thread(s): one jitted step {r['step_us']:.0f} us; kernels called "
                  f"one by one {total:.0f} us (+{r['dispatch_us']:.1f} us dispatch per call, removed)")
            for name, us in sorted(r["kernels_us"].items(), key=lambda kv: -kv[1]):
                print(f"  {name:16s} {us:8.1f} us  {100 * us / total:5.1f}%")
            print()
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama bench engine", description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, from {SHAPES}")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--tokens", type=int, default=256,
                   help="tokens decoded and prefilled, at most seq_len - 1 (default 256)")
    p.add_argument("--runs", type=int, default=5,
                   help="runs per measurement, min-median-max shown (default 5)")
    p.add_argument("--baselines", default="torch,numpy", help="comma-separated: torch, numpy")
    p.add_argument("--llama2c", metavar="DIR",
                   help="also run llama2.c's `run` and `runq` from DIR on the same weights, and "
                        "compare their greedy ids with the engine's; build them in a clone of "
                        "llama2.c's repository with `gcc -Ofast -march=native -fopenmp run.c -lm "
                        "-o run` (and the same for runq.c); see README")
    p.add_argument("--quant", metavar="FORMATS",
                   help="also the engine with every matrix quantized: comma-separated, from q8_0, "
                        "q4_0, nf4 (compared with fp32, runq and the format's own bandwidth "
                        "ceiling; a matrix whose rows are not whole blocks stays fp32)")
    p.add_argument("--json", metavar="FILE", help="write the machine, the settings and every row here")
    p.add_argument("--plot", metavar="FILE.png", help="plot decode tok/s against shape here")
    p.add_argument("--no-generate", action="store_true",
                   help="skip timing `minillama generate` (time to first token, peak RSS)")
    p.add_argument("--generate-only", action="store_true",
                   help="only time `minillama generate`, --runs times, after one warm-up run")
    p.add_argument("--quick", action="store_true", help="stories15M only, 64 tokens, 2 runs")
    p.add_argument("--profile", action="store_true",
                   help="instead: time per kernel class per decoded token, for each shape and thread count")
    p.add_argument("--worker", choices=sorted([*WORKERS, "llama2c-files"]), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)  # the llama2c-files worker: where to write
    p.add_argument("--c-binaries", help=argparse.SUPPRESS)  # ... and for which binaries
    return p


def _quants(opts) -> list[str]:
    return [q for q in (opts.quant or "").split(",") if q]


def _check(opts, shapes: list[str], baselines: list[str]) -> str | None:
    from minillama.kernels_quant import QUANT_MATRICES

    if bad := [q for q in _quants(opts) if q not in QUANT_MATRICES]:
        return f"unknown --quant format(s) {bad}; accepted: {', '.join(QUANT_MATRICES)}"
    bad = [s for s in shapes if s not in SHAPES] + [b for b in baselines if b not in ("torch", "numpy")]
    if bad or opts.tokens < 1 or opts.runs < 1:
        return (f"unknown shapes/baselines {bad} (shapes: {SHAPES}; baselines: torch, numpy), "
                "or --tokens/--runs below 1")
    if opts.no_generate and opts.generate_only:
        return "--no-generate and --generate-only contradict each other"
    return None


def _c_binaries(directory: str | None) -> dict:
    if not directory:
        return {}
    found, problems = llama2c.find_binaries(directory)
    for line in problems:
        print(line)
    return found


def main(argv: list[str] | None = None) -> int:
    opts = _parser().parse_args(argv)
    if opts.worker:
        return _worker_main(opts)
    if opts.quick:
        opts.shapes, opts.tokens, opts.runs = "stories15M", 64, 2
    shapes = [s for s in opts.shapes.split(",") if s]
    baselines = [b for b in opts.baselines.split(",") if b]
    if problem := _check(opts, shapes, baselines):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    threads = [int(t) for t in opts.threads.split(",")]
    info = machine_info()
    print(describe(info))
    if opts.profile:
        return _profile(shapes, threads, opts.tokens, opts.runs)
    print(f"threads benchmarked: {','.join(map(str, threads))}; load average before: "
          f"{' '.join(f'{x:.2f}' for x in info['load_average'])}", flush=True)
    rows = []
    if not opts.generate_only:
        c_binaries = _c_binaries(opts.llama2c)
        print(f"decode and prefill {opts.tokens} tokens (at most seq_len - 1), {opts.runs} runs each",
              flush=True)
        for shape in shapes:
            rows += _shape_rows(shape, threads, opts, baselines, c_binaries)
    gen = None if opts.no_generate else _generate(opts.runs)
    info["load_average_after"] = list(os.getloadavg())
    print(f"load average after: {' '.join(f'{x:.2f}' for x in info['load_average_after'])}\n")
    _report(rows, gen, info, opts)
    return 0


def _generate(runs: int) -> dict | None:
    try:
        return time_generate(runs)
    except RuntimeError as e:
        print(f"generate: not timed: {e}", flush=True)
        return None


def _report(rows: list[dict], gen: dict | None, info: dict, opts) -> None:
    if rows:
        report.print_decode_table(rows)
        print()
        report.print_quant_table(rows)
        report.print_detail_table(rows)
        for line in report.parity_lines(rows):
            print(line)
    if gen:
        print_generate(gen)
    if opts.json:
        settings = {k: getattr(opts, k) for k in ("shapes", "threads", "tokens", "runs", "baselines",
                                                  "llama2c", "quant")}
        report.write_json(opts.json, dict(machine=info, settings=settings, rows=rows, generate=gen))
        print(f"\nwrote {opts.json}")
    if opts.plot and rows:
        report.plot_decode(opts.plot, rows, f"minillama bench engine: {info['cpu_model']} "
                           f"({info['llvm_cpu']}, {info['isa']}), load {info['load_average'][0]:.2f}"
                           f"-{info['load_average_after'][0]:.2f}")
        print(f"wrote {opts.plot}")


if __name__ == "__main__":
    raise SystemExit(main())
