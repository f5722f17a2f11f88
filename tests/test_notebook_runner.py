"""handbook.course.notebook_runner: sliced polling survives a missed wake-up; whole notebooks run."""

import asyncio
import time
from queue import Empty

import nbformat
import pytest

from handbook.course.notebook_runner import execute_notebook, sliced_get_msg


class MissedWakeupChannel:
    """A channel whose reply arrives at once, but whose first poll never notices it: that poll
    sleeps its whole timeout, as a zmq.asyncio poll does after a lost edge-triggered wake-up."""

    def __init__(self):
        self.calls = []

    async def get_msg(self, timeout=None):
        self.calls.append(timeout)
        if len(self.calls) == 1:
            await asyncio.sleep(timeout)
            raise Empty
        return {"msg_type": "execute_reply"}


def test_a_missed_wakeup_costs_one_slice_not_the_whole_timeout():
    channel = MissedWakeupChannel()
    get_msg = sliced_get_msg(channel.get_msg, slice_seconds=0.05)
    start = time.monotonic()
    msg = asyncio.run(get_msg(timeout=600))
    assert msg == {"msg_type": "execute_reply"}
    assert time.monotonic() - start < 5
    assert channel.calls[0] == pytest.approx(0.05) and len(channel.calls) == 2


def test_sliced_poll_still_times_out():
    async def never(timeout=None):
        await asyncio.sleep(timeout)
        raise Empty

    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(sliced_get_msg(never, slice_seconds=0.05)(timeout=0.3))
    assert 0.25 < time.monotonic() - start < 3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="slice_seconds"):
        sliced_get_msg(lambda timeout=None: None, slice_seconds=0)
    with pytest.raises(ValueError, match="nb"):
        execute_notebook({"cells": []}, ".")
    with pytest.raises(ValueError, match="cwd"):
        execute_notebook(nbformat.v4.new_notebook(), "/no/such/folder")


def test_a_notebook_with_a_widget_runs_in_its_folder(tmp_path):
    (tmp_path / "data.txt").write_text("42")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.IntSlider(3)"),
        nbformat.v4.new_code_cell("print(open('data.txt').read())"),
        nbformat.v4.new_code_cell("1 / 0"),
    ]
    execute_notebook(nb, tmp_path, timeout=60)
    assert nb.cells[0].outputs[0]["data"]["application/vnd.jupyter.widget-view+json"]
    assert nb.cells[1].outputs[0]["text"] == "42\n"
    assert nb.cells[2].outputs[0]["ename"] == "ZeroDivisionError"
