"""The report's shared answer reader: every cell's samples.jsonl read once, whoever asks (tables, pooled
tests, the sample browser), and the same rows whichever consumer reads them."""

import json

from qresafe_exp.report import samples, versus


def _cell(tmp_path, name: str, jailbroken: int, n: int = 4):
    folder = tmp_path / name
    folder.mkdir()
    rows = [{"suite": "advbench", "id": f"a{i}", "prompt": f"p{i}", "jailbroken": i < jailbroken} for i in range(n)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    block = {"advbench": {"metric": "asr", "asr": {"value": jailbroken / n, "n": n}}}
    return {"cell": name, "scores": block}, folder


def test_each_cells_answers_are_read_once_and_shared_with_the_browser(tmp_path):
    (fp, fp_dir), (patched, patched_dir) = _cell(tmp_path, "m.fp.none", 0), _cell(tmp_path, "m.q.dpo", 3)
    bare = tmp_path / "m.q.none"  # a cell folder without answers: left out, and the browser says so
    bare.mkdir()
    metrics = [fp, patched, {"cell": "m.q.none", "scores": {}}]
    dirs = {"m.fp.none": fp_dir, "m.q.dpo": patched_dir, "m.q.none": bare}
    found = versus.answers(metrics, dirs, tmp_path / "eval")
    assert set(found) == {"m.fp.none", "m.q.dpo"} and found["m.q.dpo"][1] == patched_dir

    first = found.samples("m.q.dpo")
    assert [r["jailbroken"] for r in first] == [True, True, True, False]
    (patched_dir / "samples.jsonl").unlink()  # a second read would fail: the rows come from the first
    assert found.samples("m.q.dpo") is first
    assert versus._reader(found)("m.q.dpo") is first  # the paired tests use the same rows

    page = samples.browser_data(metrics, dirs, 100, rows_of=found.samples_if_any)
    by_cell = {c["cell"]: c for c in page["cells"]}
    assert len(by_cell["m.q.dpo"]["samples"]) == 4 and "note" in by_cell["m.q.none"]
    assert len(page["prompts"]) == 4  # the two cells' prompts, stored once


def test_a_plain_mapping_still_reads_its_answers(tmp_path):
    (_, folder) = _cell(tmp_path, "m.fp.none", 1)
    rows = versus._reader({"m.fp.none": ({}, folder)})("m.fp.none")
    assert sum(r["jailbroken"] for r in rows) == 1
    assert samples.read(tmp_path / "m.fp.none") == rows and samples.read(tmp_path) is None
