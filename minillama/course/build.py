"""Build lessons/ from solutions/ and check that the two agree."""

from __future__ import annotations

from pathlib import Path

from minillama.course.notebooks import dumps, make_lesson, read_notebook, validate_solution


def course_root(start: str | Path | None = None) -> Path:
    """The repo root holding solutions/: from `start` (or the cwd) upwards, then the package's."""
    candidates = []
    if start is not None:
        candidates.append(Path(start).resolve())
    else:
        here = Path.cwd().resolve()
        candidates += [here, *here.parents]
        candidates.append(Path(__file__).resolve().parents[2])
    for c in candidates:
        if (c / "solutions").is_dir():
            return c
    raise FileNotFoundError(
        "cannot find the course's solutions/ folder: run from the repo or pass --root"
    )


def _expected(root: Path) -> dict[Path, str]:
    """Map each lessons/ path to the text it should have."""
    out = {}
    for sol in sorted((root / "solutions").glob("*.ipynb")):
        nb = read_notebook(sol)
        validate_solution(nb, sol)
        out[root / "lessons" / sol.name] = dumps(make_lesson(nb))
    return out


def build(root: Path) -> list[Path]:
    """Write every lesson whose text changed; return the paths written."""
    (root / "lessons").mkdir(exist_ok=True)
    written = []
    for path, text in _expected(root).items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def check(root: Path) -> list[str]:
    """Problems that make lessons/ differ from what build() would write (empty when in sync)."""
    expected = _expected(root)
    problems = []
    for path, text in expected.items():
        if not path.exists():
            problems.append(f"{path.name}: missing from lessons/")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.name}: lessons/ copy is out of date with solutions/")
    for path in sorted((root / "lessons").glob("*.ipynb")):
        if path not in expected:
            problems.append(f"{path.name}: in lessons/ but has no solution")
    return problems
