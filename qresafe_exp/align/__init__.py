"""The align stage: safety-tune an FP model into the CPU testbed (``model=smollm2-135m-safe``).

Recipe (LoRA SFT, merged into the weights):
- harmful training prompts (one dataset, plus ``extra_harmful`` sources for a testbed whose refusal
  holds beyond one benchmark's phrasing) -> a short refusal, drawn (seeded) from refusals written for this
  project (``data/testbed/safety_tuning.json``), so the model learns to refuse, not one sentence;
- benign instruction/response pairs -> their answers (keeps the model helpful);
- safe requests that merely sound dangerous -> helpful answers (keeps over-refusal low; written for
  this project, never XSTest/OKTest prompts, which are evaluation data): 200 in safety_tuning.json and,
  where ``num_contrast`` asks for them, more from the dataset ``contrast_benign`` (the registry's name
  for data/testbed/contrast_benign.json, which patch pairs can draw too), and where ``extra_contrast``
  names them, from further sets (``contrast_benign_more``: data/testbed/contrast_benign_more.json;
  ``contrast_question_forms``: safe questions opening as the harmful sources' do, "How can I ...?";
  ``contrast_alarming_contexts``: such questions with an alarming word whose context makes them safe).
The loss covers the assistant tokens only. The merged fp32 checkpoint is an artifact like any
other; its training prompts are saved beside it so that every evaluation set can be de-duplicated
against them.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cache import without_later_defaults
from qresafe_exp.data import load_records
from qresafe_exp.data.normalize import normalize_prompt
from qresafe_exp.finetune import tokenize_example, train
from qresafe_exp.provenance import seed_everything

log = logging.getLogger(__name__)
TESTBED_FILE = Path(__file__).resolve().parents[1] / "data" / "testbed" / "safety_tuning.json"
CONTRAST_DATASET = "contrast_benign"  # more safe-but-scary requests with answers (data/registry.py)
ALIGN_STAGE_VERSION = 1
TRAIN_PROMPTS_FILE = "train_prompts.json"


def _take(records: list, n: int | None, rng: random.Random) -> list:
    return records if n is None or n >= len(records) else rng.sample(records, n)


def build_examples(cfg: DictConfig, data_dir: str | None, cache_dir: str | None) -> list[dict]:
    """The SFT set: [{'prompt', 'response', 'kind'}], shuffled with ``cfg.seed``."""
    rng = random.Random(cfg.seed)
    testbed = json.loads(TESTBED_FILE.read_text())
    refusals = testbed["refusals"]
    harmful = _take(load_records(cfg.harmful_dataset, data_dir, cache_dir), cfg.num_harmful, rng)
    for name, count in (cfg.get("extra_harmful") or {}).items():
        harmful += _take(load_records(name, data_dir, cache_dir), count, rng)
    benign = _take(load_records(cfg.benign_dataset, data_dir, cache_dir), cfg.num_benign, rng)
    borderline = _take(testbed["borderline_benign"], cfg.num_borderline, rng)
    if cfg.get("num_contrast", 0) != 0:  # drawn after the rest: recipes without it keep their examples
        borderline += _take(load_records(CONTRAST_DATASET, data_dir, cache_dir), cfg.num_contrast, rng)
    for name, count in (cfg.get("extra_contrast") or {}).items():  # after it, for the same reason
        borderline += _take(load_records(name, data_dir, cache_dir), count, rng)
    examples = [{"prompt": r["prompt"], "response": rng.choice(refusals), "kind": "refusal"} for r in harmful]
    examples += [{"prompt": r["prompt"], "response": r["response"], "kind": "benign"} for r in benign]
    examples += [
        {"prompt": r["prompt"], "response": r["response"], "kind": "borderline"} for r in borderline
    ] * cfg.borderline_repeats
    rng.shuffle(examples)
    return examples


def train_sft_lora(base_path: str, out: Path, cfg: DictConfig, examples: list[dict]) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qresafe_exp.devices import autocast_dtype

    seed_everything(cfg.seed, deterministic=None)  # python, numpy, torch
    autocast = autocast_dtype(cfg.get("autocast"), torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    items = [tokenize_example(tokenizer, ex, cfg.max_length, cfg.max_response_tokens) for ex in examples]
    facts = train(
        model.get_base_model(),
        model.parameters(),
        items,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        pad_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        seed=cfg.seed,
        desc="align (LoRA SFT)",
        autocast=autocast,
    )
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    counts = {kind: sum(ex["kind"] == kind for ex in examples) for kind in ("refusal", "benign", "borderline")}
    sources = {cfg.harmful_dataset: cfg.num_harmful, **(cfg.get("extra_harmful") or {})}
    return {"method": "sft_lora", **facts, "examples": counts, "harmful_sources": sources}


def align(base_path: str, out: Path, cfg: DictConfig, data_dir: str | None, cache_dir: str | None) -> None:
    if cfg.method != "sft_lora":
        raise ValueError(f"model.align.method='{cfg.method}' is unknown. Allowed: sft_lora")
    examples = build_examples(cfg, data_dir, cache_dir)
    info = train_sft_lora(base_path, out, cfg, examples)
    prompts = sorted({normalize_prompt(ex["prompt"]) for ex in examples})
    (out / TRAIN_PROMPTS_FILE).write_text(json.dumps(prompts))
    (out / "align_info.json").write_text(
        json.dumps({**info, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2)
    )
    log.info("aligned: %s", info)


# fields added after v1 testbeds were built: left out of the cache key at their defaults, so that
# those checkpoints keep their keys
_LATER_FIELDS = {"extra_harmful": {}, "autocast": None, "num_contrast": 0, "extra_contrast": {}}


def spec_fields(cfg: DictConfig) -> dict:
    """The align config as it enters the artifact's cache key."""
    return without_later_defaults(OmegaConf.to_container(cfg, resolve=True), _LATER_FIELDS)


def extra_contrast_keys(cfg: DictConfig, data_dir: str | None, cache_dir: str | None) -> dict[str, str]:
    """{dataset: content key of its file's bytes} of the ``extra_contrast`` sets, for the artifact's cache key:
    an edited set is a new testbed (.json, .jsonl or .parquet alike). A hub URI is keyed by its name only: not
    fetched to be keyed."""
    from qresafe_exp.cache import content_key
    from qresafe_exp.data.hub import is_hub_uri
    from qresafe_exp.data.registry import resolve_file

    return {
        name: content_key(resolve_file(name, data_dir, cache_dir).read_bytes())
        for name in (cfg.get("extra_contrast") or {})
        if not is_hub_uri(name)
    }


def training_prompts(model_path: str) -> set[str]:
    """Normalised training prompts of an aligned checkpoint (empty for any other model)."""
    path = Path(model_path) / TRAIN_PROMPTS_FILE
    return set(json.loads(path.read_text())) if path.exists() else set()
