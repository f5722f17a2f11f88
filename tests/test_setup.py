"""The set-up promised by the README: two commands, ranges not pins, conda and pip agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# conda names that differ from the PyPI names
CONDA_NAME = {"torch": "pytorch"}
_REQ = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$")


def _split(requirement: str) -> tuple[str, str]:
    name, spec = _REQ.match(requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _environment_dependencies() -> dict[str, str]:
    """name -> version spec of the conda dependencies in environment.yml (a flat list)."""
    deps, in_deps = {}, False
    for line in (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines():
        if line.startswith("dependencies:"):
            in_deps = True
        elif in_deps and re.match(r"^  - [^\s]", line) and not line.strip().endswith(":"):
            name, spec = _split(line.strip()[2:])
            deps[name] = spec
    return deps


def test_pyproject_dependencies_are_ranges_not_pins():
    project = _pyproject()
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for requirement in requirements:
        _, spec = _split(requirement)
        assert spec.startswith(">="), f"{requirement}: use a lower bound (a range), not a pin or nothing"
        assert "==" not in spec


def test_environment_yml_agrees_with_pyproject():
    project = _pyproject()
    env = _environment_dependencies()
    assert env.get("python") == "=3.11"
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for requirement in requirements:
        name, spec = _split(requirement)
        conda = CONDA_NAME.get(name, name)
        assert conda in env, f"environment.yml lacks {conda} (pyproject: {requirement})"
        assert env[conda] == spec, f"{conda}: environment.yml says {env[conda]!r}, pyproject {spec!r}"
    assert "cpuonly" in env, "the conda route must install the CPU build of pytorch"


def test_make_installs_the_local_cpu_torch_before_anything_else():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "TORCH ?= torch==2.13.0" in makefile
    torch_line = makefile.index('pip install "$(TORCH)"')
    package_line = makefile.index('pip install -e ".[lab,test]"')
    assert torch_line < package_line, "torch must be installed first, or pip may pull CUDA torch"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith("set ") and not line.startswith("cd ")]
    assert ci == ["make test"]
    assert "make test" in readme and "make lab" in readme


def test_notebooks_exist_for_every_listed_chapter_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for notebook in sorted((ROOT / "solutions").glob("*.ipynb")):
        assert notebook.name in readme, f"README's chapter list lacks {notebook.name}"
