"""The claim panels stay legible with many settings and several backbones: the patch tags' shared prefix is
said once (cut only where a tag's part ends), and each unpatched bar names its model when a study has two."""

from qresafe_exp.report.figures import claim_bars, shared_tag_prefix, tick_labels

BASE = "safepatching-random_plus_diffset-a0.05b0.05p0.3"


def test_the_shared_prefix_ends_only_where_a_tags_part_ends():
    assert shared_tag_prefix([BASE, f"{BASE}-norescale", f"{BASE}-al1.0be0.0-rise1.5"]) == BASE
    assert shared_tag_prefix(["qresafe-t0.6", "qresafe-t0.2"]) == "qresafe"  # never half a number
    assert shared_tag_prefix(["sft", "dpo"]) == "" and shared_tag_prefix([BASE]) == ""


def _row(model: str, tag: str | None) -> dict:
    return {
        "status": "ok",
        "model": model,
        "quant": "none",
        "bits": None,
        "calib": None,
        "patch": "safepatching" if tag else "none",
        "patch_tag": tag,
        "advbench.asr": 0.5,
        "xstest_safe.refusal_rate": 0.1,
    }


def test_two_backbones_name_their_fp_bars_and_the_ticks_drop_the_shared_prefix():
    rows = [_row(m, t) for m in ("small", "small-safe") for t in (None, BASE, f"{BASE}-norescale")]
    bars = claim_bars(rows)
    labels, legend = tick_labels(bars)
    assert labels == ["small FP", "…", "…-norescale", "small-safe FP", "…", "…-norescale"]
    assert legend == f"… = {BASE}"
    one_model = claim_bars([r for r in rows if r["model"] == "small"])
    assert [b["label"] for b in one_model][0] == "FP"
