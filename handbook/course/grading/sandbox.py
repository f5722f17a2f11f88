"""The student's kernel: how it is started, confined, driven, and how its functions are called.

Student code runs in exactly one place: an IPython kernel started by the checker through
``jupyter_client``, whose command line is

    python -m handbook.course.grading.sandbox -f CONNECTION_FILE --scratch DIR --memory-mb N ...

Before that process starts ipykernel (so before it has a second thread, and long before any
student code), it

1. moves into its scratch folder (a fresh temporary folder, deleted after grading);
2. sets resource limits: CPU seconds (a backstop behind the checker's wall-clock limits),
   file size (a disk bomb gets an error) and no core dumps; and, once the kernel is ready, the
   address space: ``--memory-mb`` *on top of what the kernel has mapped by then* (see
   ``_limit_memory``), so a memory bomb gets a MemoryError or dies, never the machine;
3. applies Landlock (see ``landlock.py``): from then on it and its children can write only in
   the scratch folder, read only the Python installation, the ``handbook`` package, system
   libraries, the data caches and their own ``/proc/self`` (not the checker's environment, not
   other students' files, not the gradebook), open no TCP connection and signal no process
   outside the sandbox. Where Landlock is unavailable the launcher says so on stderr and goes
   on: the checker's other defences (below) still hold, but files outside the scratch folder
   are then protected only by the operating system's permissions.

Its environment is built from scratch (``kernel_environment``): PATH, HOME, the locale and the
grader's settings, nothing else of the instructor's. It dies with the checker (PR_SET_PDEATHSIG).

The kernel talks to the checker over ZeroMQ with the IPC transport (socket files in the scratch
folder; no TCP port is open). The checker connects only the shell channel: the kernel's
published outputs (prints, plots, warnings, a printed fake score) go nowhere and cost nothing,
however large. Execution requests are answered with a status only.

Calling a student's function (``SandboxedKernel.call``): the checker writes the arguments as a
plain-value message (``protocol.py``) ``call_<n>`` into the scratch folder and executes one line
in the kernel that runs :func:`serve_call`, which loads them, calls the student's function and
writes its result, or the exception it raised, as ``result_<n>``. The checker reads that back
with the strict reader of ``protocol.py``. Student code can forge only the result of its own
function, which is exactly what is being tested; the comparison with the reference answer
happens in the checker, which never runs student code.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import zmq

from handbook.course.grading import landlock, protocol

# Files and folders the checker and the kernel agree on, inside the scratch folder.
CONNECTION_FILE = "kernel-connection.json"
IPC_PREFIX = "kernel-ipc"
# Seconds a kernel gets to start, and to answer after an interrupt before it counts as hung.
START_SECONDS = 60.0
INTERRUPT_GRACE_SECONDS = 10.0
# The largest execution reply the checker accepts (a reply is a status and an error message).
REPLY_BYTES = 16 * 2**20
# How often the checker looks whether the kernel process is still alive while it waits.
_POLL_SECONDS = 0.2
# Student text (exception messages) kept in a report, in characters.
MESSAGE_CHARS = 1000
# Failures the grader reports itself (not exceptions of the student's code).
MISSING, UNSUPPORTED, BROKEN = "grader:missing", "grader:unsupported", "grader:broken"
# Exceptions a student's function may raise that keep their type when they reach a check, so
# that a check can test ``except ValueError``. Any other type arrives as StudentCodeError.
_PASSTHROUGH = ("ValueError", "TypeError", "IndexError", "KeyError", "LookupError", "RuntimeError",
                "ZeroDivisionError", "ArithmeticError", "OverflowError", "NotImplementedError",
                "AttributeError", "MemoryError")


# ============================================================================================
# Inside the sandbox: the launcher and the helper that serves calls
# ============================================================================================

def _limit(which, soft: int, hard: int | None = None) -> None:
    """Lower a resource limit (never above a hard limit someone set before us)."""
    hard = soft if hard is None else hard
    current_hard = resource.getrlimit(which)[1]
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(which, (soft, hard))


def _set_limits(cpu_seconds: int, file_mb: int) -> None:
    # SIGXCPU at the soft limit ends the kernel; the hard limit (SIGKILL) is the last word.
    _limit(resource.RLIMIT_CPU, cpu_seconds, cpu_seconds + 5)
    # Python ignores SIGXFSZ, so writing past the limit raises OSError (EFBIG) instead.
    _limit(resource.RLIMIT_FSIZE, file_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)


def address_space_bytes() -> int:
    """The address space this process has mapped (VmSize), or 0 where /proc does not say."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _limit_memory(memory_mb: int) -> str:
    """Give the student's code ``memory_mb`` of address space on top of the ready kernel's.

    Why address space, measured from a baseline: RLIMIT_AS is the one limit every Linux (and
    macOS) enforces for an unprivileged process *at the allocation*, so a memory bomb gets a
    MemoryError and the kernel lives on to grade the next question (RLIMIT_RSS is ignored by
    Linux; a cgroup needs privileges or a delegated hierarchy most machines lack). But address
    space is not memory used: the CUDA build of torch maps about 3.2 GB of libraries and
    reservations at import, nearly none of it ever touched, while the CPU build maps far less.
    A fixed RLIMIT_AS would therefore leave a student 4 GB under one build and 0.8 GB (or no
    kernel at all) under the other. Set here, after ipykernel, torch and matplotlib are loaded and
    before any student line runs, the limit means what the instructor asked for with either build:
    memory the student's own code may take.
    """
    baseline = address_space_bytes()
    _limit(resource.RLIMIT_AS, baseline + memory_mb * 2**20)
    return f"memory: {memory_mb} MB for the student's code, on top of the kernel's own {baseline / 2**20:.0f} MB of address space"


def _die_with_parent() -> None:
    """Have Linux kill the kernel if the checker that started it dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    # The checker may have died before the line above: then we were re-parented already.
    if str(os.getppid()) != os.environ.get("JPY_PARENT_PID", str(os.getppid())):
        os._exit(1)


# What a kernel reads outside Python and the course's files. Not all of /proc: the checker's
# /proc/<pid>/environ would show the instructor's environment; /proc/self is this process.
# Not all of /dev: as root, /dev holds the raw disks.
_SYSTEM_READABLE = ["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/sys", "/nix",
                    "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/sys", "/proc/version",
                    "/proc/filesystems", "/proc/loadavg", "/proc/uptime",
                    "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/fd"]


def _confine(scratch: str, readable: list[str]) -> str:
    """Apply Landlock; returns a line for the kernel log saying what holds."""
    abi = landlock.abi_version()
    if abi == 0:
        return ("WARNING: Landlock is not available here: the student kernel can write wherever "
                "this user can. Grade on Linux >= 5.13, or inside a container or as a separate user.")
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    python += [p for p in sys.path if p and os.path.isdir(p)]
    landlock.restrict(readable=sorted(set(_SYSTEM_READABLE + python + readable)),
                      writable=[scratch, "/dev/shm"], writable_files=["/dev/null"])
    return f"landlock ABI {abi}: writes confined to {scratch}"


def _prepare_shell(shell) -> None:
    """Make the kernel fast and quiet: no figure is ever rendered, nothing waits for a display."""
    import matplotlib
    import torch

    matplotlib.use("Agg")  # also set by MPLBACKEND; this makes sure
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)  # -j N kernels in parallel: one core each
    plt.show = lambda *args, **kwargs: None
    # `%matplotlib inline` would switch back to the inline backend, which renders every figure
    # to PNG after each cell; here it does nothing.
    shell.register_magic_function(lambda line="": None, magic_kind="line", magic_name="matplotlib")
    shell.events.register("post_run_cell", lambda result: plt.close("all"))
    shell.events.register("post_run_cell", _release_failed_cell)


def _release_failed_cell(result) -> None:
    """After a cell that raised, let go of its frames' variables.

    IPython keeps the last error (``sys.last_traceback``, the result's ``error_in_exec``), and with
    it every frame it passed through: a notebook cell that calls a student's memory bomb would keep
    the bomb's list (all of ``--memory-mb``) alive, and every later question of that student would
    fail with a MemoryError it did not cause (seen with the CUDA build of torch, whose checks leave
    less slack). The cell is over, so its frames' locals are garbage; the message is already sent.
    """
    error = getattr(result, "error_in_exec", None)
    if error is not None:
        _release_frames(error)
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            setattr(sys, name, None)


def _release_frames(error: BaseException) -> None:
    """Drop the variables of every finished frame ``error`` passed through (the rest of the kernel
    keeps running). ``frame.clear`` empties a frame's own slots, but before Python 3.13 a frame also
    keeps a dict copy of them, made when a traceback was shown with its variables; reading
    ``f_locals`` after the clear syncs that copy (for a cell's frame it is the globals: untouched)."""
    traceback.clear_frames(error.__traceback__)
    tb = error.__traceback__
    while tb is not None:
        tb.tb_frame.f_locals  # noqa: B018 - the read is the sync
        tb = tb.tb_next


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handbook.course.grading.sandbox",
                                     description="Start a confined IPython kernel for grading.")
    parser.add_argument("-f", dest="connection_file", required=True)
    parser.add_argument("--scratch", required=True, help="the only folder the kernel may write to")
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, required=True)
    parser.add_argument("--file-mb", type=int, default=512)
    parser.add_argument("--readable", action="append", default=[], help="a further folder it may read")
    args = parser.parse_args(argv)

    _die_with_parent()
    scratch = os.path.realpath(args.scratch)
    os.chdir(scratch)
    _set_limits(args.cpu_seconds, args.file_mb)
    print(_confine(scratch, [os.path.realpath(p) for p in args.readable]), file=sys.stderr, flush=True)

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(["-f", args.connection_file, "--HistoryManager.enabled=False"])
    _prepare_shell(app.shell)
    print(_limit_memory(args.memory_mb), file=sys.stderr, flush=True)   # last step before student code
    app.start()
    return 0


def serve_call(namespace: dict, name: str, number: int, directory: str) -> None:
    """Run in the student's kernel: call ``namespace[name]`` with the arguments of ``call_<number>``.

    Writes ``result_<number>``: {"ok": True, "value": ..., "generators": [...]} (the generators
    passed in, in their state after the call) or {"ok": False, "type": ..., "message": ...,
    "where": ...}. A KeyboardInterrupt (the checker's timeout) is let through, but as a fresh
    one raised after the original is gone: the original's traceback holds the student's frames,
    and IPython keeps the last traceback (``sys.last_traceback``), so a function stopped while
    holding 2 GB would keep them and fail the next question with a MemoryError.
    """
    interrupted = False
    try:
        request, generators = protocol.read_message(directory, f"call_{number}")
        function = namespace.get(name)
        if function is None:
            result = _failure(MISSING, f"{name} is not defined in your notebook", "")
        elif not callable(function):
            result = _failure(MISSING, f"{name} is not a function in your notebook (it is a {type(function).__name__})", "")
        else:
            value = function(*request["args"], **request["kwargs"])
            result = {"ok": True, "value": value, "generators": generators}
    except KeyboardInterrupt:
        interrupted = True
    except BaseException as error:  # noqa: BLE001 - SystemExit from student code is a failure too
        result = _failure(type(error).__name__, _safe_str(error), _where(error))
        _release_frames(error)  # even if the student kept the error somewhere
    if interrupted:
        raise KeyboardInterrupt("stopped by the checker's time limit")
    try:
        protocol.write_message(directory, f"result_{number}", result)
    except protocol.CodecError as error:
        protocol.write_message(directory, f"result_{number}", _failure(UNSUPPORTED, f"{name} returned {error}", ""))


def _failure(kind: str, message: str, where: str) -> dict:
    return {"ok": False, "type": kind[:100], "message": message[:MESSAGE_CHARS], "where": where}


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)[:MESSAGE_CHARS]
    except BaseException:  # noqa: BLE001 - a student's __str__ may raise anything
        return "(the exception could not be printed)"


def _where(error: BaseException) -> str:
    """'line N of <function>' for the innermost frame of student code, if there is one."""
    try:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    except BaseException:  # noqa: BLE001
        return ""
    if not frames:
        return ""
    frame = frames[-1]
    return f"line {frame.lineno} of its cell, in {frame.name}" if frame.name != "<module>" else ""


# ============================================================================================
# Outside the sandbox: the checker's handle on a student kernel
# ============================================================================================

@dataclass(frozen=True)
class KernelLimits:
    memory_mb: int = 4096      # address space for the student's code, above the ready kernel's
    cpu_seconds: int = 1800    # CPU time of the kernel process (a backstop)
    file_mb: int = 512         # largest file the kernel may write
    message_mb: int = 256      # largest result of one call


@dataclass(frozen=True)
class Outcome:
    """How one execution request ended: ok, error, timeout, dead or unresponsive."""

    status: str
    error: str = ""   # "Type: message" of the student's exception, when status is error


class GradingStop(BaseException):
    """Ends a check at once. A BaseException, like KeyboardInterrupt, so that a check cell's
    ``except Exception:`` cannot swallow it and go on to pass."""


class KernelLost(GradingStop):
    """The kernel died or stopped answering: nothing it would say from now on can be trusted."""


class CallTimeout(GradingStop):
    """A student's function did not return in time (it was interrupted)."""


class StudentCodeError(Exception):
    """An exception raised by a student's function, re-created in the checker as plain data.

    ``kind`` is the exception's type name, or one of MISSING, UNSUPPORTED, BROKEN when the
    grader itself says what went wrong (then ``message`` is the whole story).
    """

    def __init__(self, function: str, kind: str, message: str, where: str = ""):
        self.function, self.kind, self.student_message, self.where = function, kind, message, where
        if kind.startswith("grader:"):
            text = message
        else:
            text = f"{function} raised {kind}" + (f" ({where})" if where else "") + (f": {message}" if message else "")
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:   # also for the KeyError flavour, whose own __str__ adds quotes
        return self.text


def _student_exception(function: str, kind: str, message: str, where: str) -> StudentCodeError:
    """A StudentCodeError that is also a ValueError, TypeError, ... when the student's was one."""
    base = getattr(builtins, kind) if kind in _PASSTHROUGH else None
    if base is None:
        return StudentCodeError(function, kind, message, where)
    cls = type(f"Student{kind}", (StudentCodeError, base), {})
    return cls(function, kind, message, where)


def readable_paths() -> list[str]:
    """Folders outside the Python installation that a student kernel needs to read."""
    import matplotlib

    import handbook
    from handbook.shapeworld import dataset

    paths = [os.path.dirname(handbook.__file__), str(dataset.cache_dir().parent),
             matplotlib.get_configdir(), matplotlib.get_cachedir(), matplotlib.get_data_path()]
    return [p for p in paths if os.path.isdir(p)]


def kernel_environment(scratch: Path) -> dict[str, str]:
    """The kernel's environment: the basics of ours, nothing secret, everything fast and quiet."""
    from handbook.shapeworld import dataset

    # PYTHONPATH: the kernel must import what the grader imports (a source checkout, say).
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HANDBOOK_DEVICE", "PYTHONPATH")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        HANDBOOK_CACHE=str(dataset.cache_dir().parent),   # read the data sets the grader made
        MPLBACKEND="Agg",                                  # no inline PNGs
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
        PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
        MALLOC_ARENA_MAX="2",          # fewer 64 MB arenas counted against the address space
        TMPDIR=str(scratch), IPYTHONDIR=str(scratch / ".ipython"),
        JUPYTER_CONFIG_DIR=str(scratch / ".jupyter"), JUPYTER_DATA_DIR=str(scratch / ".jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(scratch / ".jupyter-runtime"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


class SandboxedKernel:
    """One confined student kernel, used as a context manager::

        with SandboxedKernel(KernelLimits()) as kernel:
            kernel.run("x = 1", timeout=10)          # -> Outcome("ok")
            kernel.call("f", (1,), {}, timeout=5)    # -> f(1), as a plain value

    Everything lives in a private temporary folder (the kernel spec and log beside the scratch
    folder, where the kernel cannot read), removed on exit with the kernel's process group.
    """

    def __init__(self, limits: KernelLimits = KernelLimits(), readable: list[str] | None = None):
        self.limits = limits
        self.readable = readable_paths() if readable is None else list(readable)
        self.lost: str | None = None   # why the kernel can no longer be used
        self.confinement = ""          # the launcher's line about Landlock
        self._calls = 0

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> "SandboxedKernel":
        self.home = Path(tempfile.mkdtemp(prefix="handbook-grading-"))
        self.scratch = self.home / "scratch"
        self.scratch.mkdir()
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        kc, km = getattr(self, "kc", None), getattr(self, "km", None)
        try:
            if kc is not None:
                kc.stop_channels()
            if km is not None and km.has_kernel:
                km.shutdown_kernel(now=True)   # kills the kernel's whole process group
        except Exception:  # noqa: BLE001 - cleaning up must never hide the grading result
            pass
        shutil.rmtree(self.home, ignore_errors=True)

    def _start(self) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        spec_dir = self.home / "kernels" / "handbook-grading"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "handbook.course.grading.sandbox", "-f", "{connection_file}",
                "--scratch", str(self.scratch), "--memory-mb", str(self.limits.memory_mb),
                "--cpu-seconds", str(self.limits.cpu_seconds), "--file-mb", str(self.limits.file_mb)]
        for path in self.readable:
            argv += ["--readable", path]
        (spec_dir / "kernel.json").write_text(json.dumps(
            {"argv": argv, "display_name": "handbook grading sandbox", "language": "python",
             "interrupt_mode": "signal"}))
        specs = KernelSpecManager(kernel_dirs=[str(self.home / "kernels")], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="handbook-grading", kernel_spec_manager=specs,
                                transport="ipc", ip=str(self.scratch / IPC_PREFIX),
                                connection_file=str(self.scratch / CONNECTION_FILE))
        self.km.session.packer = "json"   # never pickle, whatever the configuration says
        self.km.session.unpacker = "json"
        self.log_path = self.home / "kernel.log"
        with open(self.log_path, "wb") as log:
            # The kernel's own stdout/stderr (not the notebook's outputs) go to a log the checker
            # reads only to explain a failed start; RLIMIT_FSIZE caps it.
            # env= replaces (rather than extends) this process's environment.
            self.km.start_kernel(cwd=str(self.scratch), env=kernel_environment(self.scratch),
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.kc = self.km.blocking_client()
        # A reply larger than this (an exception with a gigabyte message) is dropped by ZeroMQ
        # before it reaches this process's memory; the request then ends as unresponsive.
        self.kc.context.setsockopt(zmq.MAXMSGSIZE, REPLY_BYTES)
        self.kc.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self._wait_until_ready()
        self.confinement = self._log_tail(2000).splitlines()[0] if self._log_tail(2000) else ""

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if not self.km.is_alive():
                raise RuntimeError(f"the student kernel did not start:\n{self._log_tail(3000)}")
            msg_id = self.kc.kernel_info()
            if self._wait_reply(msg_id, 1.0) is not None:
                return
        raise RuntimeError(f"the student kernel did not answer within {START_SECONDS:.0f} s:\n{self._log_tail(3000)}")

    def _log_tail(self, chars: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - chars))
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- execution ---------------------------------------------------------------------------

    def _wait_reply(self, msg_id: str, timeout: float) -> dict | None:
        """The shell reply to ``msg_id``, or None after ``timeout`` s or when the kernel is dead."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                msg = self.kc.get_shell_msg(timeout=min(_POLL_SECONDS, remaining))
            except queue.Empty:
                if not self.km.is_alive():
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg

    def run(self, code: str, timeout: float, store_history: bool = False) -> Outcome:
        """Execute ``code``; after ``timeout`` s interrupt it. Never raises for what the code does.

        store_history=True numbers the execution like a notebook cell (``_``, ``Out``).
        """
        if self.lost:
            return Outcome("dead", self.lost)
        msg_id = self.kc.execute(code, silent=False, store_history=store_history, allow_stdin=False,
                                 stop_on_error=False)
        reply = self._wait_reply(msg_id, max(timeout, 0.01))
        if reply is None and self.km.is_alive():
            self.km.interrupt_kernel()
            reply = self._wait_reply(msg_id, INTERRUPT_GRACE_SECONDS)
            if reply is not None:
                return Outcome("timeout")
        if reply is None:
            if self.km.is_alive():
                self.lost = f"the kernel stopped answering (no reply even {INTERRUPT_GRACE_SECONDS:.0f} s after an interrupt)"
                return Outcome("unresponsive", self.lost)
            self.lost = "the kernel died (os._exit, a signal, or a resource limit)"
            return Outcome("dead", self.lost)
        content = reply.get("content", {})
        if content.get("status") == "ok":
            return Outcome("ok")
        kind, message = str(content.get("ename", "Error")), str(content.get("evalue", ""))
        return Outcome("error", f"{kind[:100]}: {message[:MESSAGE_CHARS]}" if message else kind[:100])

    def call(self, name: str, args: tuple, kwargs: dict, timeout: float):
        """``name(*args, **kwargs)`` in the kernel, as a plain value.

        Generators among the arguments come back advanced, as if the call had been local.
        Raises CallTimeout, KernelLost, or StudentCodeError (also for a result that cannot
        cross, such as an always-equal object).
        """
        if self.lost:
            raise KernelLost(self.lost)
        self._calls += 1
        number = self._calls
        limits = protocol.Limits(array_bytes=self.limits.message_mb * 2**20)
        generators = protocol.write_message(self.scratch, f"call_{number}", {"args": list(args), "kwargs": dict(kwargs)})
        snippet = (f"__import__('handbook.course.grading.sandbox', fromlist=['serve_call'])"
                   f".serve_call(globals(), {name!r}, {number}, {str(self.scratch)!r})")
        outcome = self.run(snippet, timeout)
        if outcome.status == "timeout":
            raise CallTimeout(f"{name} did not return within {timeout:.0f} s (it was interrupted)")
        if outcome.status in ("dead", "unresponsive"):
            raise KernelLost(f"{outcome.error}, while running {name}")
        if outcome.status == "error":
            # The helper itself failed: the student replaced or broke what it uses, or filled the disk.
            raise StudentCodeError(name, BROKEN, f"the grader could not call {name} in your kernel: {outcome.error}")
        try:
            result, _ = protocol.read_message(self.scratch, f"result_{number}", limits)
            return self._unpack(name, result, generators)
        except protocol.CodecError as error:
            raise StudentCodeError(name, BROKEN, f"the result of {name} could not be read: {error}") from None
        finally:
            for stem in (f"call_{number}", f"result_{number}"):
                for suffix in (".json", ".bin"):
                    (self.scratch / (stem + suffix)).unlink(missing_ok=True)

    @staticmethod
    def _unpack(name: str, result, generators: list):
        if type(result) is not dict or type(result.get("ok")) is not bool:
            raise protocol.CodecError("the result is not a grader result")
        if not result["ok"]:
            fields = [result.get(k, "") for k in ("type", "message", "where")]
            if not all(type(f) is str for f in fields):
                raise protocol.CodecError("the error report is malformed")
            raise _student_exception(name, *(f[:MESSAGE_CHARS] for f in fields))
        returned = result.get("generators")
        if type(returned) is not list or len(returned) != len(generators):
            raise protocol.CodecError("the generators did not come back")
        import torch

        for original, advanced in zip(generators, returned):
            if not isinstance(advanced, torch.Generator):
                raise protocol.CodecError("a generator came back as something else")
            original.set_state(advanced.get_state())
        return result.get("value")


if __name__ == "__main__":
    sys.exit(main())
