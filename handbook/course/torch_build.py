"""Install the right build of PyTorch into the course's virtual environment (``make lab``).

Run as a file, before the ``handbook`` package is installed, by the venv's own Python::

    .venv/bin/python handbook/course/torch_build.py [--torch SPEC] [--build auto|cpu|default]
    .venv/bin/python handbook/course/torch_build.py --report

Why this exists: on Linux, ``pip install torch==2.13.0`` is served the CUDA build from PyPI,
about 4 GB of NVIDIA packages, even on a laptop without an NVIDIA GPU, where they can never run.
PyTorch publishes CPU-only wheels (a few hundred MB) on its own index, under the local version
``2.13.0+cpu``; PyPI never carries local versions, so asking for ``torch==2.13.0+cpu`` with that
index as an *extra* index picks the CPU build unambiguously while every other package still
comes from the user's own index (PyPI, a mirror, a wheel folder).

How the build is chosen (``plan``):

- ``--torch SPEC`` given (``make lab TORCH=...``): exactly that, nothing else.
- ``--build cpu``, or ``auto`` on Linux without ``nvidia-smi``: the CPU build first. If PyTorch's
  index cannot be reached (checked once, with a short timeout, so nobody waits through pip's
  retries), a CPU wheel may still come from the user's own sources (``PIP_FIND_LINKS``, a
  mirror); if none has one, the default build is installed instead, with a message saying so.
- otherwise (``--build default``, an NVIDIA GPU, macOS, Windows): the default wheel from the
  user's index (CUDA on Linux, the only build there is on macOS and Windows).

Only the standard library is used: nothing else is installed yet when this runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

VERSION = "2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_SECONDS = 5.0
BUILDS = ("auto", "cpu", "default")


@dataclass(frozen=True)
class Attempt:
    """One ``pip install`` to try, and what to say before trying it."""

    build: str           # "cpu", "default" or "as asked"
    pip_args: tuple      # the arguments after ``pip install``
    message: str = ""


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver is installed: ``nvidia-smi`` is on the PATH."""
    return shutil.which("nvidia-smi") is not None


def index_reachable(url: str = CPU_INDEX, timeout: float = PROBE_SECONDS) -> tuple[bool, str]:
    """(True, "") if PyTorch's CPU index answers within ``timeout`` s, else (False, why not)."""
    try:
        with urllib.request.urlopen(f"{url}/torch/", timeout=timeout) as reply:
            return reply.status == 200, f"HTTP {reply.status}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return False, str(getattr(error, "reason", error))


def plan(torch: str = "", build: str = "auto", system: str | None = None, gpu: bool | None = None,
         reachable=index_reachable) -> list[Attempt]:
    """The installs to try, in order, until one succeeds.

    torch: a pip requirement given by the user ("" for the course's default version).
    build: "auto" (CPU build on Linux without an NVIDIA GPU), "cpu" or "default".
    system, gpu, reachable: this machine's facts, injectable for tests (nothing is downloaded).
    """
    if build not in BUILDS:
        raise ValueError(f"build: expected one of {', '.join(BUILDS)}, got {build!r}")
    if torch.strip():
        return [Attempt("as asked", (torch.strip(),), f"installing {torch.strip()}, as asked (TORCH=...)")]
    default = Attempt("default", (f"torch=={VERSION}",), f"installing the default build, torch=={VERSION}")
    system = platform.system() if system is None else system
    gpu = has_nvidia_gpu() if gpu is None else gpu
    wants_cpu = build == "cpu" or (build == "auto" and system == "Linux" and not gpu)
    if not wants_cpu:
        return [default]
    cpu = f"torch=={VERSION}+cpu"
    ok, why = reachable()
    if ok:
        first = Attempt("cpu", (cpu, "--extra-index-url", CPU_INDEX),
                        f"no NVIDIA GPU: installing the CPU build {cpu} from {CPU_INDEX}")
    else:
        # The index is unreachable: a CPU wheel can still come from the user's own sources.
        # --retries 0: pip must not spend minutes retrying what just failed.
        first = Attempt("cpu", (cpu, "--retries", "0"),
                        f"PyTorch's CPU index {CPU_INDEX} cannot be reached ({why}); looking for a "
                        f"CPU wheel in your own package sources")
    fallback = Attempt("default", default.pip_args,
                       f"no CPU build of torch {VERSION} could be installed: installing the default "
                       f"build, torch=={VERSION}, instead (on Linux the CUDA build, about 4 GB). "
                       f"To get the CPU build later: rm -r .venv, then make lab once "
                       f"{CPU_INDEX} can be reached")
    return [first, fallback]


def install(attempts: list[Attempt], python: str = sys.executable) -> Attempt:
    """Run the attempts in order; return the one that succeeded (SystemExit if none did)."""
    for attempt in attempts:
        print(f"[torch] {attempt.message}", flush=True)
        done = subprocess.run([python, "-m", "pip", "install", *attempt.pip_args])
        if done.returncode == 0:
            return attempt
    raise SystemExit("[torch] could not install PyTorch: see pip's messages above")


def folder_mb(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total / 2**20


def report(python: str = sys.executable) -> str:
    """One line: which torch build the environment has, and how big the environment is."""
    probe = "import torch; print(torch.__version__, torch.version.cuda or '')"
    version, _, cuda = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                      check=True).stdout.strip().partition(" ")
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    return f"[torch] installed torch {version} ({build}); {sys.prefix} holds {folder_mb(sys.prefix) / 1024:.1f} GB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torch_build.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch", default="", help="a pip requirement to install as it is (make lab TORCH=...)")
    parser.add_argument("--build", default="auto", choices=BUILDS,
                        help="auto: the CPU build on Linux without an NVIDIA GPU (default)")
    parser.add_argument("--report", action="store_true", help="print the installed build and the venv size")
    args = parser.parse_args(argv)
    if args.report:
        print(report(), flush=True)
        return 0
    install(plan(args.torch, args.build))
    return 0


if __name__ == "__main__":
    sys.exit(main())
