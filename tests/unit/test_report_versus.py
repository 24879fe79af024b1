"""The claims table paired against a control patch (report versus=<tag>): real paired tests on written
samples, the control's run of the same seed, and a clear error for a tag the study does not have."""

from __future__ import annotations

import json

import pytest

from qresafe_exp.report import tables, versus

N = 20


def _row(cell, patch, tag, seed=0, quant="qlora"):
    return {
        "cell": cell,
        "status": "ok",
        "model": "m",
        "quant": quant,
        "bits": 4 if quant != "none" else None,
        "calib": "hh_harmful" if quant != "none" else None,
        "patch": patch,
        "patch_tag": tag,
        "seed": seed,
        "eval": "claims",
        "protocol": "vanilla",
        "reference_cell": "m.fp.none",
        "advbench.asr": 0.0,
        "advbench.asr.vs_fp": 0.99,  # a stale delta vs FP: must not survive into the versus table
        "xstest.refusal_rate": 0.1,
    }


def _answers(tmp_path, cell, jailbroken: int, refused: int):
    folder = tmp_path / cell
    folder.mkdir()
    rows = [{"suite": "advbench", "id": f"a{i}", "jailbroken": i < jailbroken} for i in range(N)]
    rows += [{"suite": "xstest", "id": f"x{i}", "label": "safe", "refused": i < refused} for i in range(N)]
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scores = {
        "advbench": {"metric": "asr", "asr": {"value": jailbroken / N, "n": N}},
        "xstest": {"metric": "refusal_rate", "refusal_rate": {"value": refused / N, "n": N}},
    }
    return cell, (scores, folder)


def test_rows_are_paired_against_the_control_of_the_same_seed_on_the_same_prompts(tmp_path):
    rows = [
        _row("m.fp.none", "none", "none", quant="none"),
        _row("ctl", "qresafe", "random-t0.6"),
        _row("ctl.seed1", "qresafe", "random-t0.6", seed=1),
        _row("trt", "qresafe", "qresafe-t0.6"),
        _row("trt.seed1", "qresafe", "qresafe-t0.6", seed=1),
        _row("trt.seed2", "qresafe", "qresafe-t0.6", seed=2),
    ]
    answers = dict(
        [
            _answers(tmp_path, "m.fp.none", 0, 2),
            _answers(tmp_path, "ctl", 10, 4),
            _answers(tmp_path, "ctl.seed1", 6, 4),
            _answers(tmp_path, "trt", 2, 4),
            _answers(tmp_path, "trt.seed1", 6, 8),
            _answers(tmp_path, "trt.seed2", 2, 4),
        ]
    )
    out = {r["cell"]: r for r in versus.versus_rows(rows, "random-t0.6", answers)}
    # seed 0 vs the control's seed 0: 8 prompts jailbroken by the control only -> -0.40, exact McNemar p = 2 / 2^8
    assert out["trt"]["advbench.asr.vs_fp"] == -0.4 and out["trt"]["advbench.asr.vs_fp.p"] == pytest.approx(
        0.0078125, rel=1e-3
    )  # 4 significant digits
    assert out["trt"]["versus_cell"] == "ctl" and out["trt"]["xstest.refusal_rate.vs_fp"] == 0.0
    # seed 1 vs the control's seed 1 (the same answers on AdvBench: no difference), 4 more XSTest refusals
    assert out["trt.seed1"]["versus_cell"] == "ctl.seed1" and out["trt.seed1"]["advbench.asr.vs_fp"] == 0.0
    assert out["trt.seed1"]["xstest.refusal_rate.vs_fp"] == 0.2
    assert out["trt.seed2"]["versus_cell"] == "ctl"  # the control has no seed 2: its lowest seed
    # the control itself and FP (no control in its base) carry no delta, not even the stale one vs FP
    assert not any(".vs_fp" in k for k in out["ctl"]) and not any(".vs_fp" in k for k in out["m.fp.none"])

    table = tables.claims(versus.versus_rows(rows, "random-t0.6", answers), versus="random-t0.6")
    assert table.name == "claims-claims-vanilla-vs-random-t0.6" and "vs random-t0.6" in table.title
    assert table.notes[0] == "* paired test vs random-t0.6, p < 0.05"
    trt = next(row for row in table.rows if row[3] == "qresafe-t0.6" and row[4] == 0)
    assert "(-0.40*)" in trt[5]

    # one test over the seeds paired with the control's same seed (0 and 1; seed 2 borrowed seed 0's control):
    # AdvBench 8 vs 16 of 40 pairs, all 8 discordant the control's -> -0.20, p = 2 / 2^8; XSTest 12 vs 8 of 40
    pooled = out["trt"][versus.POOLED]
    assert pooled["seeds"] == 2 and out["trt.seed1"][versus.POOLED] is pooled and versus.POOLED not in out["trt.seed2"]
    assert pooled["advbench.asr.vs_fp"] == -0.2 and pooled["advbench.asr.vs_fp.p"] == pytest.approx(0.0078125, rel=1e-3)
    assert pooled["xstest.refusal_rate.vs_fp"] == 0.1 and pooled["xstest.refusal_rate.vs_fp.p"] == 0.125
    assert versus.POOLED not in out["ctl"]  # the control's own seeds are not paired against themselves
    mean = next(row for row in table.rows if row[3] == "qresafe-t0.6" and str(row[4]).startswith("mean"))
    assert (
        mean[4] == "mean of 3, 2 pooled" and mean[5].endswith("(pooled -0.20*)") and mean[6].endswith("(pooled +0.10)")
    )
    assert table.notes[-1].startswith("pooled: one paired test over the seeds")


def test_an_unknown_control_names_the_patch_tags_there_are(tmp_path):
    rows = [_row("m.fp.none", "none", "none", quant="none"), _row("trt", "qresafe", "qresafe-t0.6")]
    with pytest.raises(ValueError, match=r"versus='dpo-t1.0': no patched cell .* Give one of: qresafe-t0.6"):
        versus.versus_rows(rows, "dpo-t1.0", {})


def test_file_names_carry_the_control_tag_without_spaces_or_brackets():
    assert tables._file_slug("qresafe_random_mask-t0.6 (unmerged)") == "qresafe_random_mask-t0.6-unmerged"


def test_several_controls_give_one_table_each(tmp_path):
    from omegaconf import OmegaConf

    rows = [
        _row("m.fp.none", "none", "none", quant="none"),
        _row("rnd", "qresafe", "random-t0.6"),
        _row("dpo", "dpo", "dpo-t1.0"),
        _row("trt", "qresafe", "qresafe-t0.6"),
    ]
    answers = dict(
        [
            _answers(tmp_path, "m.fp.none", 0, 2),
            _answers(tmp_path, "rnd", 10, 4),
            _answers(tmp_path, "dpo", 2, 12),
            _answers(tmp_path, "trt", 2, 4),
        ]
    )
    # the option as Hydra hands it over: null, one tag, or a list
    assert versus.tags(None) == [] and versus.tags("dpo-t1.0") == ["dpo-t1.0"]
    listed = versus.tags(OmegaConf.create({"v": ["random-t0.6", "dpo-t1.0"]}).v)
    assert listed == ["random-t0.6", "dpo-t1.0"]
    with pytest.raises(ValueError, match=r"versus=\[\]"):
        versus.tags([])

    made = [t for tag in listed for t in versus.versus_tables(rows, tag, answers)]
    assert [t.name for t in made] == ["claims-claims-vanilla-vs-random-t0.6", "claims-claims-vanilla-vs-dpo-t1.0"]
    for table, advbench, xstest in zip(made, ("(-0.40*)", "(+0.00)"), ("(+0.00)", "(-0.40*)")):
        trt = dict(zip(table.columns, next(row for row in table.rows if row[3] == "qresafe-t0.6")))
        # vs the random mask: 8 fewer jailbroken; vs LoRA DPO: the same AdvBench answers, 8 fewer XSTest refusals
        assert advbench in trt["AdvBench ASR"] and xstest in trt["XSTest-safe refusal"], trt
