"""The ``handbook`` command: one entry point for the course's tools.

    handbook assign [--check]        regenerate chapters/ from solutions/
    handbook grade SUBMISSIONS ...   grade submitted notebooks (see handbook/course/grading/)
    handbook zoo list|verify|train   the shipped checkpoints
    handbook bench [--only PART]     the benchmark table (benchmarks/RESULTS.md)

Each sub-command lives in its own module and keeps its own ``main(argv)``; this file only
dispatches, so ``python -m handbook.zoo`` and ``handbook zoo`` are the same thing.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module that implements it, one line of help)
COMMANDS = {
    "assign": ("handbook.course.notebooks_cli", "generate student notebooks (chapters/) from solutions/"),
    "zoo": ("handbook.zoo", "list, verify or retrain the shipped checkpoints"),
    "bench": ("handbook.course.bench", "measure speed and quality; write benchmarks/RESULTS.md"),
    "grade": ("handbook.course.grading.cli", "grade submitted notebooks: gradebook, feedback, Gradescope results"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="handbook", description=__doc__.split("\n\n")[0])
        parser.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
        parser.parse_args(argv[:1])  # prints help or a clear error and exits
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
