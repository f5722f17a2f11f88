"""The sample class used by the benchmark and by instructors to try the grader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handbook.course import notebooks as nbp
from handbook.course.grading import sample_batch

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "01_introduction.ipynb"


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("class")
    kinds = sample_batch.write_batch(SOLUTION, out, students=len(sample_batch.KINDS) + 2)
    return out, kinds


def _answers(path: Path) -> dict[str, str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return {nbp.nbgrader_meta(c)["grade_id"]: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in nb["cells"] if nbp.is_solution_cell(c) and c["cell_type"] == "code"}


def test_every_kind_appears_and_the_mix_cycles(batch):
    out, kinds = batch
    assert set(kinds.values()) == set(sample_batch.KINDS) == set(sample_batch.EXPECTED)
    assert sorted(p.name for p in out.iterdir()) == sorted(kinds)
    assert list(kinds.values())[len(sample_batch.KINDS)] == "good"


def test_good_is_the_solution_and_handout_is_the_student_notebook(batch):
    out, kinds = batch
    good = next(s for s, k in kinds.items() if k == "good")
    handout = next(s for s, k in kinds.items() if k == "handout")
    assert _answers(out / good / SOLUTION.name) == _answers(SOLUTION)
    assert all("raise NotImplementedError()" in src for src in _answers(out / handout / SOLUTION.name).values())


def test_hostile_kinds_carry_their_attack(batch):
    out, kinds = batch
    text = {k: (out / s / SOLUTION.name).read_bytes() for s, k in kinds.items()}
    assert b"while True" in text["loop"] and b"os._exit" in text["exit"] and b"bytearray" in text["memory_bomb"]
    assert b"torch.allclose = lambda" in text["patched"] and b"AlwaysEqual" in text["always_equal"]
    assert text["empty"] == b""
    with pytest.raises(json.JSONDecodeError):
        json.loads(text["corrupt"])
    with pytest.raises(UnicodeDecodeError):
        text["not_utf8"].decode("utf-8")


def test_students_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="students"):
        sample_batch.write_batch(SOLUTION, tmp_path, students=0)
