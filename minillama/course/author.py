"""Small helpers for writing a solution notebook from a script, with stable cell ids.

Cell ids matter: grading matches a learner's cells to the solution by id, so ids must
not change when a notebook is regenerated. Exercise and check cells are named after
their exercise; other cells are numbered in order.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from minillama.course.notebooks import write_notebook


class LessonWriter:
    """Collects cells for one lesson; `save()` writes solutions/<lesson>.ipynb without outputs."""

    def __init__(self, lesson: str, title: str):
        self.lesson = lesson
        self.cells: list = []
        self.md(f"# {title}")

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{len(self.cells):02d}"

    def md(self, text: str) -> None:
        self.cells.append(new_markdown_cell(textwrap.dedent(text).strip(), id=self._id("md")))

    def code(self, src: str) -> None:
        self.cells.append(new_code_cell(textwrap.dedent(src).strip(), id=self._id("code")))

    def exercise(self, ex_id: str, src: str, hint: str, points: int = 1) -> None:
        """An exercise cell; src contains ### BEGIN SOLUTION / ### END SOLUTION markers."""
        cell = new_code_cell(textwrap.dedent(src).strip(), id=f"ex-{ex_id}")
        cell.metadata["minillama"] = {"exercise": ex_id, "points": points, "hint": hint}
        self.cells.append(cell)

    def check(self, ex_id: str, src: str) -> None:
        """The check cell for exercise ex_id; it raises CheckFailed on a wrong answer."""
        cell = new_code_cell(textwrap.dedent(src).strip(), id=f"check-{ex_id}")
        cell.metadata["minillama"] = {"check": ex_id}
        self.cells.append(cell)

    def save(self, root: str | Path = ".") -> Path:
        nb = new_notebook(cells=self.cells)
        nb.metadata["minillama"] = {"lesson": self.lesson}
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.validate(nb)
        path = Path(root) / "solutions" / f"{self.lesson}.ipynb"
        path.parent.mkdir(exist_ok=True)
        write_notebook(nb, path)
        return path
