"""Run a command and measure it from a small process: its time to first output, wall time
and peak memory.

    result = launch(["./run", "model.bin", "-n", "65"], skip_bytes=0)
    result["peak_mb"], result["first_output_s"], result["exit_s"], result["stdout"]

Why a launcher process: Linux carries a process's peak RSS (ru_maxrss) across exec, and a
child started from Python begins with its parent's peak. A 60 MB llama2.c run started from
a bench process that once held 150 MB would report 150 MB. So `launch` starts
`python -m minillama.bench.launch`, a fresh process of about 10 MB, which starts the
command, reads its stdout, reaps it with os.wait4 (the child's own rusage) and prints one
line of JSON. The timer starts in the launcher just before the command is spawned, so the
launcher's own start-up is not counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def measure(cmd: list[str], skip_bytes: int = 0) -> dict:
    """Run cmd here: {"returncode", "stdout", "stderr", "first_output_s" (first stdout byte
    after the first skip_bytes, None if none), "exit_s", "peak_mb"}."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, bufsize=0)
        out, first = bytearray(), None
        while chunk := os.read(proc.stdout.fileno(), 65536):
            out += chunk
            if first is None and len(out) > skip_bytes:
                first = time.perf_counter() - t0
        _, status, usage = os.wait4(proc.pid, 0)
        exit_s = time.perf_counter() - t0
        proc.stdout.close()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: tell Popen not to wait
        err.seek(0)
        stderr = err.read()
    return dict(returncode=proc.returncode, stdout=out.decode(errors="replace"),
                stderr=stderr.decode(errors="replace"), first_output_s=first, exit_s=exit_s,
                peak_mb=usage.ru_maxrss / 1024)  # KB on Linux


def launch(cmd: list[str], env: dict | None = None, skip_bytes: int = 0) -> dict:
    """`measure(cmd, skip_bytes)` in a fresh launcher process (see the module docstring)."""
    spec = json.dumps(dict(cmd=[str(c) for c in cmd], skip_bytes=skip_bytes))
    proc = subprocess.run([sys.executable, "-m", "minillama.bench.launch", spec], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the launcher failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(spec["cmd"], spec["skip_bytes"])))
