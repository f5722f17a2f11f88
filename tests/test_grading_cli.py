"""The grader's main process: discovery and validation, reports, manual merge, the command.

Most tests replace the checker subprocess by ``fake_runner`` (a question passes when its answer
cells are the solution's own), which keeps them fast and independent of the student kernel;
``test_end_to_end`` runs the real thing, ``python -m handbook grade`` with the real checker.
"""

from __future__ import annotations

import copy
import csv
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest

from handbook.course.grading import cli, report
from handbook.course.grading.submissions import Submission, discover, load_solutions, read_submission
from handbook.course.notebooks import BEGIN_HIDDEN, END_HIDDEN, nbgrader_meta

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_introduction"
NB = CHAPTER + ".ipynb"
# These tests grade chapter 1 only. A solutions folder that holds just that chapter keeps the
# expected gradebooks (rows, totals, maximum points) fixed as the course gains chapters.
SOLUTIONS = Path(tempfile.mkdtemp(prefix="handbook-test-solutions-"))
shutil.copyfile(ROOT / "solutions" / NB, SOLUTIONS / NB)
NASTY = 'AssertionError: expected 1,5 "exactly", got 2\nsecond line, with, commas'


@pytest.fixture(scope="module")
def solutions():
    return load_solutions(SOLUTIONS)


@pytest.fixture(scope="module")
def solution(solutions):
    return solutions[NB]


def _answer_sources(job) -> dict[str, str]:
    return {nbgrader_meta(c).get("grade_id"): "".join(c["source"]) for c in job["solution"]["cells"]
            if nbgrader_meta(c).get("grade_id")}


def fake_runner(job, timeout):
    """Stands in for the checker: pass when every answer cell of a check is the model answer."""
    reference = _answer_sources(job)
    answer_ids, pending = {}, []
    for cell in job["solution"]["cells"]:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and cell["cell_type"] == "code":
            pending.append(meta["grade_id"])
        if meta.get("grade") and cell["cell_type"] == "code":
            answer_ids[meta["grade_id"]] = (pending, meta["points"])
            pending = []
    results = []
    for sub in job["submissions"]:
        questions = []
        for grade_id, (ids, points) in answer_ids.items():
            good = all(sub["answers"].get(i) == reference[i] for i in ids)
            questions.append({"question": grade_id, "points": points if good else 0, "max_points": points,
                              "status": "pass" if good else "fail", "message": "" if good else NASTY})
        results.append({"id": sub["id"], "questions": questions})
    return {"results": results}


def _notebook(solution) -> dict:
    return copy.deepcopy(solution.notebook)


def _cell(nb: dict, grade_id: str) -> dict:
    return next(c for c in nb["cells"] if nbgrader_meta(c).get("grade_id") == grade_id)


def _put(root: Path, student: str, content) -> Path:
    """SUBMISSIONS/<student>/01_introduction.ipynb with ``content`` (bytes, str or a notebook dict)."""
    folder = root / student
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NB
    if isinstance(content, dict):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode("utf-8")
    if content is not None:
        path.write_bytes(content)
    return path


def _read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _rows(out: Path, student: str) -> dict[str, dict]:
    return {r["question"]: r for r in _read_csv(out / "grades.csv") if r["student"] == student}


@pytest.fixture
def small_batch(tmp_path, solution):
    """alice: the solution as is; bob: the handout unchanged; carol: corrupt JSON; dave: nothing."""
    subs = tmp_path / "subs"
    _put(subs, "alice", (SOLUTIONS / NB).read_bytes())
    _put(subs, "bob", (ROOT / "chapters" / NB).read_bytes())
    _put(subs, "carol", '{"nbformat": 4, "cells": [')
    (subs / "dave").mkdir()
    return subs


def _grade(subs, out, **kwargs):
    kwargs.setdefault("runner", fake_runner)
    return cli.grade_batch(subs, SOLUTIONS, out, progress=False, **kwargs)


# ---- solutions --------------------------------------------------------------------------------

def test_solution_questions_in_cell_order(solution):
    assert [(q.grade_id, q.kind, q.max_points) for q in solution.questions] == [
        ("ex1_kl_check", "auto", 3), ("ex1_kl_written", "manual", 1),
        ("ex2_reparam_check", "auto", 3), ("ex2_reparam_written", "manual", 1),
        ("ex3_colour_check", "auto", 2), ("ex3_colour_written", "manual", 1)]
    assert solution.question("ex1_kl_check").answer_ids == ("ex1_kl_answer",)
    assert all(q.hidden_tests for q in solution.questions if q.kind == "auto")
    assert solution.max_points == 11


def test_bad_solutions_folder_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="solutions: .* is not a folder"):
        load_solutions(tmp_path / "nope")
    with pytest.raises(ValueError, match="solutions: no .ipynb"):
        load_solutions(tmp_path)


# ---- reading submissions ----------------------------------------------------------------------

def test_each_broken_file_gets_its_status_and_message(tmp_path, solution, solutions):
    subs = tmp_path / "subs"
    good = (SOLUTIONS / NB).read_text(encoding="utf-8")
    v3 = nbformat.writes(nbformat.convert(nbformat.reads(good, as_version=4), 3), version=3)
    huge = _notebook(solution)
    huge["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x" * 3_000_000}]
    cases = {
        "a_good": (good, "ok", ""),
        "b_missing": (None, "missing", "01_introduction.ipynb was not submitted"),
        "c_empty": (b"", "error", "is empty (0 bytes)"),
        "d_blank": (b" \n\t\n", "error", "empty (only white space)"),
        "e_latin1": (b'{"nbformat": 4, "cells": [], "x": "caf\xe9"}', "error", "not UTF-8 text (byte 0xe9"),
        "f_corrupt": (good[: len(good) // 2], "error", "corrupt JSON (line"),
        "g_list": (b"[1, 2, 3]", "error", "not a Jupyter notebook"),
        "h_v5": ({"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}, "error",
                 "nbformat version 5 is not supported"),
        "i_v3": (v3, "ok", ""),
        "j_huge": (json.dumps(huge), "error", "over the 2.0 MB limit"),
        "k_nocells": ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "none"}, "error", "no list of cells"),
    }
    for student, (content, _, _) in cases.items():
        _put(subs, student, content)
    os.symlink(SOLUTIONS / NB, _put(subs, "l_link", None))
    cases["l_link"] = (None, "error", "is a symbolic link")
    (subs / "m_folder" / NB).mkdir(parents=True)
    cases["m_folder"] = (None, "error", "not a regular file")
    (subs / "a_good" / "02_other.ipynb").write_text("{}")
    (subs / "stray.txt").write_text("x")

    batch = discover(subs, solutions, max_bytes=2 * 1024 * 1024)
    assert batch.students == sorted(cases)
    got = {s.student: s for s in batch.submissions}
    for student, (_, status, message) in cases.items():
        assert got[student].status == status, (student, got[student].message)
        assert message in got[student].message, (student, got[student].message)
    assert set(got["a_good"].answers) == {"ex1_kl_answer", "ex1_kl_experiment", "ex2_reparam_answer",
                                          "ex2_reparam_experiment", "ex3_colour_answer", "ex3_colour_experiment"}
    assert set(got["a_good"].written) == {"ex1_kl_written", "ex2_reparam_written", "ex3_colour_written"}
    assert got["i_v3"].answers == got["a_good"].answers
    assert got["i_v3"].notes[""] == ["converted from nbformat version 3 to 4"]
    assert any("02_other.ipynb: no solution notebook" in line for line in batch.ignored)
    assert any("stray.txt" in line for line in batch.ignored)


def test_answers_are_taken_by_grade_id_first_copy_wins(tmp_path, solution):
    nb = _notebook(solution)
    # Only the answer cells of the functions: the experiment cells are left out (their absence is noted).
    nb["cells"] = [c for c in nb["cells"] if not str(nbgrader_meta(c).get("grade_id")).endswith("_experiment")]
    first = _cell(nb, "ex1_kl_answer")
    copy_ = copy.deepcopy(first)
    copy_["source"] = "def kl_gaussians(*args):\n    return 0.0\n"
    nb["cells"].insert(nb["cells"].index(first) + 1, copy_)
    nb["cells"].remove(_cell(nb, "ex2_reparam_answer"))                  # deleted answer
    _cell(nb, "ex3_colour_answer")["cell_type"] = "markdown"             # answer turned into markdown
    _cell(nb, "ex3_colour_answer").pop("outputs", None)
    _cell(nb, "ex3_colour_answer").pop("execution_count", None)
    _cell(nb, "ex1_kl_check")["source"] = "assert True"                  # edited test: never used
    nb["cells"].append(copy.deepcopy(_cell(nb, "ex1_kl_check")))        # duplicated test: never used
    _cell(nb, "ex1_kl_written")["source"] = "My <b>own</b> words."
    sub = read_submission(_put(tmp_path, "eve", nb), solution, "eve")
    assert sub.ok
    assert sub.answers == {"ex1_kl_answer": "".join(first["source"])}
    assert "repeats grade_id ex1_kl_answer; the first one was graded" in sub.notes["ex1_kl_answer"][0]
    assert "missing from the submission" in sub.notes["ex2_reparam_answer"][0]
    assert "is a markdown cell, not code" in sub.notes["ex3_colour_answer"][0]
    assert sub.written["ex1_kl_written"] == "My <b>own</b> words."
    assert "ex1_kl_check" not in sub.answers and "ex1_kl_check" not in sub.notes


def test_unchanged_handout_is_noted_and_written_answers_are_missing(small_batch, tmp_path):
    _grade(small_batch, tmp_path / "out")
    bob = _rows(tmp_path / "out", "bob")
    assert bob["ex1_kl_written"]["status"] == "missing" and bob["ex1_kl_written"]["points"] == "0"
    assert "unchanged from the handout" in bob["ex1_kl_check"]["message"]


# ---- the gradebook ----------------------------------------------------------------------------

def test_grades_csv_rows_statuses_and_order(small_batch, tmp_path):
    out = tmp_path / "out"
    result = _grade(small_batch, out)
    rows = _read_csv(out / "grades.csv")
    assert list(rows[0]) == report.GRADES_HEADER
    questions = ["ex1_kl_check", "ex1_kl_written", "ex2_reparam_check", "ex2_reparam_written",
                 "ex3_colour_check", "ex3_colour_written"]
    assert [(r["student"], r["question"]) for r in rows] == [(s, q) for s in ("alice", "bob", "carol", "dave")
                                                             for q in questions]
    alice = _rows(out, "alice")
    assert [alice[q]["status"] for q in questions] == ["pass", "manual"] * 3
    assert alice["ex1_kl_check"]["points"] == "3" and alice["ex1_kl_written"]["points"] == ""
    assert {r["status"] for r in _rows(out, "carol").values()} == {"error"}
    assert "corrupt JSON" in _rows(out, "carol")["ex1_kl_check"]["message"]
    assert {r["status"] for r in _rows(out, "dave").values()} == {"missing"}
    assert (result["submissions"], result["graded"], result["failed_to_run"], result["missing"]) == (4, 2, 1, 1)
    assert result["mean_points"][CHAPTER]["ex1_kl_check"] == {"mean": 0.75, "max_points": 3, "graded": 4}


def test_csv_quoting_round_trips_and_defuses_formulas(small_batch, tmp_path):
    out = tmp_path / "out"
    _grade(small_batch, out)
    message = _rows(out, "bob")["ex1_kl_check"]["message"]
    assert message.startswith(NASTY + "\nnote: ")
    with open(out / "grades.csv", encoding="utf-8", newline="") as handle:
        raw = list(csv.reader(handle))
    assert all(len(row) == 7 for row in raw)

    def formula_runner(job, timeout):
        answer = fake_runner(job, timeout)
        for entry in answer["results"]:
            for q in entry["questions"]:
                q["message"] = '=HYPERLINK("http://evil", "x")'
        return answer

    _grade(small_batch, out, runner=formula_runner)
    assert _rows(out, "alice")["ex1_kl_check"]["message"] == '\'=HYPERLINK("http://evil", "x")'
    assert report.spreadsheet_safe("-1 is wrong") == "'-1 is wrong" and report.spreadsheet_safe("ok") == "ok"


def test_totals(small_batch, tmp_path):
    out = tmp_path / "out"
    _grade(small_batch, out)
    totals = {r["student"]: r for r in _read_csv(out / "totals.csv")}
    assert list(totals) == ["alice", "bob", "carol", "dave"]
    assert totals["alice"] == {"student": "alice", "points": "8", "max_points": "11", "ungraded_manual": "3",
                               f"{CHAPTER}.points": "8", f"{CHAPTER}.max_points": "11"}
    assert (totals["bob"]["points"], totals["bob"]["ungraded_manual"]) == ("0", "0")
    assert totals["dave"]["max_points"] == "11"


def test_feedback_escapes_answers_and_never_shows_hidden_tests(tmp_path, solution):
    subs = tmp_path / "subs"
    nb = _notebook(solution)
    _cell(nb, "ex1_kl_answer")["source"] = "x = '</pre><script>alert(\"pwned\")</script>'\n"
    _cell(nb, "ex1_kl_written")["source"] = "<img src=x onerror=alert(1)> & more"
    _put(subs, "mallory", nb)
    _put(subs, "alice", (SOLUTIONS / NB).read_bytes())
    out = tmp_path / "out"
    _grade(subs, out)
    hidden = []
    for cell in solution.notebook["cells"]:
        source = "".join(cell["source"])
        if BEGIN_HIDDEN in source:
            region = source.split(BEGIN_HIDDEN)[1].split(END_HIDDEN)[0]
            hidden += [line.strip() for line in region.splitlines() if len(line.strip()) > 12]
    assert len(hidden) > 10
    for student in ("mallory", "alice"):
        page = (out / "feedback" / student / f"{CHAPTER}.html").read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>") and "default-src 'none'" in page
        assert "<script" not in page and "<img" not in page
        for line in hidden:
            assert line not in page and html.escape(line) not in page, line
        for q in solution.questions:
            assert q.grade_id in page
    page = (out / "feedback" / "mallory" / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert "&lt;/pre&gt;&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; more" in page
    assert "It includes hidden tests" in page


def test_gradescope_results_shape(small_batch, tmp_path):
    out = tmp_path / "out"
    _grade(small_batch, out)
    alice = json.loads((out / "results" / "alice" / "results.json").read_text())
    assert set(alice) == {"score", "output", "tests"}
    assert alice["score"] == 8 and "3 written answer(s) still to be graded" in alice["output"]
    assert [t["name"] for t in alice["tests"]] == [f"{CHAPTER}: ex{i}_{n}_check" for i, n in
                                                   ((1, "kl"), (2, "reparam"), (3, "colour"))]
    for test in alice["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] == "passed" and test["visibility"] == "visible"
    bob = json.loads((out / "results" / "bob" / "results.json").read_text())
    assert bob["score"] == 0 and len(bob["tests"]) == 6
    assert {t["status"] for t in bob["tests"]} == {"failed"}
    assert sum(t["score"] for t in bob["tests"]) == bob["score"]


# ---- manual grading ---------------------------------------------------------------------------

def _fill(manual: Path, points: dict[str, str], comments: dict[str, str] = {}) -> None:
    rows = _read_csv(manual)
    for row in rows:
        row["points"] = points.get(row["question"], row["points"])
        row["comment"] = comments.get(row["question"], row["comment"])
    with open(manual, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=report.MANUAL_HEADER)
        writer.writeheader()
        writer.writerows(rows)


def test_manual_collect_and_merge(small_batch, tmp_path):
    out = tmp_path / "out"
    _grade(small_batch, out)
    manual = _read_csv(out / "manual.csv")
    assert list(manual[0]) == report.MANUAL_HEADER
    assert [(r["student"], r["question"], r["points"]) for r in manual] == [
        ("alice", "ex1_kl_written", ""), ("alice", "ex2_reparam_written", ""), ("alice", "ex3_colour_written", "")]
    assert manual[0]["answer"].startswith("**Model answer.**") and manual[0]["max_points"] == "1"

    filled = tmp_path / "manual.csv"
    shutil.copy(out / "manual.csv", filled)
    comment = '=good, but "why", exactly?\nSee section 5.'
    _fill(filled, {"ex1_kl_written": "1", "ex2_reparam_written": "0.5"}, {"ex2_reparam_written": comment})
    result = _grade(small_batch, out, manual=filled)
    alice = _rows(out, "alice")
    assert (alice["ex1_kl_written"]["points"], alice["ex1_kl_written"]["status"]) == ("1", "manual")
    assert alice["ex2_reparam_written"]["points"] == "0.5"
    assert alice["ex2_reparam_written"]["message"].startswith("'" + comment)
    assert alice["ex3_colour_written"]["points"] == ""
    totals = {r["student"]: r for r in _read_csv(out / "totals.csv")}
    assert (totals["alice"]["points"], totals["alice"]["ungraded_manual"]) == ("9.5", "1")
    assert result["ungraded_manual"] == 1
    # The rewritten manual.csv keeps the marks, so the instructor can go on filling it in.
    again = {r["question"]: r for r in _read_csv(out / "manual.csv")}
    assert again["ex2_reparam_written"]["points"] == "0.5"
    assert report.read_manual(out / "manual.csv", load_solutions(SOLUTIONS), ["alice", "bob"])[
        ("alice", CHAPTER, "ex2_reparam_written")].comment == comment
    scored = json.loads((out / "results" / "alice" / "results.json").read_text())
    assert scored["score"] == 9.5 and len(scored["tests"]) == 5
    page = (out / "feedback" / "alice" / f"{CHAPTER}.html").read_text(encoding="utf-8")
    assert "=good, but &quot;why&quot;, exactly?" in page


@pytest.mark.parametrize("row, error", [
    ({"points": "abc"}, r"row 2 \(alice, 01_introduction, ex1_kl_written\): points 'abc' is not a number"),
    ({"points": "1,5"}, "is not a number"),
    ({"points": "2"}, "points 2 must be between 0 and max_points 1"),
    ({"points": "-0.5"}, "must be between 0 and max_points 1"),
    ({"points": "nan"}, "must be between 0"),
    ({"student": "zoe"}, "row 2 .*unknown student 'zoe'"),
    ({"notebook": "99_nothing"}, "unknown notebook '99_nothing'"),
    ({"question": "ex1_kl_check"}, "'ex1_kl_check' is not a written answer of 01_introduction"),
    ({"repeat": True}, "row 3 .*repeats row 2"),
])
def test_manual_bad_rows_are_named(tmp_path, solutions, row, error):
    record = {"student": "alice", "notebook": CHAPTER, "question": "ex1_kl_written", "max_points": "1",
              "answer": "text", "points": "1", "comment": ""}
    repeat = row.pop("repeat", False)
    record.update(row)
    path = tmp_path / "manual.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=report.MANUAL_HEADER)
        writer.writeheader()
        writer.writerows([record, record] if repeat else [record])
    with pytest.raises(ValueError, match="manual: 1 problem") as caught:
        report.read_manual(path, solutions, ["alice", "bob"])
    assert caught.match(error)


def test_manual_file_without_points_column(tmp_path, solutions):
    path = tmp_path / "manual.csv"
    path.write_text("student,notebook,question\nalice,01_introduction,ex1_kl_written\n")
    with pytest.raises(ValueError, match="lacks the column.*points"):
        report.read_manual(path, solutions, ["alice"])


# ---- the run ----------------------------------------------------------------------------------

def test_two_runs_give_identical_files(small_batch, tmp_path):
    outs = [tmp_path / "out1", tmp_path / "out2"]
    for out in outs:
        _grade(small_batch, out, jobs=2)

    def files(root):
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    first, second = files(outs[0]), files(outs[1])
    assert len(first) == 3 + 2 * 4 and first == second


def test_outputs_rewritten_from_memory(small_batch, tmp_path):
    out = tmp_path / "out"
    (out / "feedback" / "mallory").mkdir(parents=True)
    (out / "feedback" / "mallory" / "planted.html").write_text("fake")
    (out / "results" / "alice").mkdir(parents=True)
    (out / "results" / "alice" / "results.json").write_text('{"score": 1000}')
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.symlink(target, out / "grades.csv")
    _grade(small_batch, out)
    assert not (out / "feedback" / "mallory").exists()
    assert json.loads((out / "results" / "alice" / "results.json").read_text())["score"] == 8
    assert target.read_text() == "keep me" and not (out / "grades.csv").is_symlink()


def test_out_folder_must_be_clear_of_inputs(small_batch, tmp_path):
    for out in (small_batch, small_batch / "out", tmp_path, SOLUTIONS / "out"):
        with pytest.raises(ValueError, match="^out: "):
            _grade(small_batch, out)


def test_plan_groups_deals_round_robin(solution):
    subs = [Submission(f"s{i:02d}", CHAPTER, None) for i in range(20)]
    groups = cli.plan_groups(subs, jobs=2)
    assert len(groups) == 3 and all(len(g) <= cli.MAX_PER_CHECKER for _, g in groups)
    assert [s.student for s in groups[0][1]][:3] == ["s00", "s03", "s06"]
    assert sorted(s.student for _, g in groups for s in g) == [s.student for s in subs]
    assert len(cli.plan_groups(subs[:1], jobs=4)) == 1


def test_checker_answers_are_checked_strictly(solution):
    ids = ["a/x", "b/x", "c/x", "d/x", "e/x"]
    good = {"question": "ex1_kl_check", "points": 3, "max_points": 3, "status": "pass", "message": "ok"}
    answer = {"results": [
        {"id": "a/x", "questions": [good]},
        {"id": "b/x", "questions": [dict(good, points=30)]},
        {"id": "c/x", "questions": [dict(good, status="passed!")]},
        {"id": "d/x", "questions": [dict(good, question="import os")]},
    ]}
    got = cli.checked_results(answer, solution, ids)
    assert got["a/x"] == [dict(good, points=3.0, max_points=3.0)]
    assert "points 30" in got["b/x"] and "status 'passed!'" in got["c/x"] and "unknown question" in got["d/x"]
    assert got["e/x"] == "the checker returned no result for this submission"
    with pytest.raises(cli.CheckerFailure):
        cli.checked_results(["not", "a", "dict"], solution, ids)
    with pytest.raises(cli.CheckerFailure):
        cli.checked_results({"results": [{"id": "zzz", "questions": []}]}, solution, ids)


@pytest.mark.parametrize("script, reason", [
    ("import sys; sys.stdin.read(); print('garbage')", "the checker's answer is not JSON"),
    ("import sys; sys.stdin.read(); sys.exit('checker exploded')", "exited with status 1: checker exploded"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed by signal 9 (SIGKILL)"),
    ("import time; time.sleep(60)", "did not finish within 2 s"),
    ("import sys, json; sys.stdin.read(); print(json.dumps({'results': 3}))", "lacks a 'results' list"),
])
def test_a_misbehaving_checker_costs_errors_never_points(monkeypatch, small_batch, tmp_path, script, reason):
    monkeypatch.setattr(cli, "CHECKER_ARGS", ("-c", script))
    monkeypatch.setattr(cli, "checker_timeout", lambda *args: 2.0)
    result = cli.grade_batch(small_batch, SOLUTIONS, tmp_path / "out", jobs=2, progress=False)
    rows = _rows(tmp_path / "out", "alice")
    assert [rows[q]["status"] for q in ("ex1_kl_check", "ex2_reparam_check", "ex3_colour_check")] == ["error"] * 3
    assert reason in rows["ex1_kl_check"]["message"]
    assert rows["ex1_kl_written"]["status"] == "manual"  # written answers are still there to grade
    assert sum(float(r["points"] or 0) for r in rows.values()) == 0
    assert result["grader_failures"] == 2 and result["graded"] == 0


def test_a_checker_failure_costs_only_its_submission(small_batch, tmp_path):
    """One checker process grades alice and bob; it dies on bob: alice is graded again alone."""
    jobs = []

    def dies_on_bob(job, timeout):
        jobs.append([s["id"] for s in job["submissions"]])
        if any(s["id"].startswith("bob/") for s in job["submissions"]):
            raise cli.CheckerFailure("the checker process was killed by signal 9 (SIGKILL)")
        answer = fake_runner(job, timeout)
        for entry in answer["results"]:
            entry["sandbox"] = "landlock ABI 4: writes confined to /tmp/scratch-x"
        return answer

    result = _grade(small_batch, tmp_path / "out", jobs=1, runner=dies_on_bob)
    assert jobs == [[f"alice/{CHAPTER}", f"bob/{CHAPTER}"], [f"alice/{CHAPTER}"], [f"bob/{CHAPTER}"]]
    assert _rows(tmp_path / "out", "alice")["ex1_kl_check"]["status"] == "pass"
    bob = _rows(tmp_path / "out", "bob")["ex1_kl_check"]
    assert bob["status"] == "error" and "killed by signal 9" in bob["message"]
    assert result["grader_failures"] == 1
    assert result["sandbox"] == {"runs": 1, "landlock": 1, "warning": ""}
    assert "confined by Landlock in 1 of 1 kernel(s)" in report.format_summary(result)


def test_a_checker_reporting_its_own_problem_counts_as_a_grader_failure(small_batch, tmp_path):
    def no_kernel(job, timeout):
        answer = fake_runner(job, timeout)
        for entry in answer["results"]:
            for q in entry["questions"]:
                q.update(status="error", points=0, message="grader problem: RuntimeError: the kernel did not start")
        return answer

    result = _grade(small_batch, tmp_path / "out", runner=no_kernel)
    assert (result["graded"], result["grader_failures"]) == (0, 2)
    assert _rows(tmp_path / "out", "alice")["ex1_kl_check"]["message"].startswith("grader problem")


def test_cli_exit_codes_and_summary(monkeypatch, small_batch, tmp_path, capsys):
    monkeypatch.setattr(cli, "run_checker", fake_runner)
    out = tmp_path / "out"
    args = [str(small_batch), "--solutions", str(SOLUTIONS), "--out", str(out), "-j", "2", "--quiet"]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "Graded 4 submission(s) of 4 student(s): 2 ran, 1 failed to run, 1 missing." in text
    assert "01_introduction  ex1_kl_check" in text and "0.75 / 3" in text
    assert "3 written answer(s) to grade by hand" in text

    def broken(job, timeout):
        raise cli.CheckerFailure("the checker process exited with status 1")

    monkeypatch.setattr(cli, "run_checker", broken)
    assert cli.main(args) == 1
    assert "2 of them because the grader itself failed" in capsys.readouterr().out

    shutil.rmtree(out)
    for extra, error in ((["-j", "0"], "jobs: must be an integer >= 1, got 0"),
                         (["--timeout", "0"], "timeout: must be a number >= 1"),
                         (["--memory-mb", "10"], "memory_mb: must be an integer >= 256"),
                         (["--manual", str(tmp_path / "none.csv")], "manual: .*none.csv is not a file")):
        assert cli.main(args + extra) == 2
        assert re.search(error, capsys.readouterr().err)
        assert not out.exists()  # bad input: nothing graded, nothing written
    assert cli.main([str(tmp_path / "nowhere"), "--out", str(out), "--solutions", str(SOLUTIONS)]) == 2
    assert "submissions: " in capsys.readouterr().err


def test_command_is_registered():
    from handbook.course.cli import COMMANDS

    assert COMMANDS["grade"][0] == "handbook.course.grading.cli"
    for command in ([sys.executable, "-m", "handbook", "grade", "--help"],
                    [sys.executable, "-m", "handbook.course.grading", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 0 and "--solutions" in done.stdout and "--memory-mb" in done.stdout


# ---- end to end, with the real checker --------------------------------------------------------

@pytest.mark.slow
def test_end_to_end(tmp_path):
    subs = tmp_path / "subs"
    _put(subs, "alice", (SOLUTIONS / NB).read_bytes())
    _put(subs, "bob", (ROOT / "chapters" / NB).read_bytes())
    _put(subs, "carol", b'{"nbformat": 4, "cells": [{"cell_type": "code"')
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "handbook", "grade", str(subs), "--solutions", str(SOLUTIONS),
                           "--out", str(out), "-j", "2", "--quiet", "--timeout", "120"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 submission(s) of 3 student(s): 2 ran, 1 failed to run, 0 missing" in done.stdout
    alice, bob, carol = (_rows(out, s) for s in ("alice", "bob", "carol"))
    for q in ("ex1_kl_check", "ex2_reparam_check", "ex3_colour_check"):
        assert alice[q]["status"] == "pass" and alice[q]["points"] == alice[q]["max_points"], alice[q]
        assert bob[q]["status"] != "pass" and bob[q]["points"] == "0", bob[q]
    totals = {r["student"]: r for r in _read_csv(out / "totals.csv")}
    assert (totals["alice"]["points"], totals["bob"]["points"], totals["carol"]["points"]) == ("8", "0", "0")
    assert {r["status"] for r in carol.values()} == {"error"} and "corrupt JSON" in carol["ex1_kl_check"]["message"]


def test_each_graded_cell_shows_the_answer_cells_of_its_own_exercise():
    """answer -> check -> experiment -> written: a check shows the functions it exercises, a written
    answer the experiment it is read from, and no cell is shown with the next exercise's check."""
    from handbook.course.grading.submissions import load_solution

    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        for q in load_solution(path).questions:
            exercise = q.grade_id.rsplit("_", 1)[0]                 # "ex1_kl" of "ex1_kl_check"
            expected = "answer" if q.kind == "auto" else "experiment"
            assert q.answer_ids == (f"{exercise}_{expected}",), (path.name, q)
