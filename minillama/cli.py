"""The `minillama` command: course machinery, grading, and (as lessons land) train/generate/bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _course(args: argparse.Namespace) -> int:
    from minillama.course.build import build, check, course_root
    from minillama.course.notebooks import NotebookError

    try:
        if args.action == "run":
            from minillama.course.execute import run_notebook

            for nb in args.notebooks:
                print(f"{nb}: ran in {run_notebook(nb, timeout=args.timeout):.1f} s, outputs stored")
            return 0
        root = course_root(args.root)
        if args.action == "build":
            written = build(root)
            for p in written:
                print(f"wrote {p.relative_to(root)}")
            print(f"{len(written)} lesson(s) written; the rest were up to date")
            return 0
        problems = check(root)
        for p in problems:
            print(p)
        print("lessons/ is in sync with solutions/" if not problems
              else "run `minillama course build` to regenerate lessons/")
        return 1 if problems else 0
    except (NotebookError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _grade(args: argparse.Namespace) -> int:
    from minillama.course.build import course_root
    from minillama.course.grade import grade

    try:
        solutions = Path(args.solutions) if args.solutions else course_root() / "solutions"
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not solutions.is_dir():
        print(f"error: solutions folder not found: {solutions}", file=sys.stderr)
        return 2
    csv_path = Path(args.csv) if args.csv else None
    return grade([Path(p) for p in args.paths], solutions, args.timeout, csv_path)


def _bench(args: argparse.Namespace) -> int:
    import importlib

    module = importlib.import_module(f"minillama.bench.{args.what}")
    return module.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("course", help="build lessons/ from solutions/, check them, run notebooks")
    c.add_argument("action", choices=["build", "check", "run"],
                   help="build: regenerate lessons/; check: fail if lessons/ is stale; "
                        "run: execute notebooks in place and store their outputs")
    c.add_argument("notebooks", nargs="*", help="notebooks for `run`")
    c.add_argument("--root", help="repo root holding solutions/ (default: found from the cwd)")
    c.add_argument("--timeout", type=int, default=600, help="per-cell time limit for `run` (s)")
    c.set_defaults(func=_course)

    g = sub.add_parser("grade", help="grade submitted notebooks against the reference solutions")
    g.add_argument("paths", nargs="+", help="submitted .ipynb files or folders of them")
    g.add_argument("--csv", help="write one row per student and exercise to this CSV file")
    g.add_argument("--timeout", type=float, default=300,
                   help="time limit in seconds for each notebook (default 300)")
    g.add_argument("--solutions", help="folder of solution notebooks (default: the repo's)")
    g.set_defaults(func=_grade)

    b = sub.add_parser("bench", help="benchmarks that print tables (tokenizer, ...)")
    b.add_argument("what", choices=["tokenizer"], help="which benchmark")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options for the benchmark")
    b.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "course" and args.action == "run" and not args.notebooks:
        print("error: `minillama course run` needs at least one notebook", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
