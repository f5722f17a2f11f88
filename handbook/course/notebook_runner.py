"""Execute a notebook top to bottom with nbclient, without the lost-reply stall.

``execute_notebook`` is what the benchmark (``handbook.course.bench``) and the tests use to run a whole
notebook as a student's "Run all" would.

Why not plain ``nbclient.NotebookClient``: nbclient waits for each cell's ``execute_reply`` with
one long ``await socket.poll(timeout)`` on a ``zmq.asyncio`` socket. That poll is woken through
ZeroMQ's edge-triggered file descriptor, and a wake-up can be missed: the reply is sitting in the
socket, the kernel is idle, and the client sleeps until the cell's timeout. We saw it on this
course's chapter 2 notebook, at its first widget cell, in about half the runs (a 150 s stall, or a
timeout). Polling in short slices re-checks the socket each time, so a missed wake-up costs at
most one slice. The instructor's grader uses jupyter_client's blocking client (a real
``zmq_poll``), which does not have this problem.
"""

from __future__ import annotations

import time
from pathlib import Path
from queue import Empty
from typing import Any

import nbformat
from nbclient import NotebookClient

POLL_SLICE_SECONDS = 1.0


def sliced_get_msg(get_msg, slice_seconds: float = POLL_SLICE_SECONDS):
    """Wrap a channel's ``async get_msg(timeout)`` so it waits in slices of ``slice_seconds``.

    Same contract as the wrapped one: returns the next message, or raises ``queue.Empty`` once
    ``timeout`` seconds have passed without one (``timeout=None`` waits for ever).
    """
    if slice_seconds <= 0:
        raise ValueError(f"slice_seconds: expected a positive number, got {slice_seconds!r}")

    async def get_msg_in_slices(timeout: float | None = None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = slice_seconds if deadline is None else max(0.0, min(slice_seconds, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    return get_msg_in_slices


class SlicedPollClient(NotebookClient):
    """A NotebookClient whose shell and IOPub channels poll in short slices (see the module)."""

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = sliced_get_msg(channel.get_msg)
        return kc


def execute_notebook(nb, cwd: str | Path, timeout: int = 600, allow_errors: bool = True):
    """Run every cell of ``nb`` (in place, and returned) in a fresh ``python3`` kernel in ``cwd``.

    ``timeout`` is per cell, in seconds. With ``allow_errors`` a cell that raises is recorded in
    its outputs and the run goes on (student notebooks raise in their unanswered exercises).
    """
    if not isinstance(nb, nbformat.NotebookNode):
        raise ValueError(f"nb: expected a notebook read with nbformat, got {type(nb).__name__}")
    if not Path(cwd).is_dir():
        raise ValueError(f"cwd: expected an existing folder, got {str(cwd)!r}")
    client = SlicedPollClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                              resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb
