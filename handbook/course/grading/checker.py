"""The checker: grades one student's answers to one chapter, in a process that runs no student code.

How a submission is graded (``grade_notebook``):

1. **The student's notebook is rebuilt from the solution.** The notebook that runs is the
   solution notebook's code cells in order, where each answer cell (nbgrader ``solution: true``)
   holds the student's source for that grade_id (a missing answer gets the stub the student
   notebook has), and every check cell (``grade: true``) is left out. So a student who deleted,
   duplicated or edited a check cell, or gave one of their cells a check's grade_id, changes
   nothing: checks come from the solution only.
2. **It runs in a sandboxed kernel** (``sandbox.py``): its own process, a scratch folder,
   memory/CPU/file-size limits, Landlock, a time limit per cell and for the whole notebook. Its
   outputs are never read: a printed "All public checks passed" or a fake score is not seen.
3. **The reference context is built here, once per chapter and process**: the solution
   notebook's code cells (answers included, checks excluded) run in this process, so the checks
   find their imports and helpers (``torch``, ``sw``, ``make_generator``, ...). This is
   instructor code from ``solutions/``, never from the installed package or a submission.
4. **Each check cell runs here**, public part and hidden tests (their markers are comments), in a
   copy of the reference context in which every function an answer cell defines (found with
   ``ast`` in the solution's answer cells) is replaced by a proxy. Calling the proxy calls the
   student's function in the kernel; arguments and the result cross as plain values
   (``protocol.py``). Patching ``torch.allclose`` or ``builtins`` in the kernel, or returning an
   object whose ``__eq__`` is always True, therefore has no effect on the check: the assert runs
   here, on genuine numbers.

A question is worth its points when its check cell runs to the end, and nothing otherwise:

- ``pass``: the check ran without an exception;
- ``fail``: an ``assert`` failed (the message is the assertion's; hidden tests are named as such,
  their code never shown);
- ``error``: anything else (the student's function raised, returned something that cannot cross,
  is not defined; the kernel died or stopped answering: then every later question is ``error``
  too, never ``pass``);
- ``timeout``: a student's function ran out of time (it is interrupted; later questions go on),
  or the answer cell it depends on was stopped by a time limit (the message names the cell and
  the limit).

Command line (what the grading command runs, one process per group of submissions)::

    python -m handbook.course.grading.checker < job.json > answer.json

The job (stdin) is one chapter and one or more submissions::

    {"solution": <the solution notebook as JSON>,
     "limits": {"notebook_seconds": 300, "call_seconds": 60, "memory_mb": 4096},  (optional)
     "submissions": [{"id": "alice/01_introduction.ipynb", "answers": {"ex1_kl_answer": "def kl...", ...}}, ...]}

The answer (stdout, written once all are graded) has one entry per submission, in order::

    {"results": [{"id": "alice/01_introduction.ipynb", "questions": [{"question": "ex1_kl_check",
      "points": 3.0, "max_points": 3.0, "status": "pass", "message": ""}, ...],
      "seconds": 9.1, "sandbox": "landlock ABI 7: writes confined to ..."}, ...]}

Every key of a submission except ``answers`` is echoed back. The reference context is built for
the first submission of a chapter and reused for the others, so a process that grades several
submissions of a chapter pays for it once. Exit status 2 (and a message on stderr) for a job
that is not valid JSON or whose solution notebook is invalid; never for a submission.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass

import nbformat

from handbook.course import notebooks
from handbook.course.grading.sandbox import (INTERRUPT_GRACE_SECONDS, MISSING, START_SECONDS, CallTimeout,
                                      KernelLimits, KernelLost, SandboxedKernel, StudentCodeError)

MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class Limits:
    """Time and memory a submission gets. All times are wall-clock seconds."""

    notebook_seconds: float = 300    # the whole student notebook run (cells after it are skipped)
    cell_seconds: float = 120        # one cell of that run (then it is interrupted)
    call_seconds: float = 60         # the student's code in one check: all its calls together
    memory_mb: int = 4096            # memory for the student's code, above the ready kernel's
    output_bytes: int = 256 * 2**20  # the largest value one call may return

    @classmethod
    def from_dict(cls, values: dict) -> "Limits":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"limits: unknown fields {unknown}; known: {sorted(known)}")
        limits = cls(**values)
        for field in known:
            value = getattr(limits, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"limits: {field} must be a positive number, got {value!r}")
        return limits

    def worst_case_seconds(self, questions: int) -> float:
        """An upper bound on the time one submission takes (for a caller's own timeout)."""
        grace = INTERRUPT_GRACE_SECONDS
        return START_SECONDS + self.notebook_seconds + grace + questions * (self.call_seconds + grace)

    def kernel(self, questions: int) -> KernelLimits:
        # CPU time is a backstop behind the wall-clock limits; it can only be lower than them.
        return KernelLimits(memory_mb=int(self.memory_mb), cpu_seconds=int(self.worst_case_seconds(questions)),
                            message_mb=max(1, int(self.output_bytes) // 2**20))


# ============================================================================================
# The chapter: what runs, what is checked, which functions are the student's
# ============================================================================================

@dataclass(frozen=True)
class Question:
    grade_id: str
    points: float
    source: str
    hidden_lines: frozenset[int]   # line numbers (from 1) inside the hidden-test regions


@dataclass(frozen=True)
class RunCell:
    index: int             # position in the solution notebook
    source: str            # the solution's source
    grade_id: str | None   # set for answer cells: the student's source replaces it


@dataclass(frozen=True)
class Chapter:
    questions: tuple[Question, ...]
    cells: tuple[RunCell, ...]
    functions: dict[str, str]   # name of a function the student writes -> grade_id of its answer cell
    key: str                    # sha256 of the solution's code (hidden tests included): the reference
                                # cache key, and the secret behind GRADING_SEED

    @classmethod
    def from_notebook(cls, solution: dict) -> "Chapter":
        """Read a solution notebook (as JSON). Raises ValueError if it is not a valid one."""
        nb = nbformat.reads(json.dumps(solution), as_version=notebooks.NBFORMAT_VERSION)
        problems = notebooks.validate_notebook(nb)
        if problems:
            raise ValueError("solution: not a valid solution notebook:\n  " + "\n  ".join(problems))
        questions, cells, functions = [], [], {}
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            meta = notebooks.nbgrader_meta(cell)
            if notebooks.is_graded_cell(cell) and not notebooks.is_solution_cell(cell):
                questions.append(Question(meta["grade_id"], float(meta["points"]), cell.source,
                                          _hidden_lines(cell.source)))
                continue
            # A graded solution code cell is nbgrader's manually graded code answer: it runs
            # like any answer cell, and the instructor grades it by hand.
            grade_id = meta.get("grade_id") if notebooks.is_solution_cell(cell) else None
            cells.append(RunCell(index, cell.source, grade_id))
            if grade_id:
                functions.update({name: grade_id for name in _defined_functions(cell.source, grade_id)})
        code = json.dumps([(c.source, c.grade_id) for c in cells] + [(q.source, q.grade_id) for q in questions])
        return cls(tuple(questions), tuple(cells), functions, hashlib.sha256(code.encode()).hexdigest())

    def answer_source(self, cell: RunCell, answers: dict) -> str:
        """The student's source for an answer cell, or the stub of the student notebook."""
        source = answers.get(cell.grade_id)
        if isinstance(source, list) and all(isinstance(s, str) for s in source):
            source = "".join(source)   # nbformat's on-disk form: a list of lines
        if isinstance(source, str):
            return source
        return notebooks.strip_solutions(cell.source) if notebooks.BEGIN_SOLUTION in cell.source \
            else "\n".join(notebooks.CODE_STUB)


def _hidden_lines(source: str) -> frozenset[int]:
    lines, inside = set(), False
    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.strip()
        inside = inside or marker == notebooks.BEGIN_HIDDEN
        if inside:
            lines.add(number)
        inside = inside and marker != notebooks.END_HIDDEN
    return frozenset(lines)


def _defined_functions(source: str, grade_id: str) -> list[str]:
    """Names of the functions an answer cell defines at its top level."""
    try:
        tree = ast.parse(_python_source(source))
    except SyntaxError as error:
        raise ValueError(f"solution: answer cell {grade_id} is not valid Python: {error}") from None
    return [node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _python_source(source: str) -> str:
    """Cell source with IPython syntax (``%magic``, ``!shell``) turned into plain Python."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def questions(solution: dict) -> list[dict]:
    """The auto-graded questions of a solution notebook: [{"question", "max_points"}], in order."""
    return [{"question": q.grade_id, "max_points": q.points} for q in Chapter.from_notebook(solution).questions]


# ============================================================================================
# The reference context: the solution notebook, run here once per chapter
# ============================================================================================

class ReferenceFailure(RuntimeError):
    """The solution notebook itself failed to run: an instructor's problem, not the student's."""


class _NoIPython:
    """Stands in for ``get_ipython()``: magics and shell escapes do nothing in the reference run."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


_REFERENCES: dict[str, dict] = {}


@contextlib.contextmanager
def _quiet():
    """Silence prints, progress bars and warnings of instructor code run in this process."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def reference_namespace(chapter: Chapter) -> dict:
    """The globals the solution notebook leaves behind, built once per chapter and process."""
    if chapter.key in _REFERENCES:
        return _REFERENCES[chapter.key]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.show = lambda *args, **kwargs: None
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _NoIPython,
                 "display": lambda *args, **kwargs: None}
    start = os.getcwd()
    # A notebook may write files next to itself: let it do so in a folder that is thrown away.
    with tempfile.TemporaryDirectory(prefix="handbook-reference-") as folder, _quiet():
        os.chdir(folder)
        try:
            for cell in chapter.cells:
                code = compile(_python_source(cell.source), f"<solution cell {cell.index}>", "exec")
                try:
                    exec(code, namespace)
                except Exception as error:
                    where = f" ({cell.grade_id})" if cell.grade_id else ""
                    raise ReferenceFailure(f"the solution notebook failed in cell {cell.index}{where}: "
                                           f"{type(error).__name__}: {error}") from error
                finally:
                    plt.close("all")
        finally:
            os.chdir(start)
    _REFERENCES[chapter.key] = namespace
    return namespace


# ============================================================================================
# Grading
# ============================================================================================

class _Budget:
    """The seconds left for the student's code in one check, and whether a call timed out."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.timed_out = ""

    def left(self) -> float:
        return self.deadline - time.monotonic()


class StudentFunction:
    """Stands for a student's function in a check: calling it calls the student's, in the kernel."""

    def __init__(self, name: str, kernel: SandboxedKernel, budget: _Budget):
        self.__name__ = self.name = name
        self._kernel, self._budget = kernel, budget

    def __call__(self, *args, **kwargs):
        timeout = self._budget.left()
        if timeout <= 0:
            self._budget.timed_out = f"{self.name}: the time for this question's checks ran out"
            raise CallTimeout(self._budget.timed_out)
        try:
            return self._kernel.call(self.name, args, kwargs, timeout)
        except CallTimeout as error:
            self._budget.timed_out = str(error)
            raise

    def __repr__(self) -> str:
        return f"<the student's function {self.name}>"


def _result(question: Question, status: str, message: str = "") -> dict:
    points = question.points if status == "pass" else 0.0
    return {"question": question.grade_id, "points": points, "max_points": question.points,
            "status": status, "message": message[:MESSAGE_CHARS]}


def _where_in_check(error: BaseException, question: Question, filename: str) -> tuple[bool, str]:
    """(in the hidden tests?, the failing line of the public part, or "")."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == filename]
    if not frames:
        return False, ""
    number = frames[-1].lineno
    if number in question.hidden_lines:
        return True, ""
    lines = question.source.splitlines()
    return False, lines[number - 1].strip() if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class CellFailure:
    """Why an answer cell of the student's notebook did not run to its end."""

    message: str
    timed_out: bool = False               # stopped by a time limit (the cell's or the notebook's)
    names: frozenset[str] = frozenset()   # what the student's cell defines at its top level


def _top_level_names(source: str) -> frozenset[str]:
    """Names a cell binds at its top level (functions, classes, assignments, imports)."""
    try:
        tree = ast.parse(_python_source(source))
    except (SyntaxError, ValueError):
        return frozenset()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return frozenset(names)


def _cell_behind(error: StudentCodeError, chapter: Chapter, cell_errors: dict) -> tuple[str, CellFailure] | None:
    """The failed answer cell that explains ``error``: the one meant to define the missing
    function, or a timed-out cell that defines the name a NameError misses."""
    grade_id = chapter.functions.get(error.function)
    if error.kind == MISSING and grade_id in cell_errors:
        return grade_id, cell_errors[grade_id]
    if error.kind == "NameError":
        for grade_id, failure in cell_errors.items():
            if failure.timed_out and any(f"'{name}'" in error.student_message for name in failure.names):
                return grade_id, failure
    return None


def _explain(error: StudentCodeError, chapter: Chapter, cell_errors: dict, limits: Limits) -> tuple[str, str]:
    """(status, message): the student's exception, with what helps to understand it.

    The status is ``timeout`` when the function is missing because a time limit stopped the cell
    it depends on (a ``while True`` at the top of an answer cell): the student's code ran out of
    time, which is what the row must say.
    """
    behind = _cell_behind(error, chapter, cell_errors)
    if behind:
        grade_id, failure = behind
        if failure.timed_out:
            return "timeout", f"{error} (your cell {grade_id} {failure.message})"
        return "error", f"{error} (your cell {grade_id} failed: {failure.message})"
    if error.kind == "NotImplementedError" and not error.student_message:
        return "error", f"{error.function} is not answered yet (it raises NotImplementedError)"
    if error.kind == "MemoryError" or "can't allocate memory" in error.student_message:
        return "error", f"{error} (the memory limit is {limits.memory_mb} MB)"
    return "error", str(error)


def grading_seed(secret: str, student: str, question: str) -> int:
    """The seed of a check's hidden-test inputs: fixed per student and question, unguessable.

    Hidden tests draw their inputs at grading time from ``GRADING_SEED``, so a hard-coded answer
    cannot pass; deriving it from a secret the students never see (the hash of the solution's
    code, hidden tests included) and from the student and question makes a re-run give the same
    grades.
    """
    digest = hashlib.sha256("\0".join((secret, student, question)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def run_check(question: Question, chapter: Chapter, reference: dict, kernel: SandboxedKernel,
              limits: Limits, cell_errors: dict, student: str = "") -> dict:
    """Run one check cell here, with the student's functions bound to proxies."""
    if kernel.lost:
        return _result(question, "error", f"not graded: {kernel.lost}")
    budget = _Budget(limits.call_seconds)
    namespace = dict(reference)
    namespace["GRADING_SEED"] = grading_seed(chapter.key, student, question.grade_id)
    namespace.update({name: StudentFunction(name, kernel, budget) for name in chapter.functions})
    filename = f"<check {question.grade_id}>"
    try:
        with _quiet():
            exec(compile(_python_source(question.source), filename, "exec"), namespace)
    except KernelLost as error:
        return _result(question, "error", str(error))
    except CallTimeout as error:
        return _result(question, "timeout", str(error))
    except AssertionError as error:
        hidden, line = _where_in_check(error, question, filename)
        text = str(error)
        if hidden:
            return _result(question, "fail", f"a hidden test failed: {text}" if text else "a hidden test failed")
        return _result(question, "fail", text or f"assertion failed: {line}")
    except StudentCodeError as error:
        return _result(question, *_explain(error, chapter, cell_errors, limits))
    except Exception as error:  # noqa: BLE001 - e.g. a result of the wrong type meets a check
        hidden, line = _where_in_check(error, question, filename)
        where = " (in the hidden tests)" if hidden else (f" (in the check: {line})" if line else "")
        return _result(question, "error", f"{type(error).__name__}: {error}{where}")
    # A check that swallowed a timeout or a lost kernel has not passed.
    if kernel.lost:
        return _result(question, "error", kernel.lost)
    if budget.timed_out:
        return _result(question, "timeout", budget.timed_out)
    return _result(question, "pass")


def run_student_notebook(chapter: Chapter, answers: dict, kernel: SandboxedKernel, limits: Limits) -> dict:
    """Run the rebuilt notebook in the kernel; return {answer grade_id: CellFailure}."""
    cell_errors: dict[str, CellFailure] = {}
    deadline = time.monotonic() + limits.notebook_seconds
    for cell in chapter.cells:
        left = deadline - time.monotonic()
        if left <= 0:
            for later in chapter.cells:
                if later.grade_id and later.index >= cell.index:
                    cell_errors[later.grade_id] = CellFailure(
                        f"was not run: the notebook took more than its time limit of {limits.notebook_seconds:.0f} s",
                        timed_out=True)
            break
        source = chapter.answer_source(cell, answers) if cell.grade_id else cell.source
        cell_limit = min(limits.cell_seconds, left)
        outcome = kernel.run(source, cell_limit, store_history=True)
        if outcome.status in ("dead", "unresponsive"):
            where = f"your cell {cell.grade_id}" if cell.grade_id else f"cell {cell.index} of the notebook"
            kernel.lost = f"{outcome.error}, while running {where}"
            break
        if cell.grade_id and outcome.status == "timeout":
            which = ("the time limit of one cell" if cell_limit == limits.cell_seconds
                     else f"the time left of the notebook's {limits.notebook_seconds:.0f} s")
            cell_errors[cell.grade_id] = CellFailure(f"was stopped after {cell_limit:.0f} s, {which}",
                                                     timed_out=True, names=_top_level_names(source))
        elif cell.grade_id and outcome.status == "error":
            cell_errors[cell.grade_id] = CellFailure(outcome.error)
    return cell_errors


def grade_notebook(solution_nb: dict, answers: dict, limits: Limits = Limits()) -> list[dict]:
    """Grade one student's answers; one result per auto-graded question, in notebook order.

    solution_nb: the solution notebook as JSON (a dict), read by the caller before any student
    code ran. answers: {answer cell grade_id: the student's source}; other keys are ignored.
    Returns [{"question", "points", "max_points", "status", "message"}]. Raises ValueError only
    for an invalid *solution* notebook; nothing a submission does makes it raise.
    """
    chapter = Chapter.from_notebook(solution_nb)
    return _grade(chapter, answers if isinstance(answers, dict) else {}, limits)[0]


def _grade(chapter: Chapter, answers: dict, limits: Limits, student: str = "") -> tuple[list[dict], str]:
    try:
        reference = reference_namespace(chapter)
    except ReferenceFailure as error:
        return [_result(q, "error", f"grader problem: {error}") for q in chapter.questions], ""
    try:
        with SandboxedKernel(limits.kernel(len(chapter.questions))) as kernel:
            cell_errors = run_student_notebook(chapter, answers, kernel, limits)
            results = [run_check(q, chapter, reference, kernel, limits, cell_errors, student)
                       for q in chapter.questions]
            return results, kernel.confinement
    except Exception as error:  # noqa: BLE001 - a grader failure must not stop the batch
        message = f"grader problem: {type(error).__name__}: {error}"
        return [_result(q, "error", message) for q in chapter.questions], ""


# ============================================================================================
# Command line: JSON jobs on stdin, one JSON line per submission on stdout
# ============================================================================================

def _claim_stdout():
    """Keep the real stdout for results only; everything else printed goes to stderr.

    Instructor code (and C libraries) print; a stray line on stdout would corrupt the results.
    """
    results = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return results


def grade_job(job: dict) -> dict:
    """Grade the submissions of one job: {"results": [one entry per submission, in order]}."""
    if not isinstance(job, dict) or not isinstance(job.get("solution"), dict):
        raise ValueError("job: expected an object with a 'solution' notebook")
    limits = Limits.from_dict(job.get("limits") or {})
    chapter = Chapter.from_notebook(job["solution"])
    submissions = job.get("submissions")
    if not isinstance(submissions, list):
        raise ValueError("job: expected a 'submissions' list")
    results = []
    for submission in submissions:
        start = time.monotonic()
        submission = submission if isinstance(submission, dict) else {}
        answers = submission.get("answers")
        student = submission.get("id") if isinstance(submission.get("id"), str) else ""
        questions, sandbox = _grade(chapter, answers if isinstance(answers, dict) else {}, limits, student)
        echo = {k: v for k, v in submission.items() if k != "answers"}
        results.append({**echo, "questions": questions, "seconds": round(time.monotonic() - start, 2),
                        "sandbox": sandbox})
    return {"results": results}


def main(argv: list[str] | None = None) -> int:
    answer = _claim_stdout()
    import torch

    torch.set_num_threads(1)   # -j N checkers side by side: one core each
    try:
        job = json.loads(sys.stdin.read())
        result = grade_job(job)
    except ValueError as error:   # also json.JSONDecodeError
        print(f"checker: {error}", file=sys.stderr)
        return 2
    answer.write(json.dumps(result))
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
