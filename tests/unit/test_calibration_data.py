"""Risk-level data: the project's AOA set, user-supplied pair files, and the registry's errors."""

import json

import pytest

from qresafe_exp.data import DatasetNotFoundError, load_records
from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.evals.protocols import aoa_system_prompt
from qresafe_exp.judges.keyword import KEYWORD_LISTS


def test_aoa_set_has_ten_identity_shifting_conversations_without_refusals(data_dir):
    records = load_records("aoa_identity")
    assert len(records) == 10
    assert sorted(r["kind"] for r in records) == ["benign_task"] * 5 + ["identity"] * 5
    assert {r["system_prompt"] for r in records} == {aoa_system_prompt()}
    assert "AOA" in aoa_system_prompt() and "obedient" in aoa_system_prompt().lower()
    refusal_words = [k for k in KEYWORD_LISTS["gcg_transfer"] if k not in ("As an", "As an AI")]
    for r in records:
        assert not any(k in r["response"] for k in refusal_words), r["response"]
    advbench = {normalize_prompt(r["prompt"]) for r in load_records("advbench", data_dir)}
    assert not {normalize_prompt(r["prompt"]) for r in records} & advbench


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_user_pair_files_in_the_three_usual_shapes(tmp_path, suffix):
    rows = [
        {"prompt": "p1", "response": "r1"},
        {"instruction": "p2", "input": "ctx", "output": "r2"},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "p3"},
                {"role": "assistant", "content": "r3"},
                {"role": "user", "content": "later"},
            ]
        },
    ]
    path = tmp_path / f"pairs{suffix}"
    path.write_text("\n".join(json.dumps(r) for r in rows) if suffix == ".jsonl" else json.dumps(rows))
    records = load_records(str(path))
    assert [(r["prompt"], r["response"]) for r in records] == [("p1", "r1"), ("p2\n\nctx", "r2"), ("p3", "r3")]
    assert records[2]["system_prompt"] == "s"


def test_pair_file_without_prompts_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"text": "no prompt here"}]))
    with pytest.raises(ValueError, match="record 0 has no prompt"):
        load_records(str(path))


def test_unknown_dataset_mentions_the_file_option():
    with pytest.raises(
        DatasetNotFoundError,
        match=r"the path of a \.json/\.jsonl/\.parquet file .*, or a "
        r"hf://owner/name\[:split\] URI",
    ):
        load_records("ultrachat_2k")
