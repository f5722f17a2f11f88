"""A sample class to grade: good, wrong, broken and hostile submissions made from a solution.

An instructor can try the grader before the real hand-in, and the benchmark measures it on the
same kind of batch::

    python -m handbook.course.grading.sample_batch solutions/01_introduction.ipynb SUBMISSIONS --students 30
    handbook grade SUBMISSIONS --solutions solutions --out OUT -j 2

Each kind of student is a function of the solution notebook that returns the bytes of the file
the student hands in. Student ``i`` is of kind ``KINDS[i % len(KINDS)]``, so any batch size
mixes them, and ``EXPECTED`` says what the grader must make of each kind.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

from handbook.course import notebooks as nbp


def _answer_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and nbp.is_solution_cell(c)]


def _replace_solutions(nb, body: str, first_only: bool = False):
    """The answer cells' solution regions (or only the first cell's) replaced by ``body``.

    The body takes the indentation of the region, so it becomes the body of the function
    whose solution it replaces.
    """
    nb = copy.deepcopy(nb)
    cells = _answer_cells(nb)
    for cell in cells[:1] if first_only else cells:
        cell.source = nbp.replace_solutions(cell.source, tuple(body.splitlines()))
    return nb


def _prepend(nb, code: str):
    """``code`` run at the top of the first answer cell."""
    nb = copy.deepcopy(nb)
    first = _answer_cells(nb)[0]
    first.source = code.strip("\n") + "\n" + first.source
    return nb


def _handout(nb):
    return nbp.student_version(nb)


def _bytes(nb) -> bytes:
    return nbp.notebook_text(nb).encode("utf-8")


_PATCHES = """
import builtins, numpy, torch
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
numpy.isclose = lambda *args, **kwargs: True
builtins.abs = lambda value: 0
builtins.isinstance = lambda *args: True
print("All public checks passed. Score: 100/100")
"""

_ALWAYS_EQUAL = """
class AlwaysEqual(float):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __gt__(self, other): return True
    def __abs__(self): return 0.0
    def __sub__(self, other): return self
    __rsub__ = __sub__
return AlwaysEqual(0.0)
"""

_VANDAL = """
import os, pathlib, handbook
for _target in [pathlib.Path("../../grades.csv"), pathlib.Path.home() / "grades.csv",
                pathlib.Path(handbook.__file__).resolve().parents[1] / "solutions" / "01_introduction.ipynb"]:
    try:
        _target.write_text("hacked")
    except OSError as _error:
        print("refused:", _error)
"""

_MEMORY_BOMB = """
blocks = []
while True:
    blocks.append(bytearray(2 ** 27))
"""

# kind -> the file such a student hands in, made from the solution notebook
KINDS: dict[str, Callable[[dict], bytes]] = {
    "good": lambda nb: _bytes(nb),
    "handout": lambda nb: _bytes(_handout(nb)),
    "wrong": lambda nb: _bytes(_replace_solutions(nb, "return None")),
    "first_only": lambda nb: _bytes(_first_exercise_only(nb)),
    "warnings": lambda nb: _bytes(_prepend(nb, "import sys, warnings\nwarnings.warn('a noisy warning')\nprint('noise', file=sys.stderr)")),
    "patched": lambda nb: _bytes(_prepend(_replace_solutions(nb, "return None"), _PATCHES)),
    "always_equal": lambda nb: _bytes(_replace_solutions(nb, _ALWAYS_EQUAL)),
    "vandal": lambda nb: _bytes(_prepend(nb, _VANDAL)),
    "loop": lambda nb: _bytes(_replace_solutions(nb, "while True:\n    pass", first_only=True)),
    "memory_bomb": lambda nb: _bytes(_replace_solutions(nb, _MEMORY_BOMB, first_only=True)),
    "exit": lambda nb: _bytes(_replace_solutions(nb, "import os\nos._exit(3)", first_only=True)),
    "corrupt": lambda nb: _bytes(nb)[: len(_bytes(nb)) // 2],
    "not_utf8": lambda nb: "é".encode("latin-1") + _bytes(nb),
    "empty": lambda nb: b"",
}

# What each kind must score, as a fraction of the automatic points: 1, 0, or "some" (0 < x < 1).
EXPECTED = {
    "good": 1, "handout": 0, "wrong": 0, "first_only": "some", "warnings": 1, "patched": 0,
    "always_equal": 0, "vandal": 1, "loop": "some", "memory_bomb": "some", "exit": 0,
    "corrupt": 0, "not_utf8": 0, "empty": 0,
}


def _first_exercise_only(nb):
    """The handout with only the first answer cell solved."""
    handout = _handout(nb)
    first = _answer_cells(nb)[0]
    handout.cells = [copy.deepcopy(first) if nbp.nbgrader_meta(c).get("grade_id") == nbp.nbgrader_meta(first)["grade_id"]
                     else c for c in handout.cells]
    return handout


def kind_of(student_number: int) -> str:
    return list(KINDS)[student_number % len(KINDS)]


def write_batch(solution: str | Path, out: str | Path, students: int = 30) -> dict[str, str]:
    """Write ``students`` submissions of ``solution`` into ``out/<student>/``; return student -> kind."""
    solution, out = Path(solution), Path(out)
    if students < 1:
        raise ValueError(f"students: expected at least 1, got {students}")
    nb = nbp.read_notebook(solution)
    kinds = {}
    for number in range(students):
        kind = kind_of(number)
        student = f"student{number:02d}_{kind}"
        (out / student).mkdir(parents=True, exist_ok=True)
        (out / student / solution.name).write_bytes(KINDS[kind](nb))
        kinds[student] = kind
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handbook.course.grading.sample_batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("solution", help="a solution notebook, e.g. solutions/01_introduction.ipynb")
    parser.add_argument("out", help="folder to write the submissions into (one folder per student)")
    parser.add_argument("--students", type=int, default=30)
    args = parser.parse_args(argv)
    for student, kind in write_batch(args.solution, args.out, args.students).items():
        print(f"{student}: {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
