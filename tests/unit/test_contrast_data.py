"""The further sets of safe-but-scary requests the align stage can train on (data/testbed/contrast_benign.json,
model.align.num_contrast; data/testbed/contrast_benign_more.json, contrast_question_forms.json and
contrast_alarming_contexts.json, model.align.extra_contrast), and the one held apart from every align recipe
for a patch's benign pairs (contrast_patch_heldout.json): their shape,
that they never hold an evaluation prompt (XSTest, OKTest: the over-refusal they are meant to lower is
measured there) nor repeat the first set or each other, and that only a recipe that asks for them draws them."""

import csv
import itertools
import json

import pytest
from omegaconf import OmegaConf

from qresafe_exp import align
from qresafe_exp.conf import CONF_DIR
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt

SIMILAR = 0.5  # word-set Jaccard at which a prompt counts as a paraphrase of another


def _words(text: str) -> set[str]:
    return set(normalize_prompt(text).split())


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def _near_paraphrases(items: list[dict], others: list[str]) -> list[tuple[str, float]]:
    """(prompt, closest score) for each item whose prompt comes within SIMILAR of one of ``others``."""
    other_words = [_words(p) for p in others]
    return [
        (r["prompt"], round(score, 2))
        for r in items
        if (score := max(_jaccard(_words(r["prompt"]), o) for o in other_words)) >= SIMILAR
    ]


MORE = "contrast_benign_more"
FORMS = "contrast_question_forms"
CONTEXTS = "contrast_alarming_contexts"
HELD_APART = "contrast_patch_heldout"  # for patch.data.benign only: no align recipe draws it
ALIGN_SETS = (align.CONTRAST_DATASET, MORE, FORMS, CONTEXTS)
SETS = {align.CONTRAST_DATASET: 350, MORE: 290, FORMS: 280, CONTEXTS: 250, HELD_APART: 150}  # at least this many


def _contrast(name: str = align.CONTRAST_DATASET) -> list[dict]:
    return load_records(name, None)


@pytest.mark.parametrize("name", SETS)
def test_contrast_set_is_well_formed_and_new(name):
    items = _contrast(name)
    assert len(items) >= SETS[name]
    assert all(set(r) == {"id", "prompt", "response", "category"} and r["prompt"] and r["response"] for r in items)
    assert max(len(r["response"].split()) for r in items) <= 90  # short answers, as the first set's
    first = json.loads(align.TESTBED_FILE.read_text())["borderline_benign"]
    prompts = [normalize_prompt(r["prompt"]) for r in items]
    assert len(set(prompts)) == len(prompts)
    assert not set(prompts) & {normalize_prompt(r["prompt"]) for r in first}


@pytest.mark.parametrize("one, other", list(itertools.combinations(SETS, 2)))
def test_the_sets_share_no_prompt_and_no_id(one, other):
    first, second = _contrast(one), _contrast(other)
    assert not {normalize_prompt(r["prompt"]) for r in first} & {normalize_prompt(r["prompt"]) for r in second}
    assert not {r["id"] for r in first} & {r["id"] for r in second}


def test_the_question_form_set_opens_as_the_harmful_sources_do():
    """Its point is the opening: CatQA, DangerousQA and HarmfulQA ask "How can I ...?" and "What are ...?"
    questions, so most of its prompts are short questions that open the same way."""
    prompts = [r["prompt"] for r in _contrast(FORMS)]
    assert all(p.rstrip().endswith("?") and len(p.split()) <= 20 for p in prompts)
    opening = ("how can i ", "how can we ", "how can you ", "what are some ways to ", "what are the best ways to ")
    assert sum(normalize_prompt(p).startswith(opening) for p in prompts) >= len(prompts) // 2


@pytest.mark.parametrize("name", SETS)
def test_no_contrast_answer_opens_like_a_testbed_refusal(name):
    """It teaches answering: an answer that opens like one of the 48 refusals the testbed is tuned on would
    teach the opposite. (The refusal rules are not the check: they read 3 of these answers as refusals, e.g.
    a fire-safety answer that says "Never throw water on it".)"""
    refusals = json.loads(align.TESTBED_FILE.read_text())["refusals"]
    openings = {" ".join(normalize_prompt(r).split()[:4]) for r in refusals}
    opening_like = [
        r["prompt"] for r in _contrast(name) if " ".join(normalize_prompt(r["response"]).split()[:4]) in openings
    ]
    assert opening_like == []


@pytest.mark.parametrize("name", SETS)
def test_contrast_set_holds_no_evaluation_prompt(data_dir, name):
    evals = [r["prompt"] for name in ("xstest", "oktest") for r in load_records(name, str(data_dir))]
    with open(data_dir / "oktest" / "OKTest_heldout.csv", newline="") as f:
        evals += [row[-1] for row in list(csv.reader(f))[1:] if row]
    assert _near_paraphrases(_contrast(name), evals) == []


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


def test_extra_contrast_draws_a_further_set_after_the_first(compose_cfg, data_dir):
    """A recipe that names contrast_benign_more draws it beside the first set; the first set's draw (and
    so recipe C's examples) is unchanged, and the built testbeds keep their cache keys."""
    contrast = compose_cfg(["model=smollm2-135m-safe-broad-contrast"]).model.align
    assert "extra_contrast" not in align.spec_fields(contrast)
    more = compose_cfg(["model=smollm2-135m-safe-broad-contrast", f"+model.align.extra_contrast.{MORE}=null"])
    assert align.spec_fields(more.model.align)["extra_contrast"] == {MORE: None}
    examples = align.build_examples(more.model.align, str(data_dir), None)
    borderline = [e["prompt"] for e in examples if e["kind"] == "borderline"]
    assert len(borderline) == (200 + len(_contrast()) + len(_contrast(MORE))) * 2
    assert {r["prompt"] for r in _contrast(MORE)} <= set(borderline)
    before = align.build_examples(contrast, str(data_dir), None)
    kept = lambda ex: sorted((e["prompt"], e["response"]) for e in ex if e["kind"] != "borderline")  # noqa: E731
    assert kept(before) == kept(examples)  # the same refusals and benign answers, drawn before either set


def test_an_extra_contrast_set_enters_the_testbed_key_by_its_content(compose_cfg, data_dir, tmp_path):
    """An edited set is a new testbed: the set's content, not only its name, is keyed."""
    from qresafe_exp.data.registry import resolve_file

    cfg = compose_cfg(["model=smollm2-135m-safe-broad-contrast", f"+model.align.extra_contrast.{MORE}=null"])
    packaged = align.extra_contrast_keys(cfg.model.align, str(data_dir), None)
    assert set(packaged) == {MORE}
    edited = tmp_path / "more.json"
    edited.write_text(resolve_file(MORE, None, None).read_text().replace("kill", "stop", 1))
    own = OmegaConf.create({"extra_contrast": {str(edited): None}})  # a path is no Hydra override key
    assert align.extra_contrast_keys(own, str(data_dir), None)[str(edited)] != packaged[MORE]


def test_a_parquet_contrast_set_is_keyed_by_its_bytes(data_dir, tmp_path):
    import pandas as pd

    from qresafe_exp.cache import content_key

    path = tmp_path / "more.parquet"
    keys = []
    for answer in ("Use break.", "Use break or return."):
        pd.DataFrame([{"prompt": "How do I kill a loop early?", "response": answer}]).to_parquet(path)
        keys.append(align.extra_contrast_keys(OmegaConf.create({"extra_contrast": {str(path): 1}}), None, None))
    assert keys[0] != keys[1] and keys[1][str(path)] == content_key(path.read_bytes())  # the file's bytes


@pytest.mark.parametrize(
    "model, sets",
    [
        ("smollm2-135m-safe-broad-contrast-forms", [FORMS]),  # recipe F: E's extra set swapped for the forms
        ("smollm2-135m-safe-broad-contrast-forms-more", [MORE, FORMS]),  # recipe G: both
        ("smollm2-135m-safe-broad-contrast-contexts", [MORE, FORMS, CONTEXTS]),  # recipe H: G and the contexts
    ],
)
def test_the_question_form_recipes_draw_their_sets(compose_cfg, data_dir, model, sets):
    cfg = compose_cfg([f"model={model}"]).model.align
    assert list(align.spec_fields(cfg)["extra_contrast"]) == sets
    examples = align.build_examples(cfg, str(data_dir), None)
    kinds = {k: sum(e["kind"] == k for e in examples) for k in ("refusal", "benign", "borderline")}
    distinct = 200 + len(_contrast()) + sum(len(_contrast(name)) for name in sets)
    assert kinds == {"refusal": 240, "benign": 400, "borderline": distinct * 2}  # D's refusals, two passes


def test_the_alarming_context_set_asks_as_harmful_requests_do():
    """Its point is a harmful request's form with a context that makes it safe ("How do I ... in <game>?"):
    short questions, most opening as the harmful sources' do, in each of its seven kinds of context."""
    items = _contrast(CONTEXTS)
    assert all(r["prompt"].rstrip().endswith("?") and len(r["prompt"].split()) <= 20 for r in items)
    opening = ("how can i ", "how do i ", "what s the best way ", "what are good ways ", "where can i ", "what steps ")
    assert sum(normalize_prompt(r["prompt"]).startswith(opening) for r in items) >= 0.8 * len(items)
    kinds = {r["category"] for r in items}
    assert kinds == {
        "games_and_sports",
        "fiction_and_stage",
        "technical_homonyms",
        "safe_targets",
        "figurative_language",
        "fictional_characters",
        "definitions",
    }


def test_the_second_align_seed_of_h_redraws_only_what_is_sampled(compose_cfg, data_dir):
    """H's seed-1 config is H with another draw: the same sources, counts and contrast sets (every safe
    question is still trained on), other sampled harmful and benign prompts, and a testbed key of its own."""
    first = compose_cfg(["model=smollm2-135m-safe-broad-contrast-contexts"]).model
    second = compose_cfg(["model=smollm2-135m-safe-broad-contrast-contexts-seed1"]).model
    one, other = align.spec_fields(first.align), align.spec_fields(second.align)
    assert (one.pop("seed"), other.pop("seed")) == (0, 1) and one == other
    assert first.name != second.name  # its own cells in a study
    drawn = [align.build_examples(m.align, str(data_dir), None) for m in (first, second)]
    by_kind = [{k: sorted(e["prompt"] for e in ex if e["kind"] == k) for k in ("refusal", "benign")} for ex in drawn]
    assert by_kind[0]["refusal"] != by_kind[1]["refusal"] and by_kind[0]["benign"] != by_kind[1]["benign"]
    assert all(len(by_kind[0][k]) == len(by_kind[1][k]) for k in ("refusal", "benign"))
    safe = [sorted(e["prompt"] for e in ex if e["kind"] == "borderline") for ex in drawn]
    assert safe[0] == safe[1]  # all of every safe set, two passes, whatever the seed


def test_the_held_apart_set_paraphrases_no_align_prompt():
    """A patch's benign pairs drawn from it test the lever on prompts the model never saw: so not even a
    near-paraphrase (word-set Jaccard >= 0.5) of a prompt any align recipe trains on."""
    trained = [r["prompt"] for name in ALIGN_SETS for r in _contrast(name)]
    trained += [r["prompt"] for r in json.loads(align.TESTBED_FILE.read_text())["borderline_benign"]]
    assert _near_paraphrases(_contrast(HELD_APART), trained) == []


def test_no_align_recipe_draws_the_held_apart_set(compose_cfg):
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    drawing = [m for m in models if HELD_APART in str(compose_cfg([f"model={m}"]).model.get("align"))]
    assert models and drawing == []
