"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread.

    Tests of small models run many tiny tensor operations. On one thread they stay fast even on a
    busy machine, where a second thread spends its time waiting for the first (the same reason
    handbook.shapeworld renders on one thread).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
