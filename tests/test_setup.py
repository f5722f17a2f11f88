"""The set-up promised by the README: two commands, ranges not pins, conda and pip agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from handbook.course import torch_build

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


def test_make_installs_torch_through_the_build_chooser_before_anything_else():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "TORCH ?=\n" in makefile and "TORCH_BUILD ?= auto" in makefile
    torch_line = makefile.index('handbook/course/torch_build.py --torch "$(TORCH)" --build "$(TORCH_BUILD)"')
    package_line = makefile.index('pip install -e ".[lab,test]"')
    report_line = makefile.index("handbook/course/torch_build.py --report")
    assert torch_line < package_line < report_line, "torch must be installed first, or pip may pull CUDA torch"


def _never_reached():
    raise AssertionError("the index must not be probed here")


def test_linux_without_an_nvidia_gpu_asks_the_cpu_index_first():
    attempts = torch_build.plan(system="Linux", gpu=False, reachable=lambda: (True, "HTTP 200"))
    assert [a.build for a in attempts] == ["cpu", "default"]
    assert attempts[0].pip_args == (f"torch=={torch_build.VERSION}+cpu", "--extra-index-url", torch_build.CPU_INDEX)
    assert attempts[1].pip_args == (f"torch=={torch_build.VERSION}",)
    assert "CUDA" in attempts[1].message and "instead" in attempts[1].message


def test_an_unreachable_cpu_index_is_said_and_costs_no_retries():
    attempts = torch_build.plan(system="Linux", gpu=False, reachable=lambda: (False, "Name or service not known"))
    assert "cannot be reached (Name or service not known)" in attempts[0].message
    # A CPU wheel may still come from the user's own sources (PIP_FIND_LINKS); pip must not retry.
    assert attempts[0].pip_args == (f"torch=={torch_build.VERSION}+cpu", "--retries", "0")
    assert [a.build for a in attempts] == ["cpu", "default"]


@pytest.mark.parametrize("system, gpu, build, expected", [
    ("Linux", True, "auto", ["default"]),       # an NVIDIA GPU: the CUDA build is the right one
    ("Darwin", False, "auto", ["default"]),     # macOS and Windows wheels are CPU builds already
    ("Windows", False, "auto", ["default"]),
    ("Linux", False, "default", ["default"]),
    ("Linux", True, "cpu", ["cpu", "default"]),  # asked for: the CPU build even beside a GPU
])
def test_the_build_follows_the_machine_and_the_request(system, gpu, build, expected):
    reachable = _never_reached if expected == ["default"] else (lambda: (True, ""))
    assert [a.build for a in torch_build.plan(build=build, system=system, gpu=gpu, reachable=reachable)] == expected


def test_an_explicit_torch_requirement_is_installed_exactly():
    attempts = torch_build.plan("torch==2.5.1", system="Linux", gpu=False, reachable=_never_reached)
    assert [(a.build, a.pip_args) for a in attempts] == [("as asked", ("torch==2.5.1",))]


def test_a_bad_build_is_named():
    with pytest.raises(ValueError, match="build: expected one of auto, cpu, default, got 'gpu'"):
        torch_build.plan(build="gpu")


def test_install_falls_back_when_no_cpu_wheel_exists(tmp_path, capsys):
    # A stand-in for the venv's python: its pip "finds" no +cpu wheel, installs anything else.
    log = tmp_path / "pip.log"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\ncase \"$*\" in *+cpu*) exit 1;; esac\nexit 0\n")
    fake.chmod(0o755)
    attempts = torch_build.plan(system="Linux", gpu=False, reachable=lambda: (False, "offline"))
    assert torch_build.install(attempts, python=str(fake)).build == "default"
    assert log.read_text().splitlines() == [f"-m pip install torch=={torch_build.VERSION}+cpu --retries 0",
                                            f"-m pip install torch=={torch_build.VERSION}"]
    said = capsys.readouterr().out
    assert "cannot be reached (offline)" in said and "installing the default build" in said


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
