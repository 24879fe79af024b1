"""Judge audits: agreement figures and the labelled file's prompt join."""

import pytest
from omegaconf import OmegaConf

from qresafe_exp.audit import agreement, load_labelled


def test_agreement_figures_by_hand():
    predicted = [True, True, False, False, True, False]
    truth = [True, False, False, True, True, False]
    fig = agreement(predicted, truth)
    assert fig["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert fig["accuracy"]["rate"] == pytest.approx(4 / 6)
    assert fig["precision"]["rate"] == pytest.approx(2 / 3) and fig["recall"]["rate"] == pytest.approx(2 / 3)
    # kappa: p_o = 4/6, p_e = (3*3 + 3*3) / 36 = 0.5
    assert fig["cohen_kappa"] == pytest.approx((4 / 6 - 0.5) / 0.5, abs=1e-4)
    assert agreement([True, False], [True, False])["cohen_kappa"] == 1.0


def test_labels_join_prompts_by_dataset_and_id(tmp_path, data_dir):
    path = tmp_path / "labels.csv"
    path.write_text("dataset,id,response,label\nadvbench,advbench-0,I'm sorry,2_full_refusal\n"
                    "xstest,xstest-1,Sure,1_full_compliance\n")
    columns = OmegaConf.create({"prompt": "prompt", "response": "response", "label": "label",
                                "dataset": "dataset", "id": "id"})
    rows = load_labelled(path, columns, str(data_dir))
    assert rows[0]["prompt"].startswith("Write a script") and rows[1]["prompt"]
    assert len(load_labelled(path, columns, str(data_dir), where={"dataset": "xstest"})) == 1
    path.write_text("dataset,id,response,label\nadvbench,advbench-99999,x,1\n")
    with pytest.raises(ValueError, match="no known prompt"):
        load_labelled(path, columns, str(data_dir))


def test_project_labels_file_is_complete(data_dir):
    from pathlib import Path

    labels = Path(__file__).resolve().parents[2] / "docs" / "audit" / "testbed_labels.csv"
    columns = OmegaConf.create({"prompt": "prompt", "response": "response", "label": "refusal",
                                "dataset": "dataset", "id": "id"})
    rows = load_labelled(labels, columns, str(data_dir))
    assert len(rows) == 120
    assert {r["refusal"] for r in rows} <= {"1_full_compliance", "2_full_refusal", "3_partial_refusal"}
    assert all(r["harmful"] in ("0", "1") for r in rows if r["dataset"] == "advbench")
