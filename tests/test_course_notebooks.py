"""minillama.course.notebooks and .build: solutions -> lessons, and the sync check."""

import json
import shutil
from pathlib import Path

import pytest

from minillama.course import build
from minillama.course.notebooks import (
    BEGIN,
    END,
    NotebookError,
    exercises,
    make_lesson,
    read_notebook,
    strip_solution,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_strip_solution_keeps_indentation_and_code_around_markers():
    src = f"def f(x):\n    y = 1\n    {BEGIN}\n    return x + y\n    {END}\nprint(f(1))"
    out = strip_solution(src, "f", "add y")
    assert out == "def f(x):\n    y = 1\n    raise NotImplementedError('Exercise f: add y')\nprint(f(1))"


def test_strip_solution_several_regions():
    src = f"{BEGIN}\na = 1\n{END}\nb = 2\n{BEGIN}\nc = 3\n{END}"
    out = strip_solution(src, "e", "h")
    assert out.count("raise NotImplementedError") == 2 and "b = 2" in out and "a = 1" not in out


@pytest.mark.parametrize("src, why", [
    (f"{BEGIN}\nx = 1", "without"),
    (f"x = 1\n{END}", "without"),
    (f"{BEGIN}\n{BEGIN}\n{END}", "nested"),
])
def test_strip_solution_rejects_unbalanced_markers(src, why):
    with pytest.raises(NotebookError, match=why):
        strip_solution(src, "e", "h")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_lesson_has_no_solutions_and_keeps_outputs(path):
    sol = read_notebook(path)
    lesson = read_notebook(ROOT / "lessons" / path.name)
    assert [c.get("id") for c in lesson.cells] == [c.get("id") for c in sol.cells]
    text = json.dumps([c.source for c in lesson.cells])
    assert BEGIN not in text and END not in text
    assert len(exercises(sol)) >= 1
    for ex in exercises(sol):
        cell = lesson.cells[ex["index"]]
        assert f"Exercise {ex['id']}: {ex['hint']}"[:40] in cell.source
        # reference outputs survive in every cell, exercise cells included
        assert cell.get("outputs") == sol.cells[ex["index"]].get("outputs")
    stored = [c for c in sol.cells if c.cell_type == "code" and c.execution_count is not None]
    assert stored, f"{path.name} has no stored outputs: nbval would compare nothing"


def test_repo_lessons_are_in_sync():
    assert build.check(ROOT) == []


def _copy_course(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "solutions", tmp_path / "solutions")
    shutil.copytree(ROOT / "lessons", tmp_path / "lessons")
    return tmp_path


def test_build_is_idempotent_and_check_finds_drift(tmp_path):
    root = _copy_course(tmp_path)
    assert build.build(root) == []          # the repo's lessons are already built
    lesson = root / "lessons" / "00_setup.ipynb"
    lesson.write_text(lesson.read_text().replace("softmax", "softmix", 1))
    (root / "lessons" / "99_orphan.ipynb").write_text("{}")
    problems = build.check(root)
    assert any("00_setup.ipynb: lessons/ copy is out of date" in p for p in problems)
    assert any("99_orphan.ipynb: in lessons/ but has no solution" in p for p in problems)
    assert build.build(root) == [lesson]
    assert build.build(root) == []
    (root / "lessons" / "99_orphan.ipynb").unlink()
    assert build.check(root) == []


def test_build_rejects_a_solution_that_breaks_the_conventions(tmp_path):
    root = _copy_course(tmp_path)
    path = root / "solutions" / "00_setup.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("minillama", {}).get("check") == "softmax":
            del cell["metadata"]["minillama"]
    path.write_text(json.dumps(nb))
    with pytest.raises(NotebookError, match="exercise 'softmax' has no check cell"):
        build.build(root)


@pytest.mark.parametrize("content, msg", [
    ("{not json", "not valid notebook JSON"),
    ('{"a": 1}', "not a Jupyter notebook"),
    ('{"cells": [], "nbformat": 3}', "nbformat 3 is not supported"),
    (b"\xff\xfe\x00", "cannot read it as UTF-8"),
])
def test_read_notebook_one_line_errors(tmp_path, content, msg):
    p = tmp_path / "x.ipynb"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(NotebookError, match=msg) as e:
        read_notebook(p)
    assert "\n" not in str(e.value)


def test_make_lesson_leaves_solution_untouched():
    sol = read_notebook(SOLUTIONS[0])
    before = json.dumps(sol, sort_keys=True)
    make_lesson(sol)
    assert json.dumps(sol, sort_keys=True) == before
