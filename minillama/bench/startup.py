"""Time to first token and peak RSS of `minillama generate`, the way a learner starts it.

Each run is a fresh process (`python -m minillama generate`, the shipped model, one new token,
greedy), started by `minillama.bench.launch`, which times it from spawn to the first byte
after the echoed prompt and to exit, and reads the child's own peak RSS from os.wait4. One
untimed run first warms the Numba cache, so the figure is a warm start, not a compile.
"""

from __future__ import annotations

import statistics
import sys

from minillama.bench.launch import launch

GENERATE_PROMPT = "Once"


def time_generate(runs: int) -> dict:
    """`python -m minillama generate PROMPT --max-new-tokens 1 --temperature 0` with the
    shipped model, after one untimed run that warms the Numba cache: seconds from process
    start to the first byte after the echoed prompt, to exit, and peak RSS, per run."""
    cmd = [sys.executable, "-m", "minillama", "generate", GENERATE_PROMPT, "--max-new-tokens", "1",
           "--temperature", "0"]
    skip = len(GENERATE_PROMPT.encode())  # the CLI echoes the prompt, then streams the tokens
    results = [launch(cmd, skip_bytes=skip) for _ in range(runs + 1)]
    failed = [r for r in results if r["returncode"] != 0 or r["first_output_s"] is None]
    if failed:
        raise RuntimeError(f"minillama generate failed: {failed[0]['stderr'].strip()[-300:]}")
    timed = results[1:]
    return dict(cmd=cmd[1:], first_token_s=[r["first_output_s"] for r in timed],
                exit_s=[r["exit_s"] for r in timed], peak_mb=[r["peak_mb"] for r in timed],
                text=timed[0]["stdout"].strip())


def print_generate(g: dict) -> None:
    """Print what time_generate measured: medians and ranges, the peak RSS, the text."""
    def s(xs):
        return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"

    print(f"\n`python {' '.join(g['cmd'])}` (shipped model, warm Numba cache), median (min-max) of "
          f"{len(g['exit_s'])} runs:\n  first token {s(g['first_token_s'])}, exit {s(g['exit_s'])}, "
          f"peak RSS {max(g['peak_mb']):.0f} MB; printed {g['text']!r}")
