"""What `minillama bench engine` prints and writes: its tables, a JSON file and a PNG plot.

A row is one shape at one thread count, a plain dict (so the JSON file is the rows as they
are): decode tok/s of every run per backend under "decode", the read-bandwidth ceiling,
prefill tok/s, peak RSS per backend, and, with llama2.c, the greedy-id comparison.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from minillama.quant import QUANT_FORMATS

QUANT_BACKENDS = tuple(f"engine {q}" for q in QUANT_FORMATS)  # the engine quantized (--quant)
BACKENDS = ("engine", *QUANT_BACKENDS, "torch", "numpy", "run", "runq")  # columns and plot series
C_BACKENDS = ("run", "runq")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs: list[float]) -> str:
    """'median (min-max)' of a list of tok/s, or '-' if empty."""
    if not xs:
        return "-"
    return f"{_median(xs):.0f} ({min(xs):.0f}-{max(xs):.0f})"


def backends(rows: list[dict]) -> list[str]:
    """The backends measured in any row, in BACKENDS order."""
    return [b for b in BACKENDS if any(r["decode"].get(b) for r in rows)]


def _print_lines(lines: list[list[str]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for i, line in enumerate(lines):
        print("  ".join(cell.rjust(wd) for cell, wd in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * wd for wd in widths))


def print_decode_table(rows: list[dict]) -> None:
    """Decode tok/s of every backend, the engine's ratio to each, and the bandwidth ceiling."""
    names = backends(rows)
    others = [b for b in names if b != "engine"]
    head = ["shape", "thr", "tokens"] + [f"{b} tok/s" for b in names] + [f"x {b}" for b in others]
    lines = [head + ["ceiling", "% ceil"]]
    for r in rows:
        e = _median(r["decode"]["engine"])
        lines.append([r["shape"], str(r["threads"]), str(r["tokens"])]
                     + [spread(r["decode"].get(b, [])) for b in names]
                     + [f"{e / _median(r['decode'][b]):.2f}" if r["decode"].get(b) else "-" for b in others]
                     + [f"{r['ceiling']:.0f}", f"{100 * e / r['ceiling']:.0f}%"])
    _print_lines(lines)
    print("\ntok/s: median (min-max) of the runs; x B: engine median / B median; "
          "ceiling: read bandwidth / weight bytes per token.")
    if any(r["decode"].get(b) for r in rows for b in C_BACKENDS):
        print("run, runq: llama2.c's run.c (fp32) and runq.c (int8 Q8_0), built by the user and run "
              "here on the same random weights; `achieved tok/s` over the same number of steps.")


def print_quant_table(rows: list[dict]) -> None:
    """The quantized engines against fp32, llama2.c's runq and their own bandwidth ceiling."""
    lines = [["shape", "thr", "format", "bits/weight", "tok/s", "x fp32", "x runq", "ceiling",
              "% ceil"]]
    for r in rows:
        for b in QUANT_BACKENDS:
            if not r["decode"].get(b):
                continue
            e, ceiling = _median(r["decode"][b]), r["quant_ceiling"][b]
            runq = r["decode"].get("runq")
            lines.append([r["shape"], str(r["threads"]), b.split()[-1], f"{r['quant_bits'][b]:.2f}",
                          spread(r["decode"][b]), f"{e / _median(r['decode']['engine']):.2f}",
                          f"{e / _median(runq):.2f}" if runq else "-", f"{ceiling:.0f}",
                          f"{100 * e / ceiling:.0f}%"])
    if len(lines) > 1:
        _print_lines(lines)
        print("\nbits/weight: bytes a decode step reads per parameter (scales included); ceiling: "
              "read bandwidth / those bytes per token.\n")


def print_detail_table(rows: list[dict]) -> None:
    """Bandwidth, prefill, time outside the jitted step, first call and peak RSS."""
    names = backends(rows)
    lines = [["shape", "thr", "read GB/s", "copy GB/s", "prefill tok/s", "pf/dec", "torch pf",
              "outside", "1st call s", f"peak MB ({'/'.join(names)})"]]
    for r in rows:
        e = _median(r["decode"]["engine"])
        lines.append([r["shape"], str(r["threads"]), f"{r['read_gbs']:.1f}", f"{r['copy_gbs']:.1f}",
                      spread(r["prefill"]["engine"]), f"{_median(r['prefill']['engine']) / e:.1f}",
                      spread(r["prefill"].get("torch", [])), f"{100 * r['outside']:.1f}%",
                      f"{r['first_call_s']:.2f}",
                      "/".join(f"{r['peak_mb'][b]:.0f}" if b in r["peak_mb"] else "-" for b in names)])
    _print_lines(lines)
    print("\npf/dec: engine prefill over engine decode (medians); outside: share of a decode token "
          "spent outside the jitted step;\n1st call: the engine's first step and prefill (compile or "
          "load from the Numba cache); peak MB: max RSS of each process, Python included.")


def parity_lines(rows: list[dict]) -> list[str]:
    """One line per row and C binary: do llama2.c's greedy ids match the engine's?"""
    lines = []
    for r in rows:
        for name, p in r.get("parity", {}).items():
            where = f"{r['shape']}, {r['threads']} thread(s), {name}"
            if p["first_difference"] is None:
                lines.append(f"C greedy ids match engine: yes ({where}: all {p['compared']} ids)")
            else:
                k = p["first_difference"]
                note = " (int8 weights: a difference is expected)" if name == "runq" else ""
                lines.append(f"C greedy ids match engine: no ({where}: first difference at position {k}"
                             f" of {p['compared']}: C {p['c_id']}, engine {p['engine_id']}){note}")
    return lines


def write_json(path: str | Path, payload: dict) -> None:
    """The machine, the settings and every row, as JSON (NaN written as null)."""
    def clean(x):
        if isinstance(x, float) and x != x:
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    Path(path).write_text(json.dumps(clean(payload), indent=1) + "\n")


def plot_decode(path: str | Path, rows: list[dict], title: str) -> None:
    """Decode tok/s (median, min-max bars) against shape, log y: one series per backend
    (colour) and thread count (marker, and a small offset so that they do not hide each
    other), and each thread count's read-bandwidth ceiling as a dashed bar over its points.
    matplotlib's object API on an Agg canvas: no pyplot, no global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    names = backends(rows)
    fig = Figure(figsize=(10, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, n in enumerate(threads):
        at = [r for r in rows if r["threads"] == n]
        x0 = [shapes.index(r["shape"]) + 0.35 * (i - (len(threads) - 1) / 2) for r in at]
        ax.hlines([r["ceiling"] for r in at], [x - 0.15 for x in x0], [x + 0.15 for x in x0],
                  colors="0.3", linestyles="--", label=f"read-bandwidth ceiling, {n} thr")
        for x, r in zip(x0, at):  # which thread count a ceiling belongs to, at its end
            ax.text(x + 0.16, r["ceiling"], f"{n} thr", fontsize=7, va="center", color="0.3")
        for j, b in enumerate(names):
            pts = [(x + 0.05 * (j - (len(names) - 1) / 2), r["decode"][b]) for x, r in zip(x0, at)
                   if r["decode"].get(b)]
            med = [_median(v) for _, v in pts]
            err = [[m - min(v) for m, (_, v) in zip(med, pts)], [max(v) - m for m, (_, v) in zip(med, pts)]]
            ax.errorbar([x for x, _ in pts], med, yerr=err, marker="os^Dv*"[i % 6], color=f"C{j}",
                        capsize=3, label=f"{b}, {n} thr")
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_xlim(-0.5, len(shapes) - 0.5)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("decode tok/s (median; bars: min-max)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: never over a point
    fig.savefig(path, dpi=120)
