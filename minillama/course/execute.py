"""Run a notebook top to bottom and store its outputs (for authors making reference outputs)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from minillama.course.notebooks import read_notebook, write_notebook

# The environment every checked notebook runs in: the same when outputs are stored
# (`minillama course run`), checked (pytest --nbval) and graded (`minillama grade`).
COURSE_ENV = {
    "TQDM_DISABLE": "1",        # progress bars go to stderr, which nbval compares
    "HF_HUB_OFFLINE": "1",      # never wait on the network
    "PYTHONHASHSEED": "0",      # stable set/dict-of-str iteration order in printed outputs
    "TOKENIZERS_PARALLELISM": "false",
}


def apply_course_env(environ=os.environ) -> None:
    """Set COURSE_ENV in environ, keeping values the user already chose."""
    for k, v in COURSE_ENV.items():
        environ.setdefault(k, v)


def run_notebook(path: str | Path, timeout: int = 600) -> float:
    """Execute the notebook at path in its own folder, store outputs in place; return seconds."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = read_notebook(path)
    apply_course_env()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
    write_notebook(nb, path)
    return seconds
