"""``handbook grade``: grade a folder of submitted notebooks against the solutions.

    handbook grade SUBMISSIONS --solutions solutions/ --out OUT [-j N] [--manual FILE]
                   [--timeout S] [--memory-mb N]
    python -m handbook.course.grading SUBMISSIONS ...          (the same command)

SUBMISSIONS holds one folder per student (the folder name is the student id) with that student's
notebooks, matched to the solutions by file name. The run, in order:

1. read every solution notebook into memory, and every submitted file as plain data
   (``submissions``); read and check the ``--manual`` file, so that a typo in it stops the run
   before any grading time is spent;
2. grade the readable submissions in ``-j N`` checker processes (``python -m
   handbook.course.grading.checker``), several submissions of one chapter per process so that its
   reference answers are computed once; a tqdm bar counts the submissions;
3. write every output from the results held in memory (``report``), then print the summary.

A checker process that crashes, hangs past its time limit or answers anything but the expected
JSON costs the submissions it held an ``error`` on every automatic question, with the reason;
never points, and never the rest of the batch. ``grade_batch`` is the same run as a function
(the benchmark calls it).

Exit status: 0 when the gradebook was written; 1 when it was written but the grader itself failed
on some submission (worth a look: the messages say why); 2 for bad arguments, solutions or
manual file (nothing written).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from handbook.course.grading import report
from handbook.course.grading.checker import Limits
from handbook.course.grading.submissions import MAX_FILE_BYTES, Batch, Solution, Submission, discover, load_solutions

DEFAULT_TIMEOUT = 120.0     # seconds for one cell of a student notebook, and for one check's calls
# The whole notebook gets this many cell limits: enough for every honest chapter, while one
# looping cell costs only its own limit and the cells after it still run (and are graded).
NOTEBOOK_TIMEOUT_FACTOR = 5
DEFAULT_MEMORY_MB = 4096
# A checker process builds the chapter's reference answers before its first submission.
CHECKER_STARTUP_SECONDS = 300.0
# Slack on top of the checker's own worst case per submission: this deadline only catches a
# wedged checker, so it must never cut short one that is merely slow.
CHECKER_SLACK_FACTOR = 1.5
# Most submissions one checker process grades: reusing a process saves the reference build,
# a smaller group keeps the bar moving and limits what one checker failure can cost.
MAX_PER_CHECKER = 8
MAX_CHECKER_OUTPUT = 64 * 1024 * 1024
# How the checker process is started (after the interpreter); tests swap in a misbehaving one.
CHECKER_ARGS = ("-m", "handbook.course.grading.checker")


# ---- the checker subprocess -------------------------------------------------------------------

class CheckerFailure(Exception):
    """The checker process could not give a usable answer (crash, hang, garbage)."""


def make_job(solution: Solution, submissions: list[Submission], limits: dict) -> dict:
    """The JSON job a checker process reads on stdin: one chapter, several submissions."""
    return {
        "solution": solution.notebook,
        "limits": limits,
        "submissions": [{"id": _sub_id(s), "answers": s.answers} for s in submissions],
    }


def _sub_id(submission: Submission) -> str:
    return f"{submission.student}/{submission.notebook}"


def checker_timeout(n_submissions: int, solution: Solution, limits: dict) -> float:
    """A deadline for a whole checker process: generous, it only catches a wedged checker.

    Per submission, the checker's own worst case (kernel start, the notebook's run, every
    check's calls, each with an interrupt's grace period), with slack; plus the reference build.
    """
    checks = sum(q.kind == "auto" for q in solution.questions)
    per_submission = Limits.from_dict(limits).worst_case_seconds(checks)
    return CHECKER_STARTUP_SECONDS + n_submissions * CHECKER_SLACK_FACTOR * per_submission


def run_checker(job: dict, timeout: float) -> dict:
    """Run ``python -m handbook.course.grading.checker`` on ``job``; its parsed JSON answer.

    The process gets its own session so that, past ``timeout``, it is killed with everything it
    started; it runs in an empty temporary folder. Raises CheckerFailure with a readable reason
    (the last lines of its stderr for a crash) when there is no usable JSON answer.
    """
    with tempfile.TemporaryDirectory(prefix="handbook-checker-") as workdir:
        process = subprocess.Popen(
            [sys.executable, *CHECKER_ARGS],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=workdir, start_new_session=True,
            # Its temporary folders (a kernel's scratch) go inside workdir, removed even if it is killed.
            env={**os.environ, "TMPDIR": workdir},
        )
        try:
            stdout, stderr = process.communicate(json.dumps(job).encode("utf-8"), timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.communicate(timeout=10)  # reap it; a pipe held by an orphan must not hang us
            raise CheckerFailure(f"the checker did not finish within {timeout:.0f} s and was stopped") from None
        finally:
            _kill_group(process)  # whatever it left behind (a kernel it could not stop)
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name if -process.returncode in signal.valid_signals() else "?"
        raise CheckerFailure(f"the checker process was killed by signal {-process.returncode} ({name}){_tail(stderr)}")
    if process.returncode != 0:
        raise CheckerFailure(f"the checker process exited with status {process.returncode}{_tail(stderr)}")
    if len(stdout) > MAX_CHECKER_OUTPUT:
        raise CheckerFailure("the checker's answer is implausibly large")
    try:
        return json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckerFailure(f"the checker's answer is not JSON: {stdout[:200]!r}{_tail(stderr)}") from None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(stderr: bytes, lines: int = 5) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()[-lines:]
    return (": " + " | ".join(line.strip() for line in text))[:1000] if text else ""


def checked_results(answer, solution: Solution, ids: list[str]) -> dict[str, list[dict] | str]:
    """The checker's answer, checked strictly: per submission id, its results or why there are none.

    The checker is trusted code, but a bug in it must never turn into points: anything that is not
    exactly a known question with a known status and points within 0..max_points is refused.
    """
    if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
        raise CheckerFailure("the checker's answer lacks a 'results' list")
    out: dict[str, list[dict] | str] = {}
    for entry in answer["results"]:
        if not isinstance(entry, dict) or entry.get("id") not in ids or entry["id"] in out:
            raise CheckerFailure("the checker answered for an unknown or repeated submission")
        try:
            out[entry["id"]] = [_checked_question(q, solution) for q in _as_list(entry.get("questions"))]
        except CheckerFailure as failure:
            out[entry["id"]] = str(failure)
    for missing in ids:
        out.setdefault(missing, "the checker returned no result for this submission")
    return out


def _as_list(value) -> list:
    if not isinstance(value, list):
        raise CheckerFailure("the checker's results for a submission are not a list")
    return value


def _checked_question(result, solution: Solution) -> dict:
    auto = {q.grade_id: q for q in solution.questions if q.kind == "auto"}
    if not isinstance(result, dict) or result.get("question") not in auto:
        raise CheckerFailure(f"the checker reported an unknown question {str(result)[:100]!r}")
    q = auto[result["question"]]
    status, points = result.get("status"), result.get("points")
    if status not in report.AUTO_STATUSES:
        raise CheckerFailure(f"the checker reported status {status!r} for {q.grade_id}")
    if not isinstance(points, (int, float)) or isinstance(points, bool) or not math.isfinite(points) \
            or not 0 <= points <= q.max_points:
        raise CheckerFailure(f"the checker reported points {points!r} for {q.grade_id} (max {q.max_points:g})")
    message = result.get("message", "")
    return {"question": q.grade_id, "status": status, "points": float(points),
            "max_points": q.max_points, "message": report.clean_text(message if isinstance(message, str) else "")}


def grade_group(solution: Solution, group: list[Submission], limits: dict,
                runner=None) -> tuple[dict[str, list[dict] | str], list[str]]:
    """Grade a group of submissions of one chapter in one checker process; never raises.

    Returns (per submission id: its checked results, or the reason the grader could not produce
    them, then its automatic questions are ``error``; the checker's line about each sandbox).
    When the checker fails as a whole, the group is graded again one submission per process, so
    that a failure costs only the submission it happens on.
    """
    runner = runner or run_checker
    ids = [_sub_id(s) for s in group]
    try:
        answer = runner(make_job(solution, group, limits), checker_timeout(len(group), solution, limits))
        return checked_results(answer, solution, ids), _sandbox_lines(answer)
    except CheckerFailure as failure:
        reason = str(failure)
    except Exception as error:  # a bug of ours must not stop the batch either; say what it was
        reason = f"internal error of the grader: {type(error).__name__}: {error}"
    if len(group) == 1:
        return {ids[0]: reason}, []
    results: dict[str, list[dict] | str] = {}
    sandboxes: list[str] = []
    for submission in group:
        one, lines = grade_group(solution, [submission], limits, runner)
        results.update(one)
        sandboxes += lines
    return results, sandboxes


def _sandbox_lines(answer: dict) -> list[str]:
    return [e["sandbox"] if isinstance(e.get("sandbox"), str) else "" for e in answer["results"] if isinstance(e, dict)]


def sandbox_summary(lines: list[str]) -> dict:
    """How the student kernels were confined: runs, how many under Landlock, the first warning."""
    confined = [line for line in lines if line.startswith("landlock")]
    others = [line for line in lines if not line.startswith("landlock")]
    warning = next((line for line in others if line), "no report from the sandbox" if others else "")
    return {"runs": len(lines), "landlock": len(confined), "warning": warning[:300]}


def plan_groups(submissions: list[Submission], jobs: int) -> list[tuple[str, list[Submission]]]:
    """Split the readable submissions into checker groups: per chapter, dealt round-robin.

    Dealing (rather than cutting into consecutive runs) spreads slow submissions (an infinite
    loop waits for its time limit) over the workers; the result is deterministic.
    """
    groups: list[tuple[str, list[Submission]]] = []
    by_notebook: dict[str, list[Submission]] = {}
    for s in submissions:
        by_notebook.setdefault(s.notebook, []).append(s)
    for notebook, subs in sorted(by_notebook.items()):
        count = max(jobs, math.ceil(len(subs) / MAX_PER_CHECKER))
        count = min(count, len(subs))
        groups += [(notebook, subs[i::count]) for i in range(count)]
    return groups


# ---- the run ------------------------------------------------------------------------------------

def _at_least(name: str, value, minimum: float, kind: type = float):
    """``value`` if it is a number (an int where ``kind`` is int) >= minimum, else ValueError naming it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        ok = ok and float(value) == int(value)
    if not ok or value < minimum:
        raise ValueError(f"{name}: must be {'an integer' if kind is int else 'a number'} >= {minimum:g}, got {value!r}")
    return kind(value)


def _check_out(out: Path, submissions: Path, solutions: Path) -> None:
    """OUT's feedback/ and results/ are deleted and rebuilt: keep it clear of the inputs."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a folder")
    resolved = out.resolve()
    for name, other in (("submissions", submissions.resolve()), ("solutions", solutions.resolve())):
        if resolved == other or other in resolved.parents or resolved in other.parents:
            raise ValueError(f"out: {out} must not be, contain or lie inside the {name} folder {other}")


def grade_batch(submissions_dir, solutions_dir, out_dir, jobs: int = 2, timeout: float = DEFAULT_TIMEOUT,
                memory_mb: int = DEFAULT_MEMORY_MB, manual=None, progress: bool = True,
                max_file_bytes: int = MAX_FILE_BYTES, runner=None) -> dict:
    """Grade every submission and write OUT; the summary (see ``report.summary``) as a dict.

    ``runner(job, timeout) -> answer`` replaces the checker subprocess (tests use a fake).
    Bad arguments raise ValueError naming the argument, before anything is graded or written.
    """
    jobs = _at_least("jobs", jobs, 1, int)
    timeout = _at_least("timeout", timeout, 1)
    memory_mb = _at_least("memory_mb", memory_mb, 256, int)
    started = time.perf_counter()
    # The solutions are read first, before any student code runs anywhere.
    solutions = load_solutions(solutions_dir)
    out = Path(out_dir)
    _check_out(out, Path(submissions_dir), Path(solutions_dir))
    batch = discover(submissions_dir, solutions, max_file_bytes)
    marks = report.read_manual(manual, solutions, batch.students) if manual is not None else {}
    limits = {"cell_seconds": timeout, "call_seconds": timeout,
              "notebook_seconds": NOTEBOOK_TIMEOUT_FACTOR * timeout, "memory_mb": memory_mb}
    results, sandboxes = run_all(batch, solutions, limits, jobs, progress, runner)
    by_name = {s.name: s for s in solutions.values()}
    graded = []
    for sub in batch.submissions:
        outcome = results.get(_sub_id(sub))
        checked, failure = (outcome, None) if isinstance(outcome, list) else (None, outcome)
        graded.append(report.assemble(by_name[sub.notebook], sub, checked, failure, marks))
    notebooks = [s.name for _, s in sorted(solutions.items())]
    report.write_outputs(out, graded, batch.students, notebooks)
    result = report.summary(graded, batch.students, batch.ignored, out)
    result["sandbox"] = sandbox_summary(sandboxes)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_all(batch: Batch, solutions: dict[str, Solution], limits: dict, jobs: int,
            progress: bool = True, runner=None) -> tuple[dict[str, list[dict] | str], list[str]]:
    """Grade the readable submissions with ``jobs`` checker processes at a time."""
    by_name = {s.name: s for s in solutions.values()}
    # Only notebooks with automatic checks need a checker (written answers are read, not run).
    readable = [s for s in batch.submissions if s.ok and any(q.kind == "auto" for q in by_name[s.notebook].questions)]
    results: dict[str, list[dict] | str] = {}
    sandboxes: list[str] = []
    with tqdm(total=len(batch.submissions), desc="grading", unit="submission", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        bar.update(len(batch.submissions) - len(readable))  # nothing to run for these
        # Threads only wait for subprocesses; the grading itself happens in the checker processes.
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_group, by_name[nb], group, limits, runner): group
                       for nb, group in plan_groups(readable, jobs)}
            for future in as_completed(futures):
                done, lines = future.result()
                results.update(done)
                sandboxes += lines
                bar.update(len(futures[future]))
    return results, sorted(sandboxes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handbook grade",
        description="Grade submitted notebooks against the solutions: gradebook, feedback, Gradescope results.",
        epilog="Exit status: 0 written; 1 written, but the grader failed on some submission; 2 bad input.",
    )
    parser.add_argument("submissions", help="folder with one sub-folder per student (the folder name is the student id)")
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--out", required=True, help="output folder (grades.csv, totals.csv, manual.csv, feedback/, results/)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="checker processes in parallel (default: 1)")
    parser.add_argument("--manual", help="manual.csv with the points of the written answers filled in, to merge")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds for one cell of a student notebook and for one check's calls; the "
                             f"whole notebook gets {NOTEBOOK_TIMEOUT_FACTOR}x that (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                        help=f"memory limit of a student kernel, MB (default: {DEFAULT_MEMORY_MB})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = grade_batch(args.submissions, args.solutions, args.out, jobs=args.jobs, timeout=args.timeout,
                             memory_mb=args.memory_mb, manual=args.manual, progress=not args.quiet)
    except ValueError as error:
        print(f"handbook grade: error: {error}", file=sys.stderr)
        return 2
    print(report.format_summary(result))
    return 1 if result["grader_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
