"""minillama.course.grade: the strict path an instructor uses.

Every blank lesson must fail each of its exercises, and the solutions must pass. The
solutions' own nbval run (pytest over solutions/) proves each one reproduces its
reference outputs; grading a solution merges it into itself (checked here for every
lesson), and lesson 00 is graded end to end.
"""

import copy
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minillama.course.grade import grade, grade_notebook, merge
from minillama.course.notebooks import exercises, read_notebook, write_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
SETUP = SOLUTIONS / "00_setup.ipynb"


def _with_sources(path: Path, sources: dict[str, str], out: Path) -> Path:
    """A copy of the notebook at path with some cells' source replaced (by cell id)."""
    nb = read_notebook(path)
    for cell in nb.cells:
        if cell.get("id") in sources:
            cell.source = sources[cell.get("id")]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_notebook(nb, out)
    return out


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_blank_lesson_fails_every_exercise(lesson):
    rows = grade_notebook(lesson, SOLUTIONS, timeout=300, student="blank")
    graded = [r for r in rows if not r.exercise.startswith("(")]
    assert [r.exercise for r in graded] == [e["id"] for e in exercises(read_notebook(lesson))]
    for r in graded:
        assert not r.passed, f"{lesson.name}: exercise {r.exercise} passes while blank"
        assert r.reason, f"{lesson.name}: exercise {r.exercise} fails without a reason"


@pytest.mark.parametrize("solution", sorted(SOLUTIONS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_grading_a_solution_runs_the_solution_itself(solution):
    sol = read_notebook(solution)
    merged, problems = merge(copy.deepcopy(sol), sol)
    assert problems == {}
    assert json.dumps(merged, sort_keys=True) == json.dumps(sol, sort_keys=True)


def test_solution_of_lesson_00_passes_end_to_end():
    rows = grade_notebook(SETUP, SOLUTIONS, timeout=120, student="ref")
    assert rows and all(r.passed for r in rows), [(r.exercise, r.reason) for r in rows]


def test_folder_of_submissions_gives_a_csv(tmp_path):
    subs = tmp_path / "subs"
    # alice: the reference answers
    _with_sources(SETUP, {}, subs / "alice" / "00_setup.ipynb")
    # carol: a naive softmax (overflows), saved outputs that look right, and a weakened check
    _with_sources(SETUP, {
        "ex-softmax": "def softmax(x):\n    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)",
        "check-softmax": "print('softmax: ok')",
    }, subs / "carol" / "00_setup.ipynb")
    # dave: deleted the softmax_rows exercise cell
    nb = read_notebook(SETUP)
    nb.cells = [c for c in nb.cells if c.get("id") != "ex-softmax_rows"]
    (subs / "dave").mkdir()
    write_notebook(nb, subs / "dave" / "00_setup.ipynb")
    # erin: not JSON at all; frank: a notebook from some other course
    (subs / "erin.ipynb").write_text("{ this is not a notebook")
    foreign = copy.deepcopy(nb)
    foreign.metadata = {}
    for i, c in enumerate(foreign.cells):
        c["id"] = f"other-{i}"
    write_notebook(foreign, subs / "frank.ipynb")

    out = tmp_path / "grades.csv"
    assert grade([subs], SOLUTIONS, timeout=120, csv_path=out) == 1
    rows = list(csv.DictReader(out.open()))
    table = {(r["student"], r["exercise"]): r for r in rows}
    assert set(rows[0]) == {"student", "notebook", "lesson", "exercise", "points", "passed", "reason"}
    assert table["alice", "softmax"]["passed"] == "True"
    assert table["alice", "softmax_rows"]["passed"] == "True"
    assert table["carol", "softmax"]["passed"] == "False"
    assert "non-finite value" in table["carol", "softmax"]["reason"]
    assert table["carol", "softmax_rows"]["passed"] == "True"
    assert table["dave", "softmax"]["passed"] == "True"
    assert table["dave", "softmax_rows"]["reason"] == "exercise cell missing or renamed in the submission"
    assert "not valid notebook JSON" in table["erin", "(notebook)"]["reason"]
    assert "belongs to no lesson" in table["frank", "(notebook)"]["reason"]
    assert {r["student"] for r in rows} == {"alice", "carol", "dave", "erin", "frank"}


def test_submission_that_sleeps_forever_is_stopped(tmp_path):
    sub = _with_sources(SETUP, {"ex-softmax": "import time\ntime.sleep(10**6)"}, tmp_path / "s.ipynb")
    t0 = time.perf_counter()
    rows = grade_notebook(sub, SOLUTIONS, timeout=5, student="sleepy")
    elapsed = time.perf_counter() - t0
    by_ex = {r.exercise: r for r in rows}
    assert by_ex["softmax"].reason == "timed out: the cell ran longer than 5 s"
    # the kernel was interrupted, not killed: the independent exercise after it still counts
    assert by_ex["softmax_rows"].passed
    assert elapsed < 60


def test_cli_one_line_errors(tmp_path):
    txt = tmp_path / "essay.txt"
    txt.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "minillama", "grade", str(txt)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert "not a notebook (expected a .ipynb file)" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "minillama", "grade", str(tmp_path / "nope.ipynb")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no such file")
