"""The project's own promises: packaging, environment.yml, README and CI agree."""

import re
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge package name -> PyPI name


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda, pip = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep["pip"]
        else:
            conda.add(CONDA_NAMES.get(_name(dep), _name(dep)))
    assert "-e ." in pip, "environment.yml must install the course itself with pip"
    assert conda - {"python", "pip"} == wanted


def test_ci_runs_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert blocks[0].count("\n") == 1, "the quick start's setup is one command"
    test_cmd = blocks[1].strip()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in [line.strip() for line in ci]
    assert "pip install -q torch==2.13.0" in ci
    assert "HF_HUB_OFFLINE=1" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_every_lesson_that_exists():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "lessons").glob("*.ipynb")):
        assert f"](lessons/{nb.name})" in readme, f"README's lesson table lacks {nb.name}"


def test_pytest_never_collects_blank_lessons():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "lessons" not in cfg["testpaths"] and "solutions" in cfg["testpaths"]
