"""The benchmark table: figures merged by part, bars judged, both files written."""

from __future__ import annotations

import json

import pytest

from handbook.course import bench


def test_meets_reads_the_bar():
    assert bench._meets(2500, ">= 2000") is True
    assert bench._meets(1999, ">= 2000") is False
    assert bench._meets(61, "<= 60") is False
    assert bench._meets(5, "") is None


def test_result_is_the_median_of_the_samples():
    r = bench.result("x.y", [3.0, 100.0, 1.0], "s", "<= 10")
    assert r.value == 3.0 and r.meets is True and r.samples == [3.0, 100.0, 1.0]


def test_run_merges_parts_and_writes_both_tables(tmp_path, monkeypatch):
    calls = {"n": 0}

    def fake_fast(repeats):
        calls["n"] += 1
        return [bench.result("fake.speed", [float(calls["n"])] * repeats, "it/s", ">= 2")]

    def fake_other(repeats):
        return [bench.result("other.quality", [0.5], "fraction", ">= 0.9")]

    monkeypatch.setattr(bench, "PARTS", {"fake": fake_fast, "other": fake_other})
    bench.run(["fake", "other"], repeats=2, out_dir=tmp_path)
    bench.run(["fake"], repeats=2, out_dir=tmp_path)  # re-running one part keeps the other
    table = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in table] == ["fake.speed", "other.quality"]
    assert table[0]["value"] == 2.0 and table[0]["meets"] is True
    assert table[1]["meets"] is False
    assert set(table[0]) >= {"name", "value", "unit", "bar", "meets"}
    md = (tmp_path / "RESULTS.md").read_text()
    assert "`fake.speed`" in md and "**no**" in md


def test_repeats_must_be_positive():
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])


def test_merge_replaces_only_the_rows_it_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "PARTS", {"ch3": None})
    bench.merge([bench.result("ch3.notebook_seconds", [100.0], "s", "<= 90"),
                 bench.result("ch3.test_accuracy", [0.98], "fraction", ">= 0.9")], out_dir=tmp_path)
    bench.merge([bench.result("ch3.notebook_seconds", [70.0, 72.0, 71.0], "s", "<= 90")], out_dir=tmp_path)
    table = {r["name"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert set(table) == {"ch3.notebook_seconds", "ch3.test_accuracy"}  # no part given: the other row stays
    assert table["ch3.notebook_seconds"]["value"] == 71.0 and table["ch3.notebook_seconds"]["meets"] is True


def test_bench_notebook_names_its_row_by_chapter_and_version(monkeypatch):
    monkeypatch.setattr(bench, "time_notebook", lambda path: 42.0)
    row = bench.bench_notebook(bench.ROOT / "chapters" / "03_vision_transformer.ipynb", repeats=2)
    assert (row.name, row.value, row.bar, row.samples) == ("ch3.student_notebook_seconds", 42.0, "<= 90", [42.0, 42.0])
    assert bench.bench_notebook(bench.ROOT / "solutions" / "01_introduction.ipynb", 1).bar == "<= 60"
    with pytest.raises(ValueError, match="path"):
        bench.bench_notebook(bench.ROOT / "elsewhere" / "03_x.ipynb", 1)


def test_cli_times_only_the_notebooks_named(tmp_path, monkeypatch):
    timed = []
    monkeypatch.setattr(bench, "time_notebook", lambda path: timed.append(path.name) or 10.0)
    monkeypatch.setattr(bench, "OUT_DIR", tmp_path)
    monkeypatch.setattr(bench, "merge", lambda rows: timed.append([r.name for r in rows]))
    assert bench.main(["--notebook", "solutions/05_ddpm.ipynb", "--repeats", "2"]) == 0
    assert timed == ["05_ddpm.ipynb", "05_ddpm.ipynb", ["ch5.notebook_seconds"]]
    with pytest.raises(SystemExit):
        bench.main(["--notebook", "solutions/05_ddpm.ipynb", "--only", "judge"])
