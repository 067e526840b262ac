"""Reading lesson notebooks and turning solutions into blank lessons."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
LESSON_RE = re.compile(r"^\d\d_[a-z0-9_]+$")


class NotebookError(ValueError):
    """A file is not a readable notebook, or not a lesson of this course."""


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a .ipynb file as nbformat v4, with a one-line error for anything that is not one."""
    path = Path(path)
    if path.suffix != ".ipynb":
        raise NotebookError(f"{path}: not a notebook (expected a .ipynb file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise NotebookError(f"{path}: cannot read it as UTF-8 text ({e})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"{path}: not valid notebook JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        raise NotebookError(f"{path}: JSON but not a Jupyter notebook (no 'cells'/'nbformat')")
    if raw.get("nbformat") != 4:
        raise NotebookError(f"{path}: nbformat {raw.get('nbformat')} is not supported (expected 4)")
    try:
        return nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat raises a zoo of exception types
        raise NotebookError(f"{path}: malformed notebook ({str(e).splitlines()[0]})") from None


def write_notebook(nb: nbformat.NotebookNode, path: str | Path) -> None:
    """Write nb deterministically (sorted keys, one-space indent, trailing newline)."""
    Path(path).write_text(dumps(nb), encoding="utf-8")


def dumps(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + "\n"


def meta(cell) -> dict:
    """The cell's `minillama` metadata (empty dict if none)."""
    m = cell.get("metadata", {}).get("minillama", {})
    return m if isinstance(m, dict) else {}


def exercise_id(cell) -> str | None:
    return meta(cell).get("exercise")


def check_id(cell) -> str | None:
    return meta(cell).get("check")


def lesson_name(nb) -> str | None:
    m = nb.get("metadata", {}).get("minillama", {})
    return m.get("lesson") if isinstance(m, dict) else None


def exercises(nb) -> list[dict]:
    """[{id, points, hint, cell_id, index, checks: [cell_id, ...]}] in notebook order."""
    out: list[dict] = []
    by_id: dict[str, dict] = {}
    for i, cell in enumerate(nb.cells):
        if (ex := exercise_id(cell)) is not None:
            m = meta(cell)
            item = {"id": ex, "points": m.get("points", 1), "hint": m.get("hint", ""),
                    "cell_id": cell.get("id"), "index": i, "checks": []}
            out.append(item)
            by_id[ex] = item
        elif (ch := check_id(cell)) is not None and ch in by_id:
            by_id[ch]["checks"].append(cell.get("id"))
    return out


def validate_solution(nb, path: str | Path) -> None:
    """Raise NotebookError unless nb follows CONTRIBUTING.md's lesson conventions."""
    name = Path(path).stem
    if not LESSON_RE.match(name):
        raise NotebookError(f"{path}: lesson files are named NN_name.ipynb (lowercase)")
    if lesson_name(nb) != name:
        raise NotebookError(f"{path}: notebook metadata minillama.lesson must be {name!r}")
    seen: set[str] = set()
    ids = [c.get("id") for c in nb.cells]
    if None in ids or len(set(ids)) != len(ids):
        raise NotebookError(f"{path}: every cell needs a unique id (nbformat 4.5)")
    for ex in exercises(nb):
        cell = nb.cells[ex["index"]]
        where = f"{path}: exercise {ex['id']!r}"
        if ex["id"] in seen:
            raise NotebookError(f"{where} appears twice")
        seen.add(ex["id"])
        if cell.cell_type != "code" or BEGIN not in cell.source:
            raise NotebookError(f"{where} is not a code cell with {BEGIN} markers")
        if not ex["hint"]:
            raise NotebookError(f"{where} has no hint in its metadata")
        if not ex["checks"]:
            raise NotebookError(f"{where} has no check cell (metadata minillama.check)")
        strip_solution(cell.source, ex["id"], ex["hint"])  # raises on unbalanced markers


def strip_solution(source: str, ex_id: str, hint: str) -> str:
    """Replace each BEGIN..END SOLUTION region with a NotImplementedError stub."""
    out: list[str] = []
    inside = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside:
                raise NotebookError(f"exercise {ex_id!r}: nested {BEGIN}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            msg = f"Exercise {ex_id}: {hint}" if hint else f"Exercise {ex_id}"
            out.append(f"{indent}raise NotImplementedError({msg!r})")
        elif stripped.startswith(END):
            if not inside:
                raise NotebookError(f"exercise {ex_id!r}: {END} without {BEGIN}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise NotebookError(f"exercise {ex_id!r}: {BEGIN} without {END}")
    return "\n".join(out)


def make_lesson(solution) -> nbformat.NotebookNode:
    """The blank lesson for a solution notebook: stubs instead of solutions, outputs kept."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if (ex := exercise_id(cell)) is not None:
            cell.source = strip_solution(cell.source, ex, meta(cell).get("hint", ""))
    return nb
