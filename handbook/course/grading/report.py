"""From graded submissions to the files an instructor keeps and sends: the gradebook and feedback.

Everything here works on results already held in memory by the main process; nothing reads what
a student's code might have written. ``write_outputs`` writes, in OUT:

- ``grades.csv``: one row per student and question (student, notebook, question, points,
  max_points, status, message). Status is ``pass``, ``fail``, ``error``, ``timeout`` (automatic
  checks), ``missing`` (not handed in, or a written answer left blank) or ``manual`` (a written
  answer; points empty until the instructor's marks are merged).
- ``totals.csv``: one row per student: points, max_points, written answers still to grade, and
  points and max_points per notebook.
- ``manual.csv``: the written answers to grade by hand (student, notebook, question, max_points,
  answer, points, comment). Fill in ``points`` (and optionally ``comment``, shown to the student)
  and run ``grade`` again with ``--manual manual.csv``: ``read_manual`` checks every row first.
- ``feedback/<student>/<notebook>.html``: a self-contained page per notebook: each question,
  the student's answer (escaped, never rendered), the result and message. Hidden tests are named
  and scored with their check, their code is never shown.
- ``results/<student>/results.json``: Gradescope's autograder format.

Files are written only at the end of a run: ``feedback/`` and ``results/`` are deleted and
rebuilt, and each file is unlinked before it is written, so nothing planted in OUT during grading
(a file, a symbolic link) survives or is written through. Everything is sorted (students,
notebooks, questions in solution order), so two runs with the same results give identical files.

Free-text CSV fields that start with ``= + - @`` get a leading ``'`` so that a spreadsheet shows
them as text instead of evaluating them as formulas (a student controls those texts).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from handbook.course.grading.submissions import NOTEBOOK_NOTE, Solution, Submission, is_unanswered

STATUSES = ("pass", "fail", "error", "timeout", "missing", "manual")
AUTO_STATUSES = ("pass", "fail", "error", "timeout")
GRADES_HEADER = ["student", "notebook", "question", "points", "max_points", "status", "message"]
MANUAL_HEADER = ["student", "notebook", "question", "max_points", "answer", "points", "comment"]
MAX_MESSAGE_CHARS = 4000      # a traceback or a student's exception text is cut beyond this
MAX_ANSWER_CHARS = 30000      # a spreadsheet cell holds 32,767 characters; feedback shows as much
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Row:
    """One line of the gradebook. ``points`` is None for a written answer not graded yet."""

    student: str
    notebook: str
    question: str
    points: float | None
    max_points: float
    status: str
    message: str
    comment: str = ""   # the instructor's comment on a written answer (manual.csv), shown to the student


@dataclass
class Mark:
    """A manual grade read from the instructor's manual.csv."""

    points: float | None
    comment: str = ""
    answer: str = ""
    row: int = 0


@dataclass
class Graded:
    """One student's notebook, graded: its rows in solution order, and how the run went.

    ``ran`` is True when the checker ran the notebook; ``failure`` says why the grader itself
    could not (a checker crash or hang), as opposed to a submission that could not be read.
    """

    submission: Submission
    solution: Solution
    rows: list[Row]
    ran: bool
    failure: str | None = None
    warnings: list[str] = field(default_factory=list)


# ---- text helpers -----------------------------------------------------------------------------

def clean_text(text, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Any value as text that is safe to write as UTF-8 (no lone surrogates, no NUL), cut at ``limit``."""
    text = str(text).encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(text) > limit:
        text = text[:limit] + f"\n[... {len(text) - limit} more characters not shown]"
    return text


def spreadsheet_safe(text: str) -> str:
    """Free text that a spreadsheet will not evaluate as a formula."""
    return "'" + text if text.startswith(FORMULA_START) else text


def _unsafe(text: str) -> str:
    """Undo ``spreadsheet_safe`` on text read back from our own CSV."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_START) else text


def format_points(value: float | None) -> str:
    """Points as written in the CSV files: "" for none, "3" rather than "3.0", at most 4 decimals."""
    if value is None:
        return ""
    value = round(float(value), 4)
    return str(int(value)) if value == int(value) else f"{value:.4f}".rstrip("0")


# ---- assembling rows --------------------------------------------------------------------------

def _with_notes(message: str, submission: Submission, grade_ids) -> str:
    """The message, followed by the submission's notes about these cells, one per line."""
    lines = [message] if message else []
    lines += [f"note: {n}" for gid in grade_ids for n in submission.notes.get(gid, [])]
    return clean_text("\n".join(lines))


def assemble(solution: Solution, submission: Submission, results: list[dict] | None = None,
             failure: str | None = None, marks: dict | None = None) -> Graded:
    """The gradebook rows of one submission, from the checker's results and the manual marks.

    ``results`` are the checker's dicts (already validated by the caller); ``failure`` says why
    there are none for a readable submission. A question with no result is an ``error``, never a
    pass: the grader only gives points it has positively confirmed.
    """
    marks = marks or {}
    rows: list[Row] = []
    warnings: list[str] = []
    by_question = {r["question"]: r for r in results or []}
    failure = failure or _grader_problem(results)
    key = (submission.student, submission.notebook)
    for q in solution.questions:
        row = Row(submission.student, submission.notebook, q.grade_id, 0.0, q.max_points, "", "")
        if not submission.ok:
            row.status, row.message = submission.status, clean_text(submission.message)
        elif q.kind == "auto":
            result = by_question.get(q.grade_id)
            if result is None:
                reason = failure or "the checker returned no result for this question"
                row.status, row.message = "error", f"not graded: {reason}"
            else:
                row.status = result["status"]
                row.points = float(result["points"]) if row.status == "pass" else 0.0
                row.message = result.get("message", "")
            row.message = _with_notes(row.message, submission, q.answer_ids + (q.grade_id,))
        elif is_unanswered(submission, solution, q.grade_id):
            row.status = "missing"
            row.message = _with_notes("not answered", submission, q.answer_ids + (q.grade_id,))
        else:
            mark = marks.get(key + (q.grade_id,))
            row.status, row.points = "manual", None
            row.message = "to be graded by hand (manual.csv)"
            row.comment = mark.comment if mark is not None else ""
            if mark is not None and mark.points is not None:
                row.points = mark.points
                row.message = mark.comment or "graded by hand"
                if mark.answer and _normalised(mark.answer) != _normalised(_answer_cell(submission, q.grade_id)):
                    warnings.append(f"{submission.student}/{submission.notebook} {q.grade_id}: the written answer "
                                    "differs from the one in the manual file (resubmitted?); its points were kept")
            row.message = _with_notes(row.message, submission, (q.grade_id,))
        rows.append(row)
    for mark_key, mark in sorted(marks.items()):
        if mark_key[:2] == key and mark.points is not None:
            row = next(r for r in rows if r.question == mark_key[2])
            if row.status != "manual":
                warnings.append(f"{'/'.join(mark_key)}: manual points ignored, the answer is {row.status} in this run")
    ran = submission.ok and failure is None
    return Graded(submission, solution, rows, ran, failure if submission.ok else None, warnings)


def _grader_problem(results: list[dict] | None) -> str | None:
    """The checker's own failure when it reports one for every question (say, no kernel started).

    The checker marks those messages "grader problem: ..."; the questions stay ``error`` either
    way, this only makes the run count them as the grader's failure (and exit with status 1).
    """
    if results and all(r["status"] == "error" and r.get("message", "").startswith("grader problem") for r in results):
        return results[0]["message"]
    return None


def _answer_cell(submission: Submission, grade_id: str) -> str:
    return clean_text(submission.written.get(grade_id, ""), MAX_ANSWER_CHARS)


def _normalised(text: str) -> str:
    # Spreadsheets change line endings and trailing spaces; compare the words only.
    return " ".join(_unsafe(text).split())


# ---- grades.csv, totals.csv -------------------------------------------------------------------

def grades_table(graded: list[Graded]) -> list[list[str]]:
    table = [GRADES_HEADER]
    for g in graded:
        for r in g.rows:
            table.append([r.student, r.notebook, r.question, format_points(r.points), format_points(r.max_points),
                          r.status, spreadsheet_safe(r.message)])
    return table


def totals_table(graded: list[Graded], students: list[str], notebooks: list[str]) -> list[list[str]]:
    """One row per student: total points (manual points once merged), max, written answers left."""
    header = ["student", "points", "max_points", "ungraded_manual"]
    for name in notebooks:
        header += [f"{name}.points", f"{name}.max_points"]
    table = [header]
    for student in students:
        mine = {g.submission.notebook: g for g in graded if g.submission.student == student}
        per_notebook: list[str] = []
        points = max_points = 0.0
        pending = 0
        for name in notebooks:
            rows = mine[name].rows if name in mine else []
            nb_points = sum(r.points or 0.0 for r in rows)
            nb_max = sum(r.max_points for r in rows)
            pending += sum(r.points is None for r in rows)
            points, max_points = points + nb_points, max_points + nb_max
            per_notebook += [format_points(nb_points), format_points(nb_max)]
        table.append([student, format_points(points), format_points(max_points), str(pending)] + per_notebook)
    return table


# ---- manual grading ---------------------------------------------------------------------------

def manual_table(graded: list[Graded]) -> list[list[str]]:
    """The written answers to grade by hand, with the points (and comments) merged so far."""
    table = [MANUAL_HEADER]
    for g in graded:
        for r in g.rows:
            if r.status != "manual":
                continue
            table.append([r.student, r.notebook, r.question, format_points(r.max_points),
                          spreadsheet_safe(_answer_cell(g.submission, r.question)), format_points(r.points),
                          spreadsheet_safe(r.comment)])
    return table


def read_manual(path: str | Path, solutions: dict[str, Solution], students: list[str]) -> dict[tuple, Mark]:
    """The instructor's marks, by (student, notebook, question), every row checked first.

    An empty ``points`` cell means "not graded yet". Every problem (unknown student or question,
    points that are not a number or not within 0..max_points, a repeated row) is collected and
    reported at once in one ValueError naming the file and the spreadsheet row, before anything
    is graded: a typo found after half an hour of grading helps nobody.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manual: {path} is not a file")
    written = {s.name: {q.grade_id: q for q in s.questions if q.kind == "manual"} for s in solutions.values()}
    marks: dict[tuple, Mark] = {}
    seen: dict[tuple, int] = {}
    errors: list[str] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: spreadsheets add a BOM
            reader = csv.DictReader(handle)
            missing = [c for c in ("student", "notebook", "question", "points") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"manual: {path} lacks the column(s) {', '.join(missing)} "
                                 f"(expected {', '.join(MANUAL_HEADER)})")
            for number, record in enumerate(reader, start=2):  # row 1 is the header, as a spreadsheet counts
                key = tuple((record.get(c) or "").strip() for c in ("student", "notebook", "question"))
                where = f"row {number} ({', '.join(key)})"
                problem = _check_mark(key, record.get("points"), students, written)
                if problem:
                    errors.append(f"{where}: {problem}")
                    continue
                if key in seen:
                    errors.append(f"{where}: repeats row {seen[key]}")
                    continue
                seen[key] = number
                text = (record.get("points") or "").strip()
                marks[key] = Mark(float(text) if text else None, _unsafe((record.get("comment") or "").strip()),
                                  record.get("answer") or "", number)
    except UnicodeDecodeError:
        raise ValueError(f"manual: {path} is not UTF-8 text (save it from the spreadsheet as CSV UTF-8)") from None
    except csv.Error as error:
        raise ValueError(f"manual: {path} is not a readable CSV file: {error}") from None
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise ValueError(f"manual: {len(errors)} problem(s) in {path}:\n  " + "\n  ".join(shown))
    return marks


def _check_mark(key: tuple, points, students: list[str], written: dict) -> str | None:
    student, notebook, question = key
    if student not in students:
        return f"unknown student {student!r} (no such folder in the submissions)"
    if notebook not in written:
        return f"unknown notebook {notebook!r} (expected one of {', '.join(sorted(written))})"
    if question not in written[notebook]:
        return f"{question!r} is not a written answer of {notebook}"
    text = (points or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return f"points {text!r} is not a number (use a dot for decimals)"
    maximum = written[notebook][question].max_points
    if not math.isfinite(value) or value < 0 or value > maximum:
        return f"points {text} must be between 0 and max_points {format_points(maximum)}"
    return None


# ---- feedback HTML ----------------------------------------------------------------------------

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #f6f6f8; margin: 0; }
main { max-width: 920px; margin: 0 auto; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.15em; margin: 0 0 8px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
h3 { font-size: 0.95em; margin: 14px 0 4px; color: #555; }
.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 20px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e3e8; }
section { background: #fff; border: 1px solid #e3e3e8; border-radius: 8px; padding: 16px; margin-bottom: 16px; }
pre { background: #f3f3f6; border-radius: 6px; padding: 10px; overflow-x: auto; white-space: pre-wrap;
      word-break: break-word; font: 13px/1.45 ui-monospace, "SF Mono", Menlo, Consolas, monospace; margin: 0; }
.badge { font-size: 0.75em; font-weight: 600; padding: 2px 8px; border-radius: 10px; text-transform: uppercase; }
.pass { background: #d8f3dc; color: #1b5e20; } .fail { background: #ffe0e0; color: #9b1c1c; }
.error, .timeout { background: #fff0d6; color: #8a4b00; } .missing { background: #eceff1; color: #455a64; }
.manual { background: #e3ecff; color: #1a3d8f; }
.points { margin-left: auto; font-weight: 600; } .note { color: #555; font-size: 0.92em; margin: 6px 0 0; }
.problem { border-color: #f0b5b5; background: #fff7f7; }
"""


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def _points_text(row: Row) -> str:
    got = "?" if row.points is None else format_points(row.points)
    return f"{got} / {format_points(row.max_points)}"


def feedback_html(g: Graded) -> str:
    """The feedback page of one notebook: self-contained (inline CSS, no scripts, no links out).

    Every text from the submission or the grader goes through ``html.escape``; a restrictive
    Content-Security-Policy is a second line of defence should anything slip through.
    """
    sub, sol = g.submission, g.solution
    e = html.escape
    auto = [r for r in g.rows if sol.question(r.question).kind == "auto"]
    manual = [r for r in g.rows if sol.question(r.question).kind == "manual"]
    pending = sum(r.points is None for r in g.rows)
    got = sum(r.points or 0.0 for r in g.rows)
    total = sum(r.max_points for r in g.rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(sol.name)}: feedback for {e(sub.student)}</title>",
        f"<style>{STYLE}</style></head><body><main>",
        f"<h1>{e(sol.name)}</h1>",
        f'<p class="meta">Student: <strong>{e(sub.student)}</strong> &middot; points: <strong>'
        f"{e(format_points(got))} / {e(format_points(total))}</strong> &middot; automatic checks: "
        f"{e(format_points(sum(r.points or 0.0 for r in auto)))} / {e(format_points(sum(r.max_points for r in auto)))}"
        f" &middot; written answers: {len(manual)}"
        + (f" ({pending} still to be graded by hand)" if pending else "") + "</p>",
    ]
    if not sub.ok:
        parts.append(f'<section class="problem"><h2>This notebook could not be graded</h2>{_pre(sub.message)}</section>')
    notes = sub.notes.get(NOTEBOOK_NOTE, [])
    if notes:
        parts.append("".join(f'<p class="note">Note: {e(n)}</p>' for n in notes))
    parts.append("<table><tr><th>question</th><th>result</th><th>points</th></tr>")
    for r in g.rows:
        parts.append(f'<tr><td>{e(r.question)}</td><td><span class="badge {e(r.status)}">{e(r.status)}</span></td>'
                     f"<td>{e(_points_text(r))}</td></tr>")
    parts.append("</table>")
    for r in g.rows:
        parts.append(_question_html(g, r))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _question_html(g: Graded, row: Row) -> str:
    e = html.escape
    q = g.solution.question(row.question)
    out = [f"<section><h2>{e(q.grade_id)} <span class=\"badge {e(row.status)}\">{e(row.status)}</span>"
           f'<span class="points">{e(_points_text(row))}</span></h2>']
    if q.kind == "auto":
        about = "An automatic check of your code."
        if q.hidden_tests:
            # Named and scored with the check, never shown: showing them would hand out the tests.
            about += (f" It includes hidden tests: the grader runs them together with the public checks of "
                      f"{e(q.grade_id)}, and they count toward its {e(format_points(q.max_points))} point(s); "
                      "their code is not shown.")
        out.append(f'<p class="note">{about}</p>')
    else:
        out.append('<p class="note">A written answer, graded by hand.</p>')
        if row.question in g.submission.written:
            out.append("<h3>Your answer</h3>" + _pre(_answer_cell(g.submission, row.question)))
    for answer_id in q.answer_ids:   # a check's functions, or the experiment a written answer reads
        if answer_id in g.submission.answers:
            title = "Your code" if q.kind == "auto" else "Your experiment"
            out.append(f"<h3>{title} ({e(answer_id)})</h3>"
                       + _pre(clean_text(g.submission.answers[answer_id], MAX_ANSWER_CHARS)))
    if row.message:
        out.append("<h3>Result</h3>" + _pre(row.message))
    out.append("</section>")
    return "".join(out)


# ---- Gradescope -------------------------------------------------------------------------------

def gradescope_results(student: str, graded: list[Graded]) -> dict:
    """Gradescope's autograder ``results.json`` for one student, all notebooks together.

    Written answers still to be graded by hand are left out (Gradescope grades those itself, or
    they arrive through ``--manual``); they are counted in the top-level output.
    """
    tests = []
    pending = 0
    for g in graded:
        for r in g.rows:
            if r.points is None:
                pending += 1
                continue
            tests.append({
                "name": f"{r.notebook}: {r.question}",
                "score": _number(r.points),
                "max_score": _number(r.max_points),
                "status": "passed" if r.points >= r.max_points else "failed",
                "output": f"{r.status}: {r.message}" if r.message else r.status,
                "visibility": "visible",
            })
    score = sum(t["score"] for t in tests)
    output = f"{format_points(score)} point(s) from {len(tests)} graded question(s)"
    if pending:
        output += f"; {pending} written answer(s) still to be graded by hand"
    return {"score": _number(score), "output": output, "tests": tests}


def _number(value: float) -> float | int:
    value = round(float(value), 4)
    return int(value) if value == int(value) else value


# ---- summary ----------------------------------------------------------------------------------

def summary(graded: list[Graded], students: list[str], ignored: list[str] = (), out: str | Path = "") -> dict:
    """The end-of-run figures: how many submissions ran, failed to run, were missing; mean points."""
    per_question: dict[str, dict[str, dict]] = {}
    for g in graded:
        for r in g.rows:
            entry = per_question.setdefault(r.notebook, {}).setdefault(
                r.question, {"points": [], "max_points": r.max_points})
            if r.points is not None:
                entry["points"].append(r.points)
    means = {
        nb: {q: {"mean": round(sum(e["points"]) / len(e["points"]), 4) if e["points"] else None,
                 "max_points": _number(e["max_points"]), "graded": len(e["points"])}
             for q, e in questions.items()}
        for nb, questions in per_question.items()
    }
    return {
        "students": len(students),
        "submissions": len(graded),
        "graded": sum(g.ran for g in graded),
        "failed_to_run": sum(g.submission.status == "error" or g.failure is not None for g in graded),
        "grader_failures": sum(g.failure is not None for g in graded),
        "missing": sum(g.submission.status == "missing" for g in graded),
        "ungraded_manual": sum(r.points is None for g in graded for r in g.rows),
        "mean_points": means,
        "ignored": list(ignored),
        "warnings": [w for g in graded for w in g.warnings],
        "out": str(out),
    }


def format_summary(s: dict) -> str:
    lines = [
        f"Graded {s['submissions']} submission(s) of {s['students']} student(s): {s['graded']} ran, "
        f"{s['failed_to_run']} failed to run, {s['missing']} missing.",
    ]
    if s["grader_failures"]:
        lines.append(f"  {s['grader_failures']} of them because the grader itself failed (see the messages in grades.csv).")
    lines.append("Mean points per question:")
    width = max((len(q) for qs in s["mean_points"].values() for q in qs), default=8)
    for nb, questions in s["mean_points"].items():
        for q, e in questions.items():
            mean = "-" if e["mean"] is None else f"{e['mean']:.2f}"
            lines.append(f"  {nb}  {q:<{width}}  {mean:>6} / {e['max_points']}  ({e['graded']} graded)")
    if s["ungraded_manual"]:
        lines.append(f"{s['ungraded_manual']} written answer(s) to grade by hand: fill in the points of manual.csv "
                     "and run again with --manual.")
    sandbox = s.get("sandbox") or {}
    if sandbox.get("runs"):
        lines.append(f"Student code ran confined by Landlock in {sandbox['landlock']} of {sandbox['runs']} kernel(s).")
        if sandbox.get("warning"):
            lines.append(f"warning: {sandbox['warning']}")
    lines += [f"ignored: {line}" for line in s["ignored"]]
    lines += [f"warning: {line}" for line in s["warnings"]]
    if s["out"]:
        lines.append(f"Wrote grades.csv, totals.csv, manual.csv, feedback/ and results/ in {s['out']}")
    return "\n".join(lines)


# ---- writing ----------------------------------------------------------------------------------

def _fresh_dir(path: Path) -> None:
    """Delete ``path`` (a folder, a file or a link: whatever was planted there) and recreate it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def _write_new(path: Path, text: str) -> None:
    """Write a new file; an existing one (or a planted link) is removed first, never written through."""
    if path.is_symlink() or path.exists():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    with open(path, "x", encoding="utf-8", newline="") as handle:
        handle.write(text)


def _csv_text(table: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerows(table)
    return buffer.getvalue()


def write_outputs(out: str | Path, graded: list[Graded], students: list[str], notebooks: list[str]) -> None:
    """Write every output file of a run into ``out`` from the in-memory results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graded = sorted(graded, key=lambda g: (g.submission.student, g.submission.notebook))
    _write_new(out / "grades.csv", _csv_text(grades_table(graded)))
    _write_new(out / "totals.csv", _csv_text(totals_table(graded, students, notebooks)))
    _write_new(out / "manual.csv", _csv_text(manual_table(graded)))
    for folder in ("feedback", "results"):
        _fresh_dir(out / folder)
    for student in students:
        mine = [g for g in graded if g.submission.student == student]
        (out / "feedback" / student).mkdir()
        for g in mine:
            _write_new(out / "feedback" / student / f"{g.submission.notebook}.html", feedback_html(g))
        (out / "results" / student).mkdir()
        text = json.dumps(gradescope_results(student, mine), indent=2, ensure_ascii=False) + "\n"
        _write_new(out / "results" / student / "results.json", text)
