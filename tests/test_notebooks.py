"""The notebook pipeline: student versions generated from the solutions, and kept in sync."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from handbook.course import notebooks as nbp

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def _meta(grade_id, *, grade, solution, points=None, locked=False):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _toy_notebook():
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    answer = (
        "def square(x):\n"
        "    \"\"\"Return x squared.\"\"\"\n"
        "    ### BEGIN SOLUTION\n"
        "    return x * x\n"
        "    ### END SOLUTION\n"
        "\n"
        "print(square(3))"
    )
    check = (
        "assert square(2) == 4\n"
        "### BEGIN HIDDEN TESTS\n"
        "assert square(-5) == 25\n"
        "### END HIDDEN TESTS\n"
        "print('ok')"
    )
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Toy"),
        nbformat.v4.new_code_cell("import math", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", text="x")]),
        nbformat.v4.new_code_cell(answer, metadata=_meta("sq", grade=False, solution=True)),
        nbformat.v4.new_code_cell(check, metadata=_meta("sq_check", grade=True, solution=False, points=2, locked=True)),
        nbformat.v4.new_markdown_cell("Because squares are even functions.",
                                      metadata=_meta("sq_written", grade=True, solution=True, points=1)),
    ]
    return nb


def test_solution_region_becomes_indented_stub():
    out = nbp.strip_solutions("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\nf")
    assert out == "def f():\n    # YOUR CODE HERE\n    raise NotImplementedError()\nf"


def test_hidden_tests_removed_and_public_part_kept():
    out = nbp.remove_hidden_tests("a = 1\n### BEGIN HIDDEN TESTS\nsecret = 2\n### END HIDDEN TESTS\nb = 3")
    assert out == "a = 1\nb = 3"


@pytest.mark.parametrize("source", [
    "### BEGIN SOLUTION\nx = 1",                                   # never closed
    "x = 1\n### END SOLUTION",                                     # closed, never opened
    "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",    # nested
])
def test_unbalanced_markers_are_an_error_not_a_leak(source):
    with pytest.raises(ValueError, match="source"):
        nbp.strip_solutions(source)


def test_student_version_of_toy_notebook():
    solution = _toy_notebook()
    student = nbp.student_version(solution)
    md, setup, answer, check, written = student.cells
    assert setup.outputs == [] and setup.execution_count is None
    assert "return x * x" not in answer.source and "raise NotImplementedError()" in answer.source
    assert answer.source.startswith("def square(x):") and answer.source.endswith("print(square(3))")
    assert "secret" not in check.source and "-5" not in check.source and "BEGIN HIDDEN" not in check.source
    assert "assert square(2) == 4" in check.source
    assert written.source == nbp.ANSWER_STUB
    assert "raises-exception" in answer.metadata["tags"] and "raises-exception" in check.metadata["tags"]
    assert "tags" not in setup.metadata
    # nbgrader metadata survives, so nbgrader users can still use the student notebook.
    assert check.metadata["nbgrader"] == solution.cells[3].metadata["nbgrader"]
    # the solution notebook is untouched
    assert "return x * x" in solution.cells[2].source and solution.cells[1].outputs


def test_student_version_runs_and_raises_only_in_exercise_cells(tmp_path):
    """The generated notebook executes: the exercise cells raise NotImplementedError, nothing else."""
    from handbook.course.notebook_runner import execute_notebook

    student = nbp.student_version(_toy_notebook())
    execute_notebook(student, tmp_path, timeout=60, allow_errors=True)
    errors = {c.metadata.get("nbgrader", {}).get("grade_id"): o.ename
              for c in student.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"}
    assert errors == {"sq": "NotImplementedError", "sq_check": "NotImplementedError"}


def test_validation_finds_structural_problems():
    nb = _toy_notebook()
    nb.cells[3].metadata["nbgrader"]["points"] = 0
    nb.cells[4].metadata["nbgrader"]["grade_id"] = "sq"
    del nb.metadata["kernelspec"]
    nb.cells[0].source = "### BEGIN SOLUTION\nleak\n### END SOLUTION"
    problems = "\n".join(nbp.validate_notebook(nb))
    assert "kernelspec" in problems
    assert "points > 0" in problems
    assert "'sq' is used 2 times" in problems
    assert "not marked as a solution" in problems
    with pytest.raises(ValueError, match="not a valid solution notebook"):
        nbp.student_version(nb)


def test_assign_writes_then_reports_in_sync(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(_toy_notebook(), str(tmp_path / "solutions" / "01_toy.ipynb"))
    changed = nbp.assign(tmp_path / "solutions", tmp_path / "chapters")
    assert [p.name for p in changed] == ["01_toy.ipynb"]
    assert nbp.assign(tmp_path / "solutions", tmp_path / "chapters", check=True) == []
    # Editing a solution makes the student notebook stale.
    nb = _toy_notebook()
    nb.cells[0].source = "# Toy, edited"
    nbformat.write(nb, str(tmp_path / "solutions" / "01_toy.ipynb"))
    assert [p.name for p in nbp.assign(tmp_path / "solutions", tmp_path / "chapters", check=True)] == ["01_toy.ipynb"]


def test_assign_rejects_a_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="solutions"):
        nbp.assign(tmp_path / "nowhere", tmp_path / "chapters")


# ---- the course's own notebooks -------------------------------------------------------------

def test_course_has_every_chapter_in_both_folders():
    assert SOLUTIONS, "no solution notebooks found"
    assert [p.name for p in SOLUTIONS] == [p.name for p in CHAPTERS]


def test_chapters_are_in_sync_with_solutions():
    stale = nbp.assign(ROOT / "solutions", ROOT / "chapters", check=True)
    assert stale == [], f"run `python -m handbook assign`: out of date {[str(p) for p in stale]}"


def test_assign_command_check_mode():
    result = subprocess.run([sys.executable, "-m", "handbook", "assign", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync" in result.stdout


@pytest.mark.parametrize("path", SOLUTIONS + CHAPTERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_committed_without_outputs_and_with_kernel(path):
    nb = nbp.read_notebook(path)
    nbformat.validate(nb)
    assert not nbp.has_outputs(nb), f"{path}: clear the outputs before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_notebook_structure(path):
    nb = nbp.read_notebook(path)
    assert nbp.validate_notebook(nb) == []
    graded = [c for c in nb.cells if nbp.is_graded_cell(c)]
    assert any(c.cell_type == "code" for c in graded), "a chapter needs auto-graded checks"
    assert any(c.cell_type == "markdown" for c in graded), "a chapter needs written answers"
    assert any(nbp.BEGIN_HIDDEN in c.source for c in graded), "checks need hidden tests"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_student_notebook_leaks_no_solution(path):
    text = path.read_text(encoding="utf-8")
    for marker in (nbp.BEGIN_SOLUTION, nbp.END_SOLUTION, nbp.BEGIN_HIDDEN, nbp.END_HIDDEN):
        assert marker not in text
