"""The second set of safe-but-scary requests the align stage can train on (data/testbed/contrast_benign.json,
model.align.num_contrast): its shape, that it never holds an evaluation prompt (XSTest, OKTest: the
over-refusal it is meant to lower is measured there) nor repeats the first set, and that only a recipe that
asks for it draws from it."""

import csv
import json

from qresafe_exp import align
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt

SIMILAR = 0.5  # word-set Jaccard at which a prompt counts as a paraphrase of another


def _words(text: str) -> set[str]:
    return set(normalize_prompt(text).split())


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _contrast() -> list[dict]:
    return load_records(align.CONTRAST_DATASET, None)


def test_contrast_set_is_well_formed_and_new():
    items = _contrast()
    assert len(items) >= 350
    assert all(set(r) == {"id", "prompt", "response", "category"} and r["prompt"] and r["response"] for r in items)
    assert max(len(r["response"].split()) for r in items) <= 90  # short answers, as the first set's
    first = json.loads(align.TESTBED_FILE.read_text())["borderline_benign"]
    prompts = [normalize_prompt(r["prompt"]) for r in items]
    assert len(set(prompts)) == len(prompts)
    assert not set(prompts) & {normalize_prompt(r["prompt"]) for r in first}


def test_no_contrast_answer_opens_like_a_testbed_refusal():
    """It teaches answering: an answer that opens like one of the 48 refusals the testbed is tuned on would
    teach the opposite. (The refusal rules are not the check: they read 3 of these answers as refusals, e.g.
    a fire-safety answer that says "Never throw water on it".)"""
    refusals = json.loads(align.TESTBED_FILE.read_text())["refusals"]
    openings = {" ".join(normalize_prompt(r).split()[:4]) for r in refusals}
    opening_like = [
        r["prompt"] for r in _contrast() if " ".join(normalize_prompt(r["response"]).split()[:4]) in openings
    ]
    assert opening_like == []


def test_contrast_set_holds_no_evaluation_prompt(data_dir):
    evals = [r["prompt"] for name in ("xstest", "oktest") for r in load_records(name, str(data_dir))]
    with open(data_dir / "oktest" / "OKTest_heldout.csv", newline="") as f:
        evals += [row[-1] for row in list(csv.reader(f))[1:] if row]
    eval_words = [_words(p) for p in evals]
    near = [
        (r["prompt"], round(score, 2))
        for r in _contrast()
        if (score := max(_jaccard(_words(r["prompt"]), e) for e in eval_words)) >= SIMILAR
    ]
    assert near == []


def test_only_a_recipe_that_asks_draws_the_contrast_set(compose_cfg, data_dir):
    v2 = compose_cfg(["model=smollm2-135m-safe"]).model.align
    assert "num_contrast" not in align.spec_fields(v2)  # the built testbeds keep their cache keys
    contrast = compose_cfg(["model=smollm2-135m-safe-broad-contrast"]).model.align
    assert align.spec_fields(contrast)["num_contrast"] is None  # all of it
    examples = align.build_examples(contrast, str(data_dir), None)
    kinds = {k: sum(e["kind"] == k for e in examples) for k in ("refusal", "benign", "borderline")}
    assert kinds == {"refusal": 480, "benign": 400, "borderline": (200 + len(_contrast())) * 2}
    drawn = {e["prompt"] for e in examples}
    assert all(r["prompt"] in drawn for r in _contrast())
