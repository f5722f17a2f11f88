"""Finding and reading submissions, as plain data: nothing here ever executes a notebook.

A batch is a folder with one sub-folder per student (the folder name is the student id) holding
that student's notebooks, matched to ``solutions/`` by file name::

    SUBMISSIONS/alice/01_introduction.ipynb
    SUBMISSIONS/bob/01_introduction.ipynb

Every solution notebook is read into memory first (``load_solutions``), before any student code
runs anywhere, so a submission that writes over ``solutions/`` during grading changes nothing.

Each submitted file is then read as bytes and checked step by step (``read_submission``): a
regular file and not a symbolic link (a link could point at the solutions or at another
student's work), under the size limit, UTF-8, JSON, a notebook of nbformat 4 (older versions are
converted by nbformat when it can). Any failure gives that notebook one clear status and message
(``missing`` when the student did not hand it in, ``error`` otherwise) and the batch goes on.

From a readable notebook we keep only the cell *sources* that the grader needs, found by their
nbgrader ``grade_id``: the answer code cells (``solution: true`` code cells of the solution) and
the written answers (graded markdown cells, marked by hand). The student's copies of the test
cells are ignored entirely: the checker always takes tests from the solutions, which is what
restores deleted, duplicated or edited test cells. Outputs are never looked at.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from handbook.course.notebooks import (
    BEGIN_HIDDEN,
    NBFORMAT_VERSION,
    is_graded_cell,
    is_solution_cell,
    nbgrader_meta,
    read_notebook,
    solution_notebooks,
    student_version,
    validate_notebook,
)

# Chapter notebooks are a few hundred kB without outputs; 20 MB leaves room for plots, and a
# bigger file is almost always runaway output (a print in a loop), which the grader never needs.
MAX_FILE_BYTES = 20 * 1024 * 1024
# How a question of a notebook that could not be graded is reported.
MISSING, ERROR = "missing", "error"
NOTEBOOK_NOTE = ""  # key of ``Submission.notes`` for notes about the whole notebook


@dataclass(frozen=True)
class Question:
    """One graded cell of a solution notebook: a row of the gradebook.

    ``kind`` is ``auto`` for a graded code cell (a check, scored by the checker) and ``manual``
    for a graded written answer (scored by hand). ``answer_ids`` are the answer cells between the
    previous graded cell and this one, shown next to it in the feedback: for a check, the functions
    it exercises; for a written answer, the experiment it is read from (an exercise runs answer ->
    check -> experiment -> written answer).
    """

    grade_id: str
    kind: str
    max_points: float
    hidden_tests: bool = False
    answer_ids: tuple[str, ...] = ()


@dataclass
class Solution:
    """A solution notebook held in memory, with what grading needs from it."""

    name: str                    # file stem, e.g. "01_introduction": the notebook column
    filename: str                # "01_introduction.ipynb": what submissions are matched by
    notebook: dict               # the whole notebook as plain JSON, as the checker receives it
    questions: list[Question]    # graded cells, in cell order
    answer_ids: list[str]        # answer code cells, in cell order
    written_ids: list[str]       # written answers (manual questions), in cell order
    handout: dict[str, str]      # grade_id -> source of that cell in the student version

    @property
    def max_points(self) -> float:
        return sum(q.max_points for q in self.questions)

    def question(self, grade_id: str) -> Question:
        return next(q for q in self.questions if q.grade_id == grade_id)


@dataclass
class Submission:
    """One student's notebook for one chapter, read as data.

    ``status`` is ``ok`` when the answers could be extracted, else ``missing`` or ``error`` with
    ``message`` saying why (and then every question of the notebook takes that status).
    ``notes`` are remarks to add to a question's message, keyed by grade_id (``""`` for the
    notebook as a whole), e.g. a duplicated answer cell or an answer left as handed out.
    """

    student: str
    notebook: str
    path: Path | None
    status: str = "ok"
    message: str = ""
    answers: dict[str, str] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def note(self, grade_id: str, text: str) -> None:
        self.notes.setdefault(grade_id, []).append(text)


@dataclass
class Batch:
    """What ``discover`` found: students (sorted), their submissions, and what was skipped."""

    students: list[str]
    submissions: list[Submission]      # sorted by student, then notebook
    ignored: list[str]                 # files that match no solution notebook, as readable lines


# ---- solutions ------------------------------------------------------------------------------

def load_solution(path: str | Path) -> Solution:
    """Read and check one solution notebook; a broken one raises ValueError naming the file."""
    path = Path(path)
    try:
        nb = read_notebook(path)
    except Exception as error:  # nbformat raises several kinds; all mean "not a notebook"
        raise ValueError(f"solutions: cannot read {path}: {error}") from error
    problems = validate_notebook(nb)
    if problems:
        raise ValueError(f"solutions: {path} is not a valid solution notebook:\n  " + "\n  ".join(problems))
    handout = {
        nbgrader_meta(cell)["grade_id"]: cell.source
        for cell in student_version(nb).cells
        if nbgrader_meta(cell).get("grade_id")
    }
    questions: list[Question] = []
    answer_ids: list[str] = []
    written_ids: list[str] = []
    pending: list[str] = []  # answer cells seen since the last graded cell
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if cell.cell_type == "code" and is_solution_cell(cell):
            answer_ids.append(grade_id)
            pending.append(grade_id)
        if not is_graded_cell(cell):
            continue
        points = float(nbgrader_meta(cell)["points"])
        if cell.cell_type == "code":
            questions.append(Question(grade_id, "auto", points, BEGIN_HIDDEN in cell.source, tuple(pending)))
        else:
            questions.append(Question(grade_id, "manual", points, answer_ids=tuple(pending)))
            written_ids.append(grade_id)
        pending = []
    # The checker gets plain JSON (sources as strings), never an nbformat object.
    plain = json.loads(json.dumps(nb))
    return Solution(path.stem, path.name, plain, questions, answer_ids, written_ids, handout)


def load_solutions(solutions_dir: str | Path) -> dict[str, Solution]:
    """Every solution notebook of the folder, by file name, read now and kept in memory."""
    folder = Path(solutions_dir)
    solutions = {p.name: load_solution(p) for p in solution_notebooks(folder)}
    if not any(s.questions for s in solutions.values()):
        raise ValueError(f"solutions: no notebook in {folder} has a graded cell (nbgrader 'grade: true')")
    return solutions


# ---- discovery ------------------------------------------------------------------------------

def discover(submissions_dir: str | Path, solutions: dict[str, Solution],
             max_bytes: int = MAX_FILE_BYTES) -> Batch:
    """Read every student's notebooks; one Submission per student and solution notebook.

    A solution notebook that a student did not hand in is a ``missing`` submission, so every
    student has a row for every question. Hidden folders (``.ipynb_checkpoints``, ``.git``) are
    skipped; stray files, and notebooks whose name matches no solution, are listed as ignored.
    """
    root = Path(submissions_dir)
    if not root.is_dir():
        raise ValueError(f"submissions: {root} is not a folder")
    students: list[str] = []
    ignored: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            students.append(entry.name)
        else:
            ignored.append(f"{entry.name}: not a student folder (expected SUBMISSIONS/<student>/<notebook>.ipynb)")
    if not students:
        raise ValueError(f"submissions: no student folders in {root} (expected SUBMISSIONS/<student>/<notebook>.ipynb)")
    submissions: list[Submission] = []
    for student in students:
        folder = root / student
        for name in sorted(p.name for p in folder.glob("*.ipynb")):
            if name not in solutions:
                ignored.append(f"{student}/{name}: no solution notebook of that name")
        for filename, solution in sorted(solutions.items()):
            submissions.append(read_submission(folder / filename, solution, student, max_bytes))
    return Batch(students, submissions, ignored)


# ---- one file -------------------------------------------------------------------------------

class Unreadable(Exception):
    """A submitted file that cannot be graded; ``status`` is ``missing`` or ``error``."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def read_submission(path: str | Path, solution: Solution, student: str,
                    max_bytes: int = MAX_FILE_BYTES) -> Submission:
    """The answers of one submitted notebook, or a clear status and message saying why not."""
    path = Path(path)
    submission = Submission(student, solution.name, path)
    try:
        nb = parse_notebook(read_bytes(path, max_bytes), submission)
        extract_answers(nb, solution, submission)
    except Unreadable as problem:
        submission.status, submission.message = problem.status, str(problem)
        submission.answers, submission.written, submission.notes = {}, {}, {}
    return submission


def read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, after checking that it is a plain file of a sensible size."""
    name = path.name
    # Links are refused at both levels: a student's archive can carry a link to the solutions.
    if path.parent.is_symlink():
        raise Unreadable(ERROR, f"the student folder {path.parent.name} is a symbolic link, which the grader does not follow")
    if path.is_symlink():
        raise Unreadable(ERROR, f"{name} is a symbolic link, which the grader does not follow")
    if not path.exists():
        raise Unreadable(MISSING, f"{name} was not submitted")
    if not path.is_file():
        raise Unreadable(ERROR, f"{name} is not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise Unreadable(ERROR, f"{name} is empty (0 bytes)")
    if size > max_bytes:
        raise Unreadable(ERROR, f"{name} is {_megabytes(size)}, over the {_megabytes(max_bytes)} limit; this is "
                                "usually huge cell outputs: clear them (Kernel > Restart Kernel and Clear Outputs) "
                                "and submit again")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)  # the file may grow after stat(); never read more
    if len(data) > max_bytes:
        raise Unreadable(ERROR, f"{name} is over the {_megabytes(max_bytes)} limit")
    return data


def parse_notebook(data: bytes, submission: Submission) -> nbformat.NotebookNode:
    """Bytes -> an nbformat-4 notebook, converting older versions where nbformat can."""
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is harmless; tolerate it
    except UnicodeDecodeError as error:
        raise Unreadable(ERROR, f"the file is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                                f"{error.start}); a notebook is always saved as UTF-8") from None
    if not text.strip():
        raise Unreadable(ERROR, "the file is empty (only white space)")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise Unreadable(ERROR, f"corrupt JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                                "the file was probably damaged or edited by hand") from None
    except (ValueError, RecursionError) as error:  # e.g. nesting or a number too large to read
        raise Unreadable(ERROR, f"unreadable JSON: {_first_line(error)}") from None
    if not isinstance(obj, dict) or "nbformat" not in obj:
        raise Unreadable(ERROR, "the file is JSON but not a Jupyter notebook (no 'nbformat' field)")
    major = obj.get("nbformat")
    if not isinstance(major, int) or isinstance(major, bool):
        raise Unreadable(ERROR, f"the notebook's nbformat version {major!r} is not a number")
    nb = nbformat.from_dict(obj)
    if major > NBFORMAT_VERSION or major < 1:
        raise Unreadable(ERROR, f"nbformat version {major} is not supported: the grader reads nbformat "
                                f"{NBFORMAT_VERSION} (save the notebook with Jupyter and submit again)")
    if major < NBFORMAT_VERSION:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                nb = nbformat.convert(nb, NBFORMAT_VERSION)
        except Exception as error:  # nbformat's converters raise whatever the bad input triggers
            raise Unreadable(ERROR, f"nbformat version {major} notebook that nbformat cannot convert to "
                                    f"version {NBFORMAT_VERSION}: {_first_line(error)}") from None
        submission.note(NOTEBOOK_NOTE, f"converted from nbformat version {major} to {NBFORMAT_VERSION}")
    _check_schema(nb, submission)
    return nb


def _check_schema(nb, submission: Submission) -> None:
    """nbformat's schema check; lenient where only details are off, strict where cells are unusable.

    Editors add or drop small fields (cell ids, metadata keys); refusing those would cost a
    student points for their tool. What grading needs is a list of cells with sources.
    """
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise Unreadable(ERROR, "the notebook has no list of cells")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.validate(nb)
    except Exception as error:  # ValidationError, or whatever odd input makes jsonschema raise
        submission.note(NOTEBOOK_NOTE, f"the notebook does not fully follow the nbformat schema "
                                       f"({_first_line(error)}); graded from its cells")


def _source(cell) -> str | None:
    """A cell's source as one string (a list of lines on disk), or None if it is malformed."""
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        return None
    # Lone surrogates (legal in JSON, not in UTF-8) and NULs would break the CSV and HTML files.
    return source.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
    return grade_id if isinstance(grade_id, str) else None


def extract_answers(nb, solution: Solution, submission: Submission) -> None:
    """Fill ``submission.answers`` and ``.written`` from the cells, by grade_id.

    The first cell of the right type with a grade_id wins; later copies are noted and ignored.
    A missing answer, or one left exactly as handed out, is noted (the checker then runs the
    handout's ``raise NotImplementedError()``; a written answer is marked ``missing``).
    """
    wanted = {gid: "code" for gid in solution.answer_ids}
    wanted.update({gid: "markdown" for gid in solution.written_ids})
    for index, cell in enumerate(nb["cells"]):
        grade_id = _grade_id(cell)
        if grade_id not in wanted:
            continue  # ordinary cells, and the student's copies of test cells: never used
        found = submission.answers if wanted[grade_id] == "code" else submission.written
        source = _source(cell)
        cell_type = cell.get("cell_type")
        if grade_id in found:
            submission.note(grade_id, f"cell {index} repeats grade_id {grade_id}; the first one was graded")
        elif source is None:
            submission.note(grade_id, f"cell {index} ({grade_id}) has a malformed source; ignored")
        elif wanted[grade_id] == "code" and cell_type != "code":
            submission.note(grade_id, f"cell {index} ({grade_id}) is a {cell_type} cell, not code; ignored")
        else:
            # A written answer is graded by reading it, whatever the cell type it ended up in.
            found[grade_id] = source
    for grade_id, kind in wanted.items():
        found = submission.answers if kind == "code" else submission.written
        if grade_id not in found:
            submission.note(grade_id, f"the answer cell {grade_id} is missing from the submission "
                                      "(deleted, or its metadata lost when it was copied)")
        elif found[grade_id].strip() == solution.handout.get(grade_id, "").strip():
            submission.note(grade_id, f"the answer cell {grade_id} is unchanged from the handout")


def is_unanswered(submission: Submission, solution: Solution, grade_id: str) -> bool:
    """True when a written answer is absent or still the handout's ``YOUR ANSWER HERE``."""
    text = submission.written.get(grade_id)
    return text is None or not text.strip() or text.strip() == solution.handout.get(grade_id, "").strip()


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
