"""pytest plugin shared by the repo's conftest.py and `minillama grade`.

It gives every nbval run the same environment and sanitize file, so that a notebook
checked by `pytest`, by a learner, or by the grader is compared the same way.
"""

from __future__ import annotations

from pathlib import Path

from minillama.course.execute import apply_course_env

SANITIZE_FILE = Path(__file__).with_name("sanitize.cfg")


def pytest_configure(config) -> None:
    apply_course_env()
    # Only fill in the sanitize file when nbval is installed and none was given.
    if hasattr(config.option, "nbval_sanitize_with") and config.option.nbval_sanitize_with is None:
        config.option.nbval_sanitize_with = str(SANITIZE_FILE)
