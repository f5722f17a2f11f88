"""Run ShapeWorld's tensor code on one CPU thread.

Rendering and signed distances are long streams of small element-wise tensor operations. A
second thread helps a little on an idle machine, but when another process keeps the cores busy
(a model training next to it, a test run), PyTorch's thread pool makes every operation wait for
a thread that is not scheduled: on a busy 2-core machine we measured 75 images/s with two
threads against 8,000 with one, and signed distances 200x slower. One thread is predictable.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Run PyTorch on one thread inside the block, then restore the previous setting."""
    previous = torch.get_num_threads()
    if previous != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if previous != 1:
            torch.set_num_threads(previous)
