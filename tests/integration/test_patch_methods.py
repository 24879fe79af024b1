"""qresafe / dpo / sft / qresafe_awq on real (tiny) quantized checkpoints: the trained update stays
inside its mask, the DPO reference is the unpatched quantized model, the merge writes the original
format, and the pipeline records cost and the unmerged patch's scores.

The tiny random model answers every prompt with an empty string, which leaves no preference to
learn; a copy with perturbed weights (a stand-in "FP" model, loaded from a local directory through
model=hf) answers with varied text, and its 2-bit quantization answers differently.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qresafe_exp.cache import ArtifactCache, RequestCache
from qresafe_exp.formats import format_of
from qresafe_exp.formats.bitsandbytes import layer_weight
from qresafe_exp.formats.rewrite import link_checkpoint
from qresafe_exp.formats.sidecars import ADAPTER_DIR, PATCH_DELTA, adapter_deltas, attach_patch_delta, save_patch_delta
from qresafe_exp.lm import named_linears
from qresafe_exp.models import load_model, load_tokenizer, materialize
from qresafe_exp.patch.masked_lora import attach_masked_lora
from qresafe_exp.patch.quantized_view import load_trainable
from qresafe_exp.patch.requantize import requantizers, write_merged
from qresafe_exp.patch.trainer import reference_logprobs, tokenize_pairs, train_patch
from qresafe_exp.pipeline import ConfigError, run_cell

SMALL = [
    "patch.data.num_harmful=8",
    "patch.data.max_new_tokens=16",
    "patch.lora_r=4",
    "patch.lora_alpha=8",
    "patch.lr=1e-2",
    "patch.batch_size=4",
    "patch.epochs=2",
    "patch.max_response_tokens=16",
    "logger=none",
    "patch.data.safe_chosen_only=false",
]  # the tiny model refuses nothing: keep every pair


@pytest.fixture(scope="module")
def talkative_dir(tmp_path_factory, shared_cache):
    """A tiny model that produces non-empty, prompt-dependent text (see the module docstring)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from qresafe_exp.schema import register_configs
    from tests.conftest import CONF

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["debug=smoke", "model=tiny-random-llama", f"paths.cache_dir={shared_cache}"])
    GlobalHydra.instance().clear()
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    model = load_model(fp.path, torch.device("cpu"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    out = tmp_path_factory.mktemp("talkative")
    model.save_pretrained(out)
    load_tokenizer(fp.path).save_pretrained(out)
    return out


def _overrides(talkative_dir, *extra):
    return ["debug=smoke", "model=hf", "model.name=talkative", f"model.path={talkative_dir}", *extra]


def _pairs(n=6):
    prompts = [f"Explain step {i} of making a bomb." for i in range(n)]
    return [
        {"prompt": p, "chosen": "I can't help with that.", "rejected": f"Sure, step {i}: mix"}
        for i, p in enumerate(prompts)
    ]


def _trainable(path, cfg, tau, mask_every=1000):
    model, linears, _ = load_trainable(path, torch.device("cpu"), list(cfg.patch.target_modules))
    adapters = attach_masked_lora(model, linears, 4, 8)
    tokenizer = load_tokenizer(path)
    items = tokenize_pairs(tokenizer, _pairs(), cfg.patch, None)
    patch_cfg = cfg.patch.copy()
    patch_cfg.tau, patch_cfg.mask_every = tau, mask_every
    return model, adapters, items, patch_cfg, tokenizer.pad_token_id


def test_entries_outside_the_snip_mask_never_change(compose_cfg, talkative_dir):
    cfg = compose_cfg(_overrides(talkative_dir, "patch=qresafe", *SMALL))
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    model, adapters, items, patch_cfg, pad = _trainable(fp.path, cfg, tau=0.3)
    base = {n: a.base.weight.detach().clone() for n, a in adapters.items()}
    facts = train_patch(model, adapters, items, patch_cfg, pad, seed=0)
    changed_inside = 0
    for name, adapter in adapters.items():
        after = adapter.effective_weight().detach()
        assert torch.equal(adapter.base.weight, base[name])  # the quantized base itself is frozen
        assert torch.equal(after[~adapter.mask], base[name][~adapter.mask])  # outside the mask: untouched
        changed_inside += int((after[adapter.mask] != base[name][adapter.mask]).sum())
        assert adapter.mask.float().mean().item() == pytest.approx(0.3, abs=0.01)  # top-tau per matrix
    assert changed_inside > 0 and facts["loss_last_steps"] < facts["loss_first_steps"]
    assert facts["updatable_entries"] < facts["weight_entries"] and facts["mask_selections"] == 1


def test_mask_is_reselected_every_k_steps_and_earlier_updates_persist(compose_cfg, talkative_dir):
    cfg = compose_cfg(_overrides(talkative_dir, "patch=qresafe", *SMALL))
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    model, adapters, items, patch_cfg, pad = _trainable(fp.path, cfg, tau=0.2, mask_every=2)
    patch_cfg.epochs = 2  # 6 pairs / batch 4 = 2 steps per epoch -> 4 steps, masks at steps 0 and 2
    base = {n: a.base.weight.detach().clone() for n, a in adapters.items()}
    first = {n: a.mask.clone() for n, a in adapters.items()}
    facts = train_patch(model, adapters, items, patch_cfg, pad, seed=0)
    assert facts["steps"] == 4 and facts["mask_selections"] == 2
    union_changed_outside = 0
    for name, adapter in adapters.items():
        union = first[name] | adapter.mask
        after = adapter.effective_weight().detach()
        assert torch.equal(after[~union], base[name][~union])  # never outside the masks used
        assert adapter.folded is not None  # the first mask's update was kept, not dropped
        union_changed_outside += int((adapter.folded[~adapter.mask] != 0).sum())
    assert union_changed_outside > 0  # entries updated under the first mask only still carry their update


def test_dpo_reference_is_the_unpatched_quantized_model(compose_cfg, talkative_dir):
    cfg = compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=qresafe", *SMALL))
    fp, quantized = _quantized(cfg)
    model, adapters, items, patch_cfg, pad = _trainable(quantized.path, cfg, tau=0.6)
    before = reference_logprobs(model, adapters, items, 4, pad)
    train_patch(model, adapters, items, patch_cfg, pad, seed=0)
    after = reference_logprobs(model, adapters, items, 4, pad)
    assert torch.allclose(before, after, atol=1e-5)  # training never moves the reference

    def plain_logprobs(path):
        plain = load_model(path, torch.device("cpu"))
        return reference_logprobs(plain, {}, items, 4, pad)

    assert torch.allclose(after, plain_logprobs(quantized.path), atol=1e-4)  # = the quantized checkpoint
    assert not torch.allclose(after, plain_logprobs(fp.path), atol=1e-2)  # not the FP model
    with torch.no_grad():  # while the trained policy has moved away from it
        from qresafe_exp.finetune import collate
        from qresafe_exp.patch.trainer import _summed_logprobs

        policy = _summed_logprobs(model, collate([it["chosen"] for it in items], pad))
    assert not torch.allclose(policy, after[:, 0], atol=1e-3)


def _quantized(cfg):
    """(FP model, its quantized checkpoint) for a composed cell config, through the pipeline's stage."""
    from qresafe_exp.pipeline import quantize
    from qresafe_exp.stages import StageContext

    artifacts = ArtifactCache(cfg.paths.cache_dir)
    fp = materialize(cfg.model, artifacts, cfg.paths)
    requests = RequestCache(Path(cfg.paths.cache_dir) / "requests.sqlite")
    try:
        quantized = quantize(fp, cfg, StageContext(artifacts, requests, torch.device("cpu"))).model
    finally:
        requests.close()
    return fp, quantized


def _rtn_checkpoint(compose_cfg, talkative_dir, bits):
    return _quantized(compose_cfg(_overrides(talkative_dir, "quant=rtn", f"bits={bits}")))


def test_compressed_tensors_merge_keeps_the_grid_and_the_format(compose_cfg, talkative_dir, tmp_path):
    _, quantized = _rtn_checkpoint(compose_cfg, talkative_dir, bits=4)
    plain = load_model(quantized.path, torch.device("cpu"))
    linears = named_linears(plain)
    zero = {n: torch.zeros_like(m.weight) for n, m in linears.items()}
    facts = write_merged(quantized.path, zero, tmp_path / "same", torch.device("cpu"))
    assert facts["changed_entries"] == 0  # re-quantizing an unpatched model is the identity
    name = next(iter(linears))
    big = {name: torch.randn_like(linears[name].weight) * linears[name].weight.abs().max()}
    facts = write_merged(quantized.path, big, tmp_path / "merged", torch.device("cpu"))
    assert facts["changed_fraction"] > 0.5 and 0 < facts["realized_fraction"] <= 1.5
    merged = load_model(str(tmp_path / "merged"), torch.device("cpu"))
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["quantization_config"]["format"] == "pack-quantized"
    weight = dict(named_linears(merged))[name].weight
    target = linears[name].weight + big[name]
    group = config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"]
    for row in range(0, weight.shape[0], 7):  # still <= 16 values per group of 64 (4-bit grid)
        assert weight[row, :group].unique().numel() <= 16
    assert (weight - target).abs().mean() < (linears[name].weight - target).abs().mean()  # moved towards it
    other = [n for n in linears if n != name][0]
    assert torch.equal(dict(named_linears(merged))[other].weight, linears[other].weight)  # untouched layer


@pytest.mark.parametrize("fmt", ["nf4", "int8"])
def test_bnb_merge_requantizes_patched_layers_only(compose_cfg, talkative_dir, tmp_path, fmt):
    bits = 4 if fmt == "nf4" else 8
    _, quantized = _quantized(compose_cfg(_overrides(talkative_dir, "quant=bnb", f"bits={bits}")))
    model = load_model(quantized.path, torch.device("cpu"))
    layers = {n: m for n, m in named_linears(model).items()}
    name, other = list(layers)[:2]
    before = {n: layer_weight(m) for n, m in layers.items()}
    # one layer moved far, every other patched layer by a delta far below the grid step
    delta = {
        n: torch.randn_like(w) * w.abs().max() * (0.5 if n == name else 1e-4) for n, w in before.items() if n != other
    }
    facts = write_merged(quantized.path, delta, tmp_path / "merged", torch.device("cpu"))
    assert facts["realized_fraction"] > 0.3 and "bitsandbytes" in facts["format"]
    merged = load_model(str(tmp_path / "merged"), torch.device("cpu"))
    merged_layers = dict(named_linears(merged))
    assert type(merged_layers[name]).__name__ == type(layers[name]).__name__  # still a bnb layer
    after = layer_weight(merged_layers[name])
    target = before[name] + delta[name]
    assert (after - target).abs().mean() < (before[name] - target).abs().mean()
    for n in delta:  # a tiny delta leaves a layer (nearly) as it was: the packed layout was written right
        if n != name:
            assert (layer_weight(merged_layers[n]) - before[n]).abs().mean() < 0.05 * before[n].abs().mean()
    assert torch.equal(layer_weight(merged_layers[other]), before[other])  # an unpatched layer keeps its bytes


def test_unmerged_delta_sidecar_adds_exactly_the_delta(compose_cfg, talkative_dir, tmp_path):
    cfg = compose_cfg(_overrides(talkative_dir))
    fp = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    model = load_model(fp.path, torch.device("cpu"))
    name, layer = next(iter(named_linears(model).items()))
    delta = torch.randn_like(layer.weight) * 0.01
    link_checkpoint(Path(fp.path), tmp_path / "adapter")
    save_patch_delta({name: delta}, tmp_path / "adapter")
    patched = load_model(str(tmp_path / "adapter"), torch.device("cpu"))
    x = torch.randn(3, layer.in_features)
    expected = layer(x) + x @ delta.half().float().T
    assert torch.allclose(dict(named_linears(patched))[name](x), expected, atol=1e-5)
    assert attach_patch_delta(model, fp.path) == 0  # a checkpoint without the file is left alone


def test_pipeline_patch_cell_records_cost_variants_and_shares_the_dpo_artifact(compose_cfg, talkative_dir):
    cfg = compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=qresafe", "patch.tau=1.0", *SMALL))
    metrics = run_cell(cfg)
    patch = metrics["patch"]
    assert metrics["cell"] == "talkative.rtn-w2g64.qresafe-t1.0" and metrics["axes"]["patch_tag"] == "qresafe-t1.0"
    assert (
        patch["train"]["objective"] == "dpo" and patch["train"]["updatable_entries"] == patch["train"]["weight_entries"]
    )
    assert patch["cost"]["wall_seconds"] > 0 and patch["cost"]["rss_peak_mb"] >= patch["cost"]["rss_before_mb"]
    assert patch["train"]["trainable_params"] > 0 and patch["pairs"]["pairs"] > 0
    assert set(patch["merge"]) >= {"realized_fraction", "changed_fraction", "format"}
    adapter = patch["variants"]["adapter"]
    assert adapter["scores"]["advbench"]["asr"]["n"] == metrics["scores"]["advbench"]["asr"]["n"]
    assert "advbench.asr" in adapter["cell_minus_variant"]
    # the dpo baseline is qresafe at tau = 1: same artifacts, nothing retrained (and merged-only by default)
    same = run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=dpo", *SMALL)))
    assert same["patch"]["artifact"] == patch["artifact"] and same["patch"]["cached"] is True
    assert same["cell"].endswith(".dpo") and "variants" not in same["patch"]
    # tau = 0 lets nothing change: the quantized model is evaluated as it is
    none = run_cell(
        compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=qresafe", "patch.tau=0", *SMALL))
    )
    base = run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "logger=none")))
    assert none["artifacts"]["eval"] == base["artifacts"]["eval"] and none["patch"]["updatable_entries"] == 0


def test_full_dpo_trains_every_entry_of_the_target_matrices_and_merges_like_a_lora_patch(compose_cfg, talkative_dir):
    """patch=dpo_full (the paper's full-DPO cost baseline): the same pairs and objective, a dense delta over
    every entry (no rank, no mask), its own training artifact, merged and evaluated like the LoRA patches."""
    metrics = run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=dpo_full", *SMALL)))
    train = metrics["patch"]["train"]
    assert metrics["cell"].endswith(".dpo_full") and train["objective"] == "dpo"
    assert metrics["axes"]["patch"] == "dpo_full"  # the report finds the cost baseline by this name
    assert train["trainable_params"] == train["weight_entries"] == train["updatable_entries"]  # every entry
    lora = run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=dpo", *SMALL)))
    assert lora["patch"]["train_artifact"] != metrics["patch"]["train_artifact"]
    assert lora["patch"]["train"]["trainable_params"] < train["trainable_params"]
    assert train["loss_last_steps"] < train["loss_first_steps"] and metrics["patch"]["merge"]["delta_norm"] > 0
    assert metrics["scores"]["advbench"]["asr"]["n"] > 0 and "adapter" not in metrics["patch"].get("variants", {})


def test_sft_patch_runs_and_unsupported_combinations_are_named(compose_cfg, talkative_dir):
    metrics = run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=sft", *SMALL)))
    assert (
        metrics["patch"]["train"]["objective"] == "sft"
        and "reward_accuracy_last_steps" not in metrics["patch"]["train"]
    )
    with pytest.raises(ConfigError, match="patch=safepatching on quant=gguf"):
        run_cell(compose_cfg(_overrides(talkative_dir, "quant=gguf", "patch=safepatching")))
    with pytest.raises(ConfigError, match="needs quant=awq"):
        run_cell(compose_cfg(_overrides(talkative_dir, "quant=gptq", "patch=qresafe_awq", "logger=none")))
    benign = (*SMALL, "patch.data.num_benign=2")
    for error, match, settings in (
        # benign pairs that disprefer a refusal need the FP model's own refusals: the talkative model gives none
        (ValueError, "refused none of the harmful patch prompts", ["patch.data.benign_rejected=refusal"]),
        # preferring the written answer over an FP refusal needs a set with answers: refused before any work
        (
            ConfigError,
            "benign=oktest has no responses",
            ["patch.data.benign=oktest", "patch.data.benign_refused=reference"],
        ),
    ):
        with pytest.raises(error, match=match):
            run_cell(compose_cfg(_overrides(talkative_dir, "quant=rtn", "bits=2", "patch=qresafe", *benign, *settings)))
    with pytest.raises(ConfigError, match="num_harmful=100000"):
        run_cell(
            compose_cfg(
                _overrides(talkative_dir, "quant=rtn", "patch=qresafe", *SMALL, "patch.data.num_harmful=100000")
            )
        )


def test_awq_variant_keeps_safety_critical_weights_in_16_bit(compose_cfg, talkative_dir):
    cfg = compose_cfg(
        _overrides(
            talkative_dir,
            "quant=awq",
            "patch=qresafe_awq",
            "patch.keep_fraction=0.05",
            "patch.data.num_harmful=4",
            "patch.data.max_new_tokens=16",
            "patch.max_response_tokens=16",
            "logger=none",
            "patch.data.safe_chosen_only=false",
        )
    )
    metrics = run_cell(cfg)
    patch = metrics["patch"]
    assert patch["kept_entries"] == pytest.approx(0.05 * patch["weight_entries"], rel=0.01)
    path = Path(cfg.paths.cache_dir) / "patch" / patch["artifact"]
    plain_awq = load_model(
        metrics["quantization"]["artifact"]
        and str(Path(cfg.paths.cache_dir) / "quantize" / metrics["quantization"]["artifact"]),
        torch.device("cpu"),
    )
    kept = load_model(str(path), torch.device("cpu"))
    name = next(iter(named_linears(kept)))
    a, b = dict(named_linears(plain_awq))[name].weight, dict(named_linears(kept))[name].weight
    differs = int((a != b).sum())
    assert 0 < differs <= math.ceil(0.05 * a.numel())  # only kept entries leave the grid (AWQ is deterministic)
    assert patch["sizes"]["kept_weights_bytes"] > 0 and patch["cost"]["wall_seconds"] > 0


def test_quant_aware_training_optimizes_exactly_the_merged_model(compose_cfg, talkative_dir, tmp_path):
    from qresafe_exp.finetune import collate
    from qresafe_exp.patch.trainer import _summed_logprobs

    _, quantized = _rtn_checkpoint(compose_cfg, talkative_dir, bits=4)
    cfg = compose_cfg(_overrides(talkative_dir, "quant=rtn", "patch=qresafe", *SMALL))
    model, adapters, items, patch_cfg, pad = _trainable(quantized.path, cfg, tau=0.6)
    batch = collate([it["chosen"] for it in items], pad)
    with torch.no_grad():
        unpatched = _summed_logprobs(model, batch)
    for name, fn in requantizers(quantized.path, list(adapters)).items():
        adapters[name].requantizer = fn
    with torch.no_grad():  # a fresh patch through the re-quantizer is the quantized model itself
        assert torch.allclose(_summed_logprobs(model, batch), unpatched, atol=1e-5)
    patch_cfg.lr = 5e-2
    train_patch(model, adapters, items, patch_cfg, pad, seed=0)
    deltas = {n: a.delta().detach() for n, a in adapters.items()}
    facts = write_merged(quantized.path, deltas, tmp_path / "merged", torch.device("cpu"))
    assert facts["changed_entries"] > 0
    with torch.no_grad():
        policy = _summed_logprobs(model, batch)
        merged = _summed_logprobs(load_model(str(tmp_path / "merged"), torch.device("cpu")), batch)
    assert torch.allclose(policy, merged, atol=1e-3)  # what training saw is what the checkpoint holds
    assert not torch.allclose(policy, unpatched, atol=1e-3)


def test_patch_on_a_qlora_adapter_cell_trains_on_base_plus_adapter(compose_cfg, talkative_dir):
    """A merge=adapter cell is patched as it serves (bnb base + adapter): the trainable view computes
    what the cell computes; the unmerged form keeps the adapter beside the delta; the merged form folds
    the adapter in (it re-quantizes every layer the adapter touched)."""
    cfg = compose_cfg(_overrides(talkative_dir, "quant=qlora", "quant.merge=adapter", "patch=qresafe", *SMALL))
    quantized = _quantized(cfg)[1].path
    folded = adapter_deltas(quantized)
    assert (Path(quantized) / ADAPTER_DIR).is_dir() and folded
    targets = list(cfg.patch.target_modules)
    _, view, _ = load_trainable(quantized, torch.device("cpu"), targets)
    base = load_model(quantized, torch.device("cpu")).unload()  # the bnb base without its adapter
    base_view, _ = format_of(quantized).trainable_view(
        base, {n: m for n, m in named_linears(base).items() if n.split(".")[-1] in targets}
    )
    for name, delta in folded.items():  # each trained weight is the base's grid weight + the adapter's update
        assert delta.abs().max() > 0
        torch.testing.assert_close(view[name].weight, base_view[name].weight + delta, atol=1e-6, rtol=0)
    metrics = run_cell(cfg)
    patched = ArtifactCache(cfg.paths.cache_dir).path("patch", metrics["patch"]["artifact"])
    assert (patched / "adapter" / ADAPTER_DIR).is_dir() and (patched / "adapter" / PATCH_DELTA).exists()
    assert not (patched / "merged" / ADAPTER_DIR).exists()
    assert "adapter" in metrics["patch"]["variants"]


def test_the_shared_merge_folds_a_qlora_adapter_cells_fine_tune(compose_cfg, talkative_dir, tmp_path):
    """write_merged on a merge=adapter cell writes Q(base + adapter + delta), whichever patch calls it, so
    SafePatching (which trains on base + adapter too, quantized_view) is no longer refused on such a cell."""
    from qresafe_exp.patch.safepatching import SafePatching

    cfg = compose_cfg(_overrides(talkative_dir, "quant=qlora", "quant.merge=adapter", "patch=safepatching"))
    SafePatching.validate(cfg.patch, cfg.quant)  # refused before the merge folded adapters
    # two steps of tiny training leave an adapter below NF4's rounding step: a copy with B scaled up moves the grid
    quantized = tmp_path / "cell"
    shutil.copytree(_quantized(cfg)[1].path, quantized, symlinks=False)
    adapter_file = quantized / ADAPTER_DIR / "adapter_model.safetensors"
    tensors = load_file(str(adapter_file))
    save_file({k: v * 1e4 if ".lora_B." in k else v for k, v in tensors.items()}, str(adapter_file))
    folded = adapter_deltas(str(quantized))
    patched, adapter_only = list(folded)[:2]  # (the tiny model's adapter touches every Linear)

    def grid_weights(path, unload=False):  # the fp32 weights a bnb checkpoint's layers dequantize to
        model = load_model(str(path), torch.device("cpu"))
        model = model.unload() if unload else model
        layers = {n: m for n, m in named_linears(model).items() if n in (patched, adapter_only)}
        view, _ = format_of(str(quantized)).trainable_view(model, layers)
        return {n: view[n].weight.detach().float() for n in layers}

    base = grid_weights(quantized, unload=True)  # the bnb base without its adapter
    delta = {patched: 0.05 * base[patched].abs().max() * torch.randn_like(base[patched])}
    write_merged(str(quantized), delta, tmp_path / "merged", torch.device("cpu"))
    assert not (tmp_path / "merged" / ADAPTER_DIR).exists()
    merged = grid_weights(tmp_path / "merged")
    # the format's own merge of base + adapter + delta, written by hand: what every patch's merge must give
    updates = dict(folded)
    updates[patched] = folded[patched] + delta[patched]
    format_of(str(quantized)).write_merged(updates, tmp_path / "by_hand", torch.device("cpu"))
    by_hand = grid_weights(tmp_path / "by_hand")
    for name in (patched, adapter_only):
        assert torch.equal(merged[name], by_hand[name])
        target = base[name] + updates[name]  # and the fine-tune is in it: nearer base + adapter than base
        assert (merged[name] - target).norm() < 0.5 * (merged[name] - target + folded[name]).norm()
