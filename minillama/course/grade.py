"""Grade learners' notebooks against the reference outputs of the matching solution.

The submission is never trusted: its exercise cells' source is copied into the solution
notebook (reference outputs, reference check cells), and that merged notebook runs under
nbval in a separate process group with a time limit.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

from minillama.course.notebooks import (
    NotebookError,
    exercise_id,
    exercises,
    lesson_name,
    meta,
    read_notebook,
    strip_solution,
    write_notebook,
)

ANSI_RE = re.compile(r"(?:\x1b|#x1B)\[[0-9;]*m")  # junit xml escapes ESC as #x1B
EXC_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failed|Interrupt|Exit)\b)(?::\s*(.*))?$")
VERBOSE_RE = re.compile(r"::Cell (\d+) (PASSED|FAILED|ERROR|SKIPPED)")


@dataclass
class Result:
    """One row of the grade table: one exercise of one submission."""

    student: str
    notebook: str
    lesson: str
    exercise: str
    points: int
    passed: bool
    reason: str


def find_solution(sub, solutions: Path, path: Path) -> Path:
    """The solution notebook a submission belongs to: by lesson metadata, then by cell ids."""
    known = sorted(solutions.glob("*.ipynb"))
    name = lesson_name(sub)
    for sol in known:
        if sol.stem == name:
            return sol
    ids = {c.get("id") for c in sub.cells} - {None}
    best, best_overlap = None, 0.0
    for sol in known:
        sol_ids = {c.get("id") for c in read_notebook(sol).cells}
        overlap = len(ids & sol_ids) / max(len(sol_ids), 1)
        if overlap > best_overlap:
            best, best_overlap = sol, overlap
    if best is None or best_overlap < 0.5:
        names = ", ".join(s.stem for s in known) or "none found"
        raise NotebookError(f"{path}: belongs to no lesson of this course (lessons: {names})")
    return best


def merge(sub, solution) -> tuple[object, dict[str, str]]:
    """The solution with the submission's exercise sources; also {exercise: problem} for lost ones."""
    merged = copy.deepcopy(solution)
    by_cell_id = {c.get("id"): c for c in sub.cells}
    by_ex_id = {exercise_id(c): c for c in sub.cells if exercise_id(c) is not None}
    problems = {}
    for cell in merged.cells:
        ex = exercise_id(cell)
        if ex is None:
            continue
        found = by_cell_id.get(cell.get("id"))
        if found is None or exercise_id(found) not in (None, ex):
            found = by_ex_id.get(ex)
        if found is None or found.cell_type != "code":
            problems[ex] = "exercise cell missing or renamed in the submission"
            cell.source = strip_solution(cell.source, ex, meta(cell).get("hint", ""))
        else:
            cell.source = found.source
    return merged, problems


def _first_reason(text: str) -> str:
    """The most useful single line of an nbval failure: the final exception line if any."""
    lines = [ANSI_RE.sub("", ln).rstrip() for ln in (text or "").splitlines()]
    timeout = re.search(r"Timeout of (\S+) seconds exceeded", text or "")
    if timeout:
        return f"timed out: the cell ran longer than {timeout.group(1)} s"
    for ln in reversed(lines):
        m = EXC_RE.match(ln.strip())
        if m:
            name = m.group(1).rsplit(".", 1)[-1]
            return f"{name}: {m.group(2)}" if m.group(2) else name
    for ln in lines:
        if "differ" in ln.lower() or "mismatch" in ln.lower():
            return "output differs from the reference"
    return next((ln.strip() for ln in lines if ln.strip()), "failed")


def _parse_junit(path: Path) -> dict[int, tuple[bool, str]]:
    """{code cell number: (passed, reason)} from pytest's junit xml."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        m = re.search(r"Cell (\d+)", case.get("name", ""))
        if not m:
            continue
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        skipped = case.find("skipped")
        if skipped is not None and "timed out" in (skipped.get("message") or ""):
            # nbval marks every cell after a timeout as expected to fail, and skips it
            out[int(m.group(1))] = (False, "not run: an earlier cell timed out")
        elif bad is None:
            out[int(m.group(1))] = (True, "")
        else:
            out[int(m.group(1))] = (False, _first_reason((bad.text or "") + "\n" + bad.get("message", "")))
    return out


def run_nbval(nb_path: Path, timeout: float) -> tuple[dict[int, tuple[bool, str]], str | None]:
    """Run nbval on nb_path in its own process group; ({cell: (ok, reason)}, fatal problem)."""
    work = nb_path.parent
    ini = work / "pytest.ini"
    ini.write_text("[pytest]\n")
    xml = work / "report.xml"
    cmd = [
        sys.executable, "-m", "pytest", str(nb_path), "-c", str(ini), "--rootdir", str(work),
        "-p", "minillama.course.pytest_plugin", "-p", "no:cacheprovider", "--color=no",
        "--nbval", "--nbval-current-env", "--nbval-cell-timeout", str(int(timeout)),
        "-v", "--junitxml", str(xml),
    ]
    log = work / "pytest.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        fatal = None
        try:
            proc.wait(timeout=timeout + 30)  # + kernel start-up and teardown
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernel is in the same group
            proc.wait()
            fatal = f"timed out: the notebook did not finish within {timeout:g} s"
    if xml.exists():
        return _parse_junit(xml), fatal
    cells = {int(n): (s == "PASSED", "" if s == "PASSED" else "failed")
             for n, s in VERBOSE_RE.findall(log.read_text(errors="replace"))}
    if fatal is None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        fatal = f"the grader's test run crashed: {tail[0]}"
    return cells, fatal


def grade_notebook(path: Path, solutions: Path, timeout: float, student: str) -> list[Result]:
    """Grade one submission; one Result per exercise (or one failure row for a bad file)."""
    try:
        sub = read_notebook(path)
        sol_path = find_solution(sub, solutions, path)
        solution = read_notebook(sol_path)
    except NotebookError as e:
        return [Result(student, path.name, "?", "(notebook)", 0, False, str(e))]
    merged, problems = merge(sub, solution)
    code_num = {}  # cell id -> nbval's code cell number
    for cell in merged.cells:
        if cell.cell_type == "code":
            code_num[cell.get("id")] = len(code_num)
    with tempfile.TemporaryDirectory(prefix="minillama-grade-") as tmp:
        nb_path = Path(tmp) / f"{sol_path.stem}.ipynb"
        write_notebook(merged, nb_path)
        cells, fatal = run_nbval(nb_path, timeout)
    rows, graded = [], set()  # graded: the exercise and check cells' ids
    for ex in exercises(solution):
        row = Result(student, path.name, sol_path.stem, ex["id"], ex["points"], True, "")
        graded.update([ex["cell_id"], *ex["checks"]])
        for cid in [ex["cell_id"], *ex["checks"]]:
            ok, reason = cells.get(code_num[cid], (False, fatal or "not run"))
            if not ok:
                row.passed, row.reason = False, reason
                break
        if ex["id"] in problems:
            row.passed, row.reason = False, problems[ex["id"]]
        rows.append(row)
    others = [n for cid, n in code_num.items()
              if n in cells and not cells[n][0] and cid not in graded]
    if others or (fatal and not rows):
        reason = cells[others[0]][1] if others else fatal
        rows.append(Result(student, path.name, sol_path.stem, "(other cells)", 0, False,
                           f"{len(others)} non-exercise cell(s) failed, first: {reason}"))
    return rows


def collect(paths: list[Path]) -> list[tuple[str, Path]]:
    """(student, notebook) pairs: a folder's notebooks are named by their first sub-folder or stem."""
    out = []
    for p in paths:
        if p.is_dir():
            for nb in sorted(p.rglob("*.ipynb")):
                if ".ipynb_checkpoints" in nb.parts:
                    continue
                rel = nb.relative_to(p)
                out.append((rel.parts[0] if len(rel.parts) > 1 else nb.stem, nb))
        else:
            out.append((p.stem, p))
    return out


def write_csv(rows: list[Result], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(Result.__dataclass_fields__))
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def print_table(rows: list[Result], file=sys.stdout) -> None:
    by_nb: dict[str, list[Result]] = {}
    for r in rows:
        by_nb.setdefault(f"{r.student} / {r.notebook}", []).append(r)
    for title, group in by_nb.items():
        got = sum(r.points for r in group if r.passed)
        total = sum(r.points for r in group)
        print(f"== {title} ({group[0].lesson}): {got}/{total} points", file=file)
        width = max(len(r.exercise) for r in group)
        for r in group:
            status = "passed" if r.passed else "FAILED"
            reason = f"  {r.reason[:160]}" if r.reason else ""
            print(f"  {r.exercise:<{width}}  {status}{reason}", file=file)


def grade(paths: list[Path], solutions: Path, timeout: float, csv_path: Path | None) -> int:
    """Grade every notebook under paths; print the table, write the CSV; exit code 1 on any failure."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"error: no such file or folder: {missing[0]}", file=sys.stderr)
        return 2
    subs = collect(paths)
    if not subs:
        print("error: no .ipynb notebooks found in " + ", ".join(map(str, paths)), file=sys.stderr)
        return 2
    rows: list[Result] = []
    for student, nb in subs:
        t0 = time.perf_counter()
        these = grade_notebook(nb, solutions, timeout, student)
        print_table(these)
        print(f"  ({time.perf_counter() - t0:.0f} s)")
        rows += these
    if csv_path is not None:
        write_csv(rows, csv_path)
        print(f"wrote {len(rows)} rows to {csv_path}")
    return 0 if all(r.passed for r in rows) else 1
