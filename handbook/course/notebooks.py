"""The notebook pipeline: student notebooks generated from the solutions.

``solutions/NN_topic.ipynb`` is the only notebook anyone edits. It carries nbgrader (schema v3)
metadata and markers, so an instructor who uses nbgrader can drop it in as it is:

- ``### BEGIN SOLUTION`` / ``### END SOLUTION`` around the model answer in a code cell;
- ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS`` around the tests only the grader runs;
- markdown cells marked ``solution`` + ``grade`` are written answers, graded by hand.

``student_version`` turns a solution notebook into the one students receive: every solution
region becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the same indentation,
written answers become ``YOUR ANSWER HERE``, hidden tests disappear, outputs are cleared, and the
exercise and check cells are tagged ``raises-exception`` so that nbval (and a student pressing
"Run all") gets through the notebook before it is answered. ``assign`` writes ``chapters/`` from
``solutions/``; ``python -m handbook assign --check`` says whether they are in sync.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from pathlib import Path

import nbformat

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = "YOUR ANSWER HERE"
RAISES_TAG = "raises-exception"
NBGRADER_SCHEMA = 3
NBFORMAT_VERSION = 4
# nbgrader v3 metadata keys every marked cell carries (``points`` on graded cells only).
NBGRADER_KEYS = ("grade", "grade_id", "locked", "schema_version", "solution", "task")
_GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata, or {} for an ordinary cell."""
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def is_solution_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_graded_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade"))


def _replace_regions(source: str, begin: str, end: str, stub: tuple[str, ...] | None) -> str:
    """Replace every ``begin`` ... ``end`` region (marker lines included) by ``stub``.

    The stub lines take the indentation of the ``begin`` line, so a solution inside a function
    body stays a valid function body. ``stub=None`` removes the region. An unbalanced marker is
    an authoring error and raises ValueError, rather than leaking a solution to students.
    """
    out: list[str] = []
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        if marker == begin:
            if inside:
                raise ValueError(f"source: {begin!r} on line {number} inside an open region")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in (stub or ()))
        elif marker == end:
            if not inside:
                raise ValueError(f"source: {end!r} on line {number} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"source: {begin!r} is never closed by {end!r}")
    return "\n".join(out)


def replace_solutions(source: str, lines: tuple[str, ...] = CODE_STUB) -> str:
    """Code with each solution region replaced by ``lines`` (by default the ``# YOUR CODE HERE`` stub)."""
    return _replace_regions(source, BEGIN_SOLUTION, END_SOLUTION, lines)


def strip_solutions(source: str) -> str:
    """Code with each solution region replaced by the ``# YOUR CODE HERE`` stub."""
    return replace_solutions(source)


def remove_hidden_tests(source: str) -> str:
    """Code with every hidden-test region removed."""
    return _replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, None)


def _student_cell(cell):
    cell = copy.deepcopy(cell)
    meta = nbgrader_meta(cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
        if meta.get("solution"):
            has_region = BEGIN_SOLUTION in cell.source
            # nbgrader's rule: a solution cell without markers is a solution as a whole.
            cell.source = strip_solutions(cell.source) if has_region else "\n".join(CODE_STUB)
        if meta.get("grade"):
            cell.source = remove_hidden_tests(cell.source)
        if meta.get("solution") or meta.get("grade"):
            tags = list(cell.metadata.get("tags", []))
            if RAISES_TAG not in tags:
                tags.append(RAISES_TAG)
            cell.metadata["tags"] = tags
    elif cell.cell_type == "markdown" and meta.get("solution"):
        has_region = BEGIN_SOLUTION in cell.source
        cell.source = (
            _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, (ANSWER_STUB,))
            if has_region
            else ANSWER_STUB
        )
    return cell


def student_version(nb):
    """The student notebook made from a solution notebook (a new object; ``nb`` is untouched)."""
    problems = validate_notebook(nb)
    if problems:
        raise ValueError("nb: not a valid solution notebook:\n  " + "\n  ".join(problems))
    student = copy.deepcopy(nb)
    student.cells = [_student_cell(c) for c in nb.cells]
    return student


def clear_outputs(nb):
    """Remove outputs and execution counts in place (notebooks are committed without them)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def has_outputs(nb) -> bool:
    return any(c.cell_type == "code" and (c.get("outputs") or c.get("execution_count")) for c in nb.cells)


def validate_notebook(nb) -> list[str]:
    """Everything wrong with a solution notebook's structure, as readable messages ([] if fine).

    Checks the kernel spec, the nbgrader v3 metadata (unique grade ids, points on graded cells,
    markers only where they belong) and balanced markers.
    """
    problems: list[str] = []
    kernelspec = nb.get("metadata", {}).get("kernelspec", {})
    if not kernelspec.get("name"):
        problems.append("metadata.kernelspec.name is missing")
    ids = Counter()
    for index, cell in enumerate(nb.cells):
        where = f"cell {index}"
        meta = nbgrader_meta(cell)
        source = cell.get("source", "")
        if meta:
            missing = [k for k in NBGRADER_KEYS if k not in meta]
            if missing:
                problems.append(f"{where}: nbgrader metadata lacks {missing}")
            if meta.get("schema_version") != NBGRADER_SCHEMA:
                problems.append(f"{where}: nbgrader schema_version must be {NBGRADER_SCHEMA}")
            grade_id = meta.get("grade_id", "")
            if not isinstance(grade_id, str) or not _GRADE_ID.match(grade_id):
                problems.append(f"{where}: grade_id {grade_id!r} must be letters, digits, _ or -")
            ids[grade_id] += 1
            if meta.get("grade"):
                points = meta.get("points")
                if not isinstance(points, (int, float)) or isinstance(points, bool) or points <= 0:
                    problems.append(f"{where} ({grade_id}): a graded cell needs points > 0, got {points!r}")
        if BEGIN_SOLUTION in source and not meta.get("solution"):
            problems.append(f"{where}: solution markers in a cell not marked as a solution")
        if BEGIN_HIDDEN in source and not (meta.get("grade") and cell.cell_type == "code"):
            problems.append(f"{where}: hidden tests in a cell that is not a graded code cell")
        for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
            try:
                _replace_regions(source, begin, end, None)
            except ValueError as error:
                problems.append(f"{where}: {error}")
    problems += [f"grade_id {gid!r} is used {n} times" for gid, n in ids.items() if n > 1]
    return problems


def read_notebook(path: str | Path):
    return nbformat.read(str(path), as_version=NBFORMAT_VERSION)


def notebook_text(nb) -> str:
    """The exact text written to disk (nbformat's stable JSON: sorted keys, indent 1)."""
    return nbformat.writes(nb) + "\n"


def solution_notebooks(folder: str | Path) -> list[Path]:
    """The solution notebooks of a folder, sorted; ValueError naming ``solutions`` if there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"solutions: {folder} is not a folder")
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"solutions: no .ipynb notebooks in {folder}")
    return paths


def assign(solutions: str | Path = "solutions", chapters: str | Path = "chapters", check: bool = False) -> list[Path]:
    """Generate ``chapters/`` from ``solutions/``; return the student notebooks that changed.

    With ``check=True`` nothing is written: the return value lists what is out of date, so a test
    (or CI) can fail when somebody edited a solution and forgot to regenerate.
    """
    chapters = Path(chapters)
    sources = solution_notebooks(solutions)
    changed: list[Path] = []
    for source in sources:
        target = chapters / source.name
        text = notebook_text(student_version(read_notebook(source)))
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(target)
            if not check:
                chapters.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
    # A student notebook without a solution is stale: report it, never delete students' files.
    orphans = sorted(set(p.name for p in chapters.glob("*.ipynb")) - set(p.name for p in sources))
    changed += [chapters / name for name in orphans]
    return changed
