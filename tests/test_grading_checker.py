"""The grader's security core: the plain-value codec, Landlock, the sandboxed kernel and the checker.

The slow part is grading a batch of crafted chapter-1 submissions, each made from the solution
notebook by replacing answer cells: the solution as is, the untouched student notebook, wrong
answers, an infinite loop, a memory bomb, a loop that ignores interrupts, ``os._exit``,
``SIGKILL``, patched torch/numpy/builtins with always-equal results and a printed fake score,
edited, deleted and impersonated check cells, writes outside the scratch folder, and warnings on
stderr. They are graded once, by two checker processes side by side (``python -m
handbook.course.grading.checker``, as ``handbook grade -j 2`` runs them); each test reads its
submission's results.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from handbook.course import notebooks as nbp
from handbook.course.grading import landlock, protocol
from handbook.course.grading.checker import Chapter, Limits, questions
from handbook.course.grading.sandbox import Outcome

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_introduction.ipynb"
STUDENT = ROOT / "chapters" / "01_introduction.ipynb"
QUESTIONS = ["ex1_kl_check", "ex2_reparam_check", "ex3_colour_check"]
# memory_mb is what the student's code gets on top of the ready kernel (chapter 1's own cells use
# about 400 MB of it, more with the CUDA build of torch: at 1.5 GB its ex3 check failed there):
# 2 GB keeps the memory bomb's touched pages inside its 4 s.
LIMITS = {"notebook_seconds": 120, "cell_seconds": 30, "call_seconds": 4, "memory_mb": 2048}


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _answers(nb: dict) -> dict[str, str]:
    """{grade_id: source} of the code cells that carry a grade_id, first occurrence winning.

    Deliberately naive (it keeps a student's cell that took a check's grade_id): the checker
    must ignore everything but the answer cells.
    """
    out: dict[str, str] = {}
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if cell["cell_type"] == "code" and grade_id and grade_id not in out:
            out[grade_id] = "".join(cell["source"])
    return out


SOLVED = _answers(_load(SOLUTION))


def _functions_only(grade_id: str) -> str:
    """The solution's answer cell: only its functions, since each experiment has a cell of its own.

    Crafted submissions leave the experiment cells out, so those run as the handout's stub (which
    raises at once) and the crafted runs stay short.
    """
    return SOLVED[grade_id]


def _with(grade_id: str, function: str, body: str, prelude: str = "") -> str:
    """The solution's functions of an answer cell, with ``function`` given a new body."""
    source = _functions_only(grade_id)
    start = source.index(f"def {function}(")
    end = source.find("\ndef ", start + 1)
    end = len(source) if end < 0 else end
    header = source[start:].split("\n", 1)[0]
    new = header + "\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n\n"
    return textwrap.dedent(prelude) + "\n" + source[:start] + new + source[end:]


def _submission(**cells: str) -> dict[str, str]:
    answers = {gid: _functions_only(gid) for gid in ("ex1_kl_answer", "ex2_reparam_answer", "ex3_colour_answer")}
    answers.update(cells)
    return answers


def _tampered_notebook() -> dict[str, str]:
    """A notebook whose check cells were edited, deleted, duplicated and impersonated."""
    nb = copy.deepcopy(_load(SOLUTION))
    by_id = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id"): c for c in nb["cells"]}
    by_id["ex1_kl_answer"]["source"] = _with("ex1_kl_answer", "kl_gaussians", "return 0.0")
    by_id["ex1_kl_check"]["source"] = "print('All public checks passed.')"
    nb["cells"].remove(by_id["ex2_reparam_check"])
    impostor = copy.deepcopy(by_id["ex3_colour_answer"])
    impostor["metadata"]["nbgrader"]["grade_id"] = "ex3_colour_check"
    impostor["source"] = "assert True"
    nb["cells"].insert(0, impostor)   # comes first, so the naive extraction keeps it
    nb["cells"].append(copy.deepcopy(by_id["ex3_colour_check"]))
    return _answers(nb)


def _crafted(out_dir: Path, solutions_copy: Path) -> dict[str, dict[str, str]]:
    targets = [str(out_dir / "grades.csv"), str(solutions_copy)]
    return {
        "wrong": _submission(
            ex1_kl_answer=_with("ex1_kl_answer", "kl_gaussians",
                                "return math.log(sigma_q / sigma_p) + (sigma_p ** 2 + (mu_p - mu_q) ** 2) / (2 * sigma_q ** 2)"),
            ex3_colour_answer=_with("ex3_colour_answer", "mean_object_colour", "return image.mean(dim=(1, 2))"),
        ),
        # An infinite loop in ex1 and a memory bomb in ex2: each costs its own question only.
        "loop_and_bomb": _submission(
            ex1_kl_answer=_with("ex1_kl_answer", "kl_gaussians", "while True:\n    pass"),
            ex2_reparam_answer=_with("ex2_reparam_answer", "reparameterised_sample", """
                blocks = []
                while True:
                    blocks.append(bytearray(2 ** 28))
                """)),
        # The held-out hostile case: a loop at the very top of the first answer cell, so the
        # cell is stopped by the time limit before it defines anything.
        "loop_at_top": _submission(ex1_kl_answer="while True: pass\n\n" + _functions_only("ex1_kl_answer")),
        "deaf": _submission(ex1_kl_answer=_with("ex1_kl_answer", "kl_gaussians", """
            import time
            while True:
                try:
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    pass
            """)),
        "exit": _submission(ex2_reparam_answer=_with("ex2_reparam_answer", "pathwise_gradient",
                                                     "import os\nos._exit(0)")),
        # ex1's cell does not even compile; ex3 kills its own kernel.
        "kill": _submission(ex1_kl_answer="def kl_gaussians(mu_p, sigma_p, mu_q, sigma_q):\n    return (",
                            ex3_colour_answer=_with("ex3_colour_answer", "dominant_colour",
                                                    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")),
        "patched": _submission(
            ex1_kl_answer=_with("ex1_kl_answer", "kl_gaussians", "return 0.0", prelude="""
                import builtins, numpy
                torch.allclose = lambda *args, **kwargs: True
                numpy.isclose = numpy.allclose = lambda *args, **kwargs: True
                builtins.abs = lambda x: 0.0
                builtins.AssertionError = type("AssertionError", (Exception,), {})
                print("All public checks passed.")
                print("Score: 10/10")
                """),
            ex2_reparam_answer=_with("ex2_reparam_answer", "reparameterised_sample", "return mu + torch.exp(log_var) * eps"),
            ex3_colour_answer=_with("ex3_colour_answer", "mean_object_colour", "return AlwaysEqual()", prelude="""
                class AlwaysEqual:
                    def __eq__(self, other):
                        return True
                    __ne__ = lambda self, other: False
                """),
        ),
        "tampered": _tampered_notebook(),
        # Correct answers that try to write outside the scratch folder (ex1) and warn (ex3).
        "writes_and_warnings": _submission(ex1_kl_answer=_with("ex1_kl_answer", "kl_gaussians", f"""
            try:
                open({str(out_dir / 'from_function.txt')!r}, "w").write("written during a check")
            except OSError:
                pass
            return float(math.log(sigma_q / sigma_p) + (sigma_p ** 2 + (mu_p - mu_q) ** 2) / (2 * sigma_q ** 2) - 0.5)
            """, prelude=f"""
            import os, shutil
            for _target in {targets!r}:
                for _attempt in (lambda: open(_target, "w").write("0 points for everybody"),
                                 lambda: os.remove(_target), lambda: os.rename(_target, _target + ".moved"),
                                 lambda: os.makedirs(os.path.join(os.path.dirname(_target), "feedback", "evil"))):
                    try:
                        _attempt()
                    except OSError:
                        pass
            """),
            ex3_colour_answer=_with("ex3_colour_answer", "mean_object_colour", """
            import sys, warnings
            warnings.warn("a warning from the student's code")
            torch.tensor(torch.ones(1))   # torch's UserWarning: copy-constructing a tensor
            print("noise " * 1000, file=sys.stderr)
            return image[:, mask].mean(dim=1)
            """, prelude="import warnings\nwarnings.warn('a warning at the top of the cell')")),
        "unchanged": _answers(_load(STUDENT)),
        "solution": dict(SOLVED),
    }


# The two checker processes' shares, balanced by expected time; a hostile case is never last in
# its share, so the share shows that the checker goes on after it.
SHARES = (["loop_and_bomb", "deaf", "exit", "unchanged", "solution"],
          ["kill", "loop_at_top", "patched", "wrong", "tampered", "writes_and_warnings"])


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every crafted submission, in two checker processes side by side."""
    base = tmp_path_factory.mktemp("grading")
    out_dir, solutions_dir = base / "OUT", base / "solutions"
    out_dir.mkdir()
    solutions_dir.mkdir()
    (out_dir / "grades.csv").write_text("student,points\nalice,10\n")
    (solutions_dir / SOLUTION.name).write_text(SOLUTION.read_text(encoding="utf-8"), encoding="utf-8")
    before = {p: p.read_bytes() for p in (out_dir / "grades.csv", solutions_dir / SOLUTION.name)}
    crafted = _crafted(out_dir, solutions_dir / SOLUTION.name)
    assert sorted(sum(SHARES, [])) == sorted(crafted)
    def check(share: list[str]) -> list[dict]:
        job = {"solution": _load(SOLUTION), "limits": LIMITS,
               "submissions": [{"id": name, "answers": crafted[name]} for name in share]}
        process = subprocess.run([sys.executable, "-m", "handbook.course.grading.checker"], input=json.dumps(job),
                                 capture_output=True, text=True, timeout=600, cwd=base)
        assert process.returncode == 0, process.stderr[-3000:]
        answer = json.loads(process.stdout)["results"]
        assert [e["id"] for e in answer] == share, "one result per submission, in order"
        return answer

    with ThreadPoolExecutor(len(SHARES)) as pool:
        entries = [entry for answer in pool.map(check, SHARES) for entry in answer]
    for entry in entries:
        print(f"{entry['id']:>20}: {entry['seconds']:5.1f} s  {entry['sandbox']}")
    results = {entry["id"]: {q["question"]: q for q in entry["questions"]} for entry in entries}
    return {"results": results, "out": out_dir, "before": before, "entries": entries}


def _statuses(graded, name):
    return [graded["results"][name][q]["status"] for q in QUESTIONS]


def _points(graded, name):
    return sum(r["points"] for r in graded["results"][name].values())


# -- the crafted submissions ----------------------------------------------------------------------

def test_solution_scores_full_points(graded):
    assert _statuses(graded, "solution") == ["pass", "pass", "pass"]
    assert _points(graded, "solution") == sum(q["max_points"] for q in questions(_load(SOLUTION))) == 8


def test_unchanged_student_notebook_scores_zero(graded):
    assert _statuses(graded, "unchanged") == ["error", "error", "error"]
    assert _points(graded, "unchanged") == 0
    for result in graded["results"]["unchanged"].values():
        assert "NotImplementedError" in result["message"] and "not answered yet" in result["message"]


def test_wrong_answer_fails_with_the_assertion_message(graded):
    results = graded["results"]["wrong"]
    assert _statuses(graded, "wrong") == ["fail", "pass", "fail"]
    assert results["ex1_kl_check"]["message"] == "KL(p || p) must be 0"
    assert results["ex3_colour_check"]["message"] == "average only the pixels inside the mask"
    assert _points(graded, "wrong") == 3


def test_infinite_loop_times_out_and_the_rest_is_graded(graded):
    assert _statuses(graded, "loop_and_bomb") == ["timeout", "error", "pass"]
    assert "kl_gaussians did not return within 4 s" in graded["results"]["loop_and_bomb"]["ex1_kl_check"]["message"]


def test_answer_cell_stopped_by_the_time_limit_reads_as_a_timeout(graded):
    assert _statuses(graded, "loop_at_top") == ["timeout", "pass", "pass"]
    message = graded["results"]["loop_at_top"]["ex1_kl_check"]["message"]
    assert message.startswith("kl_gaussians is not defined in your notebook")
    assert f"your cell ex1_kl_answer was stopped after {LIMITS['cell_seconds']} s, the time limit of one cell" in message


def test_loop_that_ignores_interrupts_never_passes(graded):
    results = graded["results"]["deaf"]
    assert _statuses(graded, "deaf") == ["error", "error", "error"]
    assert "stopped answering" in results["ex1_kl_check"]["message"]
    assert results["ex3_colour_check"]["message"].startswith("not graded")


def test_memory_bomb_is_stopped_and_reported(graded):
    result = graded["results"]["loop_and_bomb"]["ex2_reparam_check"]
    assert result["status"] == "error" and "reparameterised_sample raised MemoryError" in result["message"]
    assert f"memory limit is {LIMITS['memory_mb']} MB" in result["message"]
    # The kernel survived its MemoryError (ex3 is graded), and so did the checker: the next
    # submissions of its share were graded too.
    assert _statuses(graded, "loop_and_bomb")[2] == "pass"
    assert _statuses(graded, "solution") == ["pass", "pass", "pass"]


@pytest.mark.parametrize("name, expected, lost", [("exit", ["pass", "error", "error"], 1),
                                                   ("kill", ["error", "pass", "error"], 2)])
def test_killed_kernel_gives_errors_never_passes(graded, name, expected, lost):
    assert _statuses(graded, name) == expected
    assert "died" in graded["results"][name][QUESTIONS[lost]]["message"]
    for later in QUESTIONS[lost + 1:]:
        assert graded["results"][name][later]["message"].startswith("not graded")


def test_answer_cell_that_fails_is_explained(graded):
    message = graded["results"]["kill"]["ex1_kl_check"]["message"]
    assert message.startswith("kl_gaussians is not defined in your notebook")
    assert "your cell ex1_kl_answer failed: SyntaxError" in message


def test_patched_libraries_equal_objects_and_fake_scores_change_nothing(graded):
    results = graded["results"]["patched"]
    assert _statuses(graded, "patched") == ["fail", "fail", "error"]
    assert _points(graded, "patched") == 0
    assert "unsupported" in results["ex3_colour_check"]["message"] or "type" in results["ex3_colour_check"]["message"]
    assert "AlwaysEqual" in results["ex3_colour_check"]["message"]


def test_edited_deleted_and_impersonated_checks_are_restored(graded):
    # ex1's check was replaced by a print: the real one fails the wrong answer; ex2's check was
    # deleted and ex3's impersonated: both run from the solution and pass the correct answers.
    assert _statuses(graded, "tampered") == ["fail", "pass", "pass"]


@pytest.mark.skipif(not landlock.available(), reason="Landlock is needed to confine writes")
def test_writes_outside_the_scratch_folder_have_no_effect(graded):
    for path, content in graded["before"].items():
        assert path.read_bytes() == content, f"{path} was changed"
    assert sorted(p.name for p in graded["out"].iterdir()) == ["grades.csv"]
    assert _statuses(graded, "writes_and_warnings") == ["pass", "pass", "pass"]
    assert all("landlock" in entry["sandbox"] for entry in graded["entries"])


def test_warnings_on_stderr_cost_nothing(graded):
    assert _statuses(graded, "writes_and_warnings") == ["pass", "pass", "pass"]
    assert _points(graded, "writes_and_warnings") == 8


# -- the chapter plan -----------------------------------------------------------------------------

def test_chapter_lists_questions_answers_and_student_functions():
    chapter = Chapter.from_notebook(_load(SOLUTION))
    assert [q.grade_id for q in chapter.questions] == QUESTIONS
    assert [q.points for q in chapter.questions] == [3.0, 3.0, 2.0]
    assert chapter.functions == {
        "kl_gaussians": "ex1_kl_answer", "kl_monte_carlo": "ex1_kl_answer",
        "reparameterised_sample": "ex2_reparam_answer", "pathwise_gradient": "ex2_reparam_answer",
        "mean_object_colour": "ex3_colour_answer", "dominant_colour": "ex3_colour_answer"}
    # Check cells never run in the student's kernel; every other code cell does.
    run = [c.index for c in chapter.cells]
    nb = _load(SOLUTION)
    assert all(not nbp.is_graded_cell(nb["cells"][i]) for i in run)
    assert len(run) + len(QUESTIONS) == sum(c["cell_type"] == "code" for c in nb["cells"])
    hidden = chapter.questions[0].hidden_lines
    lines = chapter.questions[0].source.splitlines()
    assert lines[min(hidden) - 1].strip() == nbp.BEGIN_HIDDEN and lines[max(hidden) - 1].strip() == nbp.END_HIDDEN


def test_missing_answer_runs_the_student_stub():
    chapter = Chapter.from_notebook(_load(SOLUTION))
    cell = next(c for c in chapter.cells if c.grade_id == "ex1_kl_answer")
    stub = chapter.answer_source(cell, {})
    assert "raise NotImplementedError()" in stub and "def kl_gaussians" in stub and nbp.BEGIN_SOLUTION not in stub
    assert chapter.answer_source(cell, {"ex1_kl_answer": ["a = 1\n", "b = 2"]}) == "a = 1\nb = 2"


def test_limits_are_validated():
    assert Limits.from_dict({"call_seconds": 5}).call_seconds == 5
    with pytest.raises(ValueError, match="unknown fields"):
        Limits.from_dict({"timeout": 5})
    with pytest.raises(ValueError, match="positive"):
        Limits.from_dict({"memory_mb": 0})


def test_invalid_job_is_refused_with_a_message():
    process = subprocess.run([sys.executable, "-m", "handbook.course.grading.checker"], input="{not json",
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == 2 and "checker:" in process.stderr and process.stdout == ""


# -- the plain-value codec ------------------------------------------------------------------------

def _roundtrip(value, tmp_path):
    protocol.write_message(tmp_path, "m", value)
    return protocol.read_message(tmp_path, "m")[0]


def test_plain_values_round_trip(tmp_path):
    g = torch.Generator().manual_seed(7)
    value = {"none": None, "flags": [True, False], "int": 2**70, "float": 0.1, "nan": float("nan"),
             "inf": float("-inf"), "text": "é", "tuple": (1, (2.5, "x")), 3: "int key",
             "tensor": torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(),
             "bf16": torch.ones(2, dtype=torch.bfloat16), "bool": torch.tensor([True, False]),
             "complex": torch.tensor([1 + 2j]), "array": np.arange(4, dtype=np.int16), "scalar": np.float64(1.5),
             "empty": torch.zeros(0, 3), "size": torch.Size([2, 3]), "generator": g}
    back = _roundtrip(value, tmp_path)
    assert back["none"] is None and back["flags"] == [True, False] and back["int"] == 2**70
    assert back["float"] == 0.1 and np.isnan(back["nan"]) and back["inf"] == float("-inf") and back["text"] == "é"
    assert back["tuple"] == (1, (2.5, "x")) and back[3] == "int key" and back["size"] == (2, 3)
    assert torch.equal(back["tensor"].detach(), value["tensor"].detach()) and back["tensor"].requires_grad
    assert back["bf16"].dtype == torch.bfloat16 and back["bool"].dtype == torch.bool
    assert back["complex"].dtype == torch.complex64 and back["empty"].shape == (0, 3)
    assert back["array"].dtype == np.int16 and type(back["scalar"]) is np.float64
    assert torch.equal(back["generator"].get_state(), g.get_state())


@pytest.mark.parametrize("value, fragment", [
    (object(), "type builtins.object"),
    (type("Sneaky", (float,), {"__eq__": lambda self, other: True})(1.0), "Sneaky"),
    (np.array([object()]), "dtype object"),
    (np.array(["text"]), "dtype <U4"),
    ({(1, 2): 3}, "dict key"),
    (torch.zeros(2).to_sparse(), "layout"),
    ([[[[[]]]]], "nested"),
])
def test_unsupported_values_are_refused(value, fragment, tmp_path):
    limits = protocol.Limits(depth=3)
    with pytest.raises(protocol.CodecError, match=fragment):
        protocol.write_message(tmp_path, "m", value, limits)


def test_size_limits_hold_on_both_sides(tmp_path):
    with pytest.raises(protocol.CodecError, match="MB in total"):
        protocol.to_plain(np.zeros(1000), protocol.Limits(array_bytes=100))
    protocol.write_message(tmp_path, "big", np.zeros(1000))
    with pytest.raises(protocol.CodecError, match="MB in total"):
        protocol.read_message(tmp_path, "big", protocol.Limits(array_bytes=100))


def _forge(tmp_path, message: dict, data: bytes = b"") -> None:
    (tmp_path / "f.json").write_text(json.dumps(message))
    (tmp_path / "f.bin").write_bytes(data)


@pytest.mark.parametrize("message, data", [
    # A shape that asks for far more bytes than the file holds (an .npy header could do this).
    ({"format": protocol.FORMAT, "value": {"$": "ndarray", "array": 0},
      "arrays": [{"dtype": "<f8", "shape": [10**6, 10**6], "offset": 0, "nbytes": 8 * 10**12}]}, b""),
    ({"format": protocol.FORMAT, "value": {"$": "ndarray", "array": 0},
      "arrays": [{"dtype": "<f8", "shape": [4], "offset": 0, "nbytes": 32}]}, b"\0" * 8),
    ({"format": protocol.FORMAT, "value": {"$": "ndarray", "array": 0},
      "arrays": [{"dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8}]}, b"\0" * 8),
    ({"format": protocol.FORMAT, "value": {"$": "ndarray", "array": 3}, "arrays": []}, b""),
    ({"format": protocol.FORMAT, "value": {"$": "pickle", "data": "gASVAAAAAAAAAAAu"}, "arrays": []}, b""),
    ({"format": protocol.FORMAT, "value": {"$": "tensor", "array": 0, "dtype": "object", "requires_grad": False},
      "arrays": [{"dtype": "<f4", "shape": [1], "offset": 0, "nbytes": 4}]}, b"\0" * 4),
    ({"format": "something else", "value": 1, "arrays": []}, b""),
])
def test_forged_messages_are_refused(message, data, tmp_path):
    _forge(tmp_path, message, data)
    with pytest.raises(protocol.CodecError):
        protocol.read_message(tmp_path, "f")


def test_only_regular_files_are_read(tmp_path):
    (tmp_path / "elsewhere.json").write_text(json.dumps({"format": protocol.FORMAT, "value": 1, "arrays": []}))
    os.symlink(tmp_path / "elsewhere.json", tmp_path / "link.json")
    with pytest.raises(protocol.CodecError, match="cannot be opened"):
        protocol.read_message(tmp_path, "link")
    os.mkfifo(tmp_path / "fifo.json")   # a reader that opened it would wait forever
    with pytest.raises(protocol.CodecError, match="not a regular file"):
        protocol.read_message(tmp_path, "fifo")
    with pytest.raises(protocol.CodecError, match="missing"):
        protocol.read_message(tmp_path, "absent")


# -- Landlock -------------------------------------------------------------------------------------

@pytest.mark.skipif(not landlock.available(), reason="Landlock is not available on this system")
def test_landlock_confines_writes_reads_and_signals(tmp_path):
    scratch, outside = tmp_path / "scratch", tmp_path / "outside"
    scratch.mkdir()
    outside.mkdir()
    (outside / "gradebook.csv").write_text("kept")
    code = textwrap.dedent(f"""
        import os, sys
        from handbook.course.grading import landlock
        landlock.restrict([sys.prefix, sys.base_prefix, {str(ROOT / 'handbook')!r}, "/usr", "/lib", "/lib64", "/etc"],
                          [{str(scratch)!r}], ["/dev/null"])
        open({str(scratch / 'ok.txt')!r}, "w").write("fine")
        for attempt in (lambda: open({str(outside / 'gradebook.csv')!r}, "w"),
                        lambda: open({str(outside / 'gradebook.csv')!r}).read(),
                        lambda: os.kill(os.getppid(), 0)):
            try:
                attempt()
                print("allowed")
            except OSError:
                print("denied")
    """)
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    expected = ["denied", "denied", "denied" if landlock.abi_version() >= 6 else "allowed"]
    assert process.stdout.split() == expected
    assert (scratch / "ok.txt").read_text() == "fine" and (outside / "gradebook.csv").read_text() == "kept"


# -- the sandboxed kernel -------------------------------------------------------------------------

@pytest.mark.skipif(not landlock.available(), reason="Landlock is not available on this system")
def test_kernel_cannot_read_secrets_or_signal_the_checker(tmp_path, monkeypatch):
    from handbook.course.grading.sandbox import KernelLimits, SandboxedKernel

    monkeypatch.setenv("INSTRUCTOR_TOKEN", "do-not-leak")
    (tmp_path / "other_student.ipynb").write_text("their answers")
    probe = textwrap.dedent(f"""
        def probe():
            import os
            def attempt(action):
                try:
                    action()
                    return "allowed"
                except OSError:
                    return "denied"
            return {{"env": "INSTRUCTOR_TOKEN" in os.environ,
                     "checker_env": attempt(lambda: open(f"/proc/{{os.getppid()}}/environ").read()),
                     "other_files": attempt(lambda: open({str(tmp_path / 'other_student.ipynb')!r}).read()),
                     "signal": attempt(lambda: os.kill(os.getppid(), 0)),   # 0: only asks
                     "own_status": attempt(lambda: open("/proc/self/status").read())}}
    """)
    with SandboxedKernel(KernelLimits(memory_mb=2048, cpu_seconds=60)) as kernel:
        assert kernel.run(probe, timeout=30).status == "ok"
        seen = kernel.call("probe", (), {}, timeout=30)
    assert seen == {"env": False, "checker_env": "denied", "other_files": "denied",
                    "signal": "denied" if landlock.abi_version() >= 6 else "allowed", "own_status": "allowed"}


def test_grading_seed_is_fixed_per_student_and_question_and_depends_on_the_secret():
    from handbook.course.grading.checker import grading_seed

    seed = grading_seed("solution-hash", "alice/01_introduction.ipynb", "ex1_kl_check")
    assert seed == grading_seed("solution-hash", "alice/01_introduction.ipynb", "ex1_kl_check")
    others = {grading_seed("solution-hash", "bob/01_introduction.ipynb", "ex1_kl_check"),
              grading_seed("solution-hash", "alice/01_introduction.ipynb", "ex2_reparam_check"),
              grading_seed("other-hash", "alice/01_introduction.ipynb", "ex1_kl_check")}
    assert seed not in others and len(others) == 3
    assert 0 <= seed < 2 ** 32


# -- the memory limit with libraries that reserve address space ------------------------------------

# What the CUDA build of torch does at import, in miniature: gigabytes of address space mapped
# and never touched. sitecustomize runs at interpreter start, before the sandbox's own code.
_RESERVATION = '''
import mmap, pathlib
RESERVED_GB = 6
_reserved = mmap.mmap(-1, RESERVED_GB * 2**30, prot=mmap.PROT_READ,
                      flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0))
(pathlib.Path(__file__).parent / "reserved.txt").write_text("yes")
'''


@pytest.fixture
def reserving_kernels(tmp_path, monkeypatch):
    """Student kernels start with 6 GB of untouched address space mapped, like the CUDA build's."""
    (tmp_path / "sitecustomize.py").write_text(_RESERVATION)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))   # the kernel keeps PYTHONPATH
    yield
    assert (tmp_path / "reserved.txt").read_text() == "yes", "the kernel did not start with the reservation"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the limit is measured from /proc")
def test_memory_limit_counts_real_memory_not_reserved_address_space(reserving_kernels):
    from handbook.course.grading.sandbox import KernelLimits, SandboxedKernel

    memory_mb = 1024
    with SandboxedKernel(KernelLimits(memory_mb=memory_mb, cpu_seconds=120)) as kernel:   # it starts
        real_data = f"import numpy\ndata = numpy.ones(({memory_mb} - 256) * 2**20 // 8)\nassert data.sum() == data.size"
        assert kernel.run(real_data, timeout=60) == Outcome("ok")   # touched pages: real memory
        assert kernel.run("del data", timeout=10) == Outcome("ok")
        bomb = kernel.run("blocks = []\nwhile True:\n    blocks.append(bytearray(2 ** 27))", timeout=60)
        assert bomb.status == "error" and bomb.error.startswith("MemoryError")
        assert kernel.run("del blocks\nx = 1 + 1", timeout=10) == Outcome("ok"), "the kernel lives on"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the limit is measured from /proc")
def test_memory_bomb_is_reported_with_the_limit_above_reserved_address_space(reserving_kernels):
    from handbook.course.grading.checker import grade_notebook

    answers = _submission(ex2_reparam_answer=_with("ex2_reparam_answer", "reparameterised_sample", """
        blocks = []
        while True:
            blocks.append(bytearray(2 ** 27))
        """))
    results = grade_notebook(_load(SOLUTION), answers, Limits(memory_mb=1024, cell_seconds=60, call_seconds=10))
    assert [r["status"] for r in results] == ["pass", "error", "pass"], results
    assert "raised MemoryError" in results[1]["message"] and "memory limit is 1024 MB" in results[1]["message"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the limit is measured from /proc")
def test_a_failed_cell_or_call_gives_the_memory_of_its_frames_back(reserving_kernels):
    """A notebook cell that calls a memory bomb fails; IPython keeps that error (and so the bomb's
    frame and its list) for the debugger. With the CUDA build of torch, chapter 1's memory-bomb
    student lost every later question so. The kernel must let go: the next cells may again use
    ``memory_mb - 256`` MB, also after a call whose student code kept the error in a global."""
    from handbook.course.grading.sandbox import KernelLimits, SandboxedKernel, StudentCodeError

    memory_mb = 1024
    use_it_all = f"import numpy\ndata = numpy.ones(({memory_mb} - 256) * 2**20 // 8)\nassert data.sum() == data.size\ndel data"
    code = textwrap.dedent("""
        def bomb():
            blocks = []
            while True:
                blocks.append(bytearray(2 ** 27))
        def keeping_bomb():
            global kept
            try:
                bomb()
            except MemoryError as error:
                kept = error
                raise
    """)
    with SandboxedKernel(KernelLimits(memory_mb=memory_mb, cpu_seconds=120)) as kernel:
        assert kernel.run(code, timeout=30) == Outcome("ok")
        failed = kernel.run("bomb()", timeout=60, store_history=True)          # a notebook cell
        assert failed.status == "error" and failed.error.startswith("MemoryError")
        assert kernel.run(use_it_all, timeout=60) == Outcome("ok")
        with pytest.raises(StudentCodeError, match="MemoryError"):
            kernel.call("keeping_bomb", (), {}, timeout=60)
        assert kernel.run(use_it_all, timeout=60) == Outcome("ok")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the limit is measured from /proc")
def test_a_call_stopped_by_the_time_limit_gives_its_memory_back():
    """The interrupted function's frames (and the 600 MB they hold) must not outlive the timeout:
    otherwise the next question of the same student fails with a MemoryError it did not cause."""
    from handbook.course.grading.sandbox import CallTimeout, KernelLimits, SandboxedKernel

    code = textwrap.dedent("""
        import time, numpy
        def hold():
            data = numpy.ones(600 * 2**20 // 8)
            while True:
                time.sleep(0.1)
        def take():
            data = numpy.ones(600 * 2**20 // 8)
            return float(data.mean())
    """)
    with SandboxedKernel(KernelLimits(memory_mb=1024, cpu_seconds=120)) as kernel:
        assert kernel.run(code, timeout=30) == Outcome("ok")
        with pytest.raises(CallTimeout):
            kernel.call("hold", (), {}, timeout=3)
        assert kernel.call("take", (), {}, timeout=30) == 1.0
