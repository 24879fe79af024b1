"""Parts the claim studies stand on: bounded gradient ascent, bf16 autocast by capability, a testbed
trained on several harmful sources, and a harmful-answer set filtered by the refusal rules."""

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from qresafe_exp import align
from qresafe_exp.devices import autocast_dtype, cpu_has_amx, cpu_has_native_bf16
from qresafe_exp.finetune import train
from qresafe_exp.judges.refusal_rules import classify_refusal
from qresafe_exp.patch.safepatching import train_spec


def _tiny_lm_and_items(n: int = 16):
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
        )
    )
    rng = random.Random(0)
    items = []
    for _ in range(n):
        prompt, response = [rng.randrange(1, 64) for _ in range(6)], [rng.randrange(1, 64) for _ in range(6)]
        items.append({"input_ids": prompt + response, "labels": [-100] * 6 + response})
    return model, items


def _ascent(model, items, **bounds) -> dict:
    """20 epochs of gradient ascent on the tiny model, with the bounds given (stop_above_nll, max_steps, ...)."""
    return train(
        model,
        model.parameters(),
        items,
        epochs=20,
        batch_size=4,
        lr=5e-3,
        pad_id=0,
        seed=0,
        desc="ga",
        ascent=True,
        **bounds,
    )


def test_gradient_ascent_stops_at_the_nll_bound_and_at_the_step_cap():
    model, items = _tiny_lm_and_items()
    bound = 4.3  # a little above the untrained model's NLL (ln 64 = 4.16)
    run = _ascent(model, items, stop_above_nll=bound)
    assert run["stopped_by_nll"] is not None and run["stopped_by_nll"]["batch_nll"] > bound
    assert 0 < run["steps_run"] < run["steps"] == 80
    assert run["loss_first_steps"] < bound
    model, items = _tiny_lm_and_items()
    capped = _ascent(model, items, max_steps=5)
    assert capped["steps"] == capped["steps_run"] == 5 and capped["stopped_by_nll"] is None


def _set_nll(model, items) -> float:
    from qresafe_exp.finetune import collate, response_loss

    with torch.no_grad():
        return response_loss(model, collate(items, 0)).item()


def test_the_bound_held_on_the_whole_set_undoes_the_crossing_update():
    """stop_on=set: the set's NLL is measured after each update; the update that takes it over the bound
    is undone, so the model left is the last one within the bound (the batch rule ends wherever one
    batch's NLL happens to cross)."""
    model, items = _tiny_lm_and_items()
    bound = 4.3
    rows = []
    run = _ascent(model, items, stop_above_nll=bound, set_nll=lambda: _set_nll(model, items), log_step=rows.append)
    stopped = run["stopped_by_nll"]
    assert run["stop_on"] == "set" and stopped["set_nll"] > bound and "batch_nll" not in stopped
    assert 0 < run["steps_run"] == len(rows) == stopped["step"] < run["steps"]
    assert all(r["set_nll"] <= bound for r in rows)  # every kept update is within the bound ...
    assert _set_nll(model, items) == pytest.approx(rows[-1]["set_nll"], abs=1e-4)  # ... and the last one stands
    assert rows[-1]["set_nll"] > rows[0]["set_nll"]  # the ascent did climb


def test_a_bound_below_the_starting_nll_is_refused_with_the_fix():
    model, items = _tiny_lm_and_items()
    with pytest.raises(ValueError, match="raise the bound"):
        train(
            model,
            model.parameters(),
            items,
            epochs=1,
            batch_size=4,
            lr=1e-3,
            pad_id=0,
            seed=0,
            desc="ga",
            ascent=True,
            stop_above_nll=1.0,
        )


def test_unbounded_training_reports_what_it_always_did():
    model, items = _tiny_lm_and_items()
    run = train(model, model.parameters(), items, epochs=1, batch_size=4, lr=1e-3, pad_id=0, seed=0, desc="sft")
    assert "steps_run" not in run and "autocast" not in run and run["steps"] == 4


def test_bf16_autocast_trains_fp32_weights_and_says_so():
    model, items = _tiny_lm_and_items()
    run = train(
        model,
        model.parameters(),
        items,
        epochs=3,
        batch_size=4,
        lr=5e-3,
        pad_id=0,
        seed=0,
        desc="sft",
        autocast=torch.bfloat16,
    )
    assert run["autocast"] == "bfloat16" and run["loss_last_steps"] < run["loss_first_steps"]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _reads_the_flag(reader, tmp_path, with_flag: str, without_flag: str) -> None:
    """``reader`` (a cached /proc/cpuinfo reader) is True on the first text, False on the second and on a
    missing file."""
    yes, no = tmp_path / "yes", tmp_path / "no"
    yes.write_text(with_flag)
    no.write_text(without_flag)
    reader.cache_clear()
    try:
        assert reader(str(yes))
        assert not reader(str(no)) and not reader(str(tmp_path / "absent"))
    finally:
        reader.cache_clear()


def test_amx_read_from_cpu_flags(tmp_path):
    """The flags line only: a model name that says AMX is not the flag (llamacpp.repacking_off_on_amx)."""
    _reads_the_flag(
        cpu_has_amx,
        tmp_path,
        "model name\t: Xeon\nflags\t\t: fpu avx512f amx_bf16 amx_int8 amx_tile\n",
        "model name\t: amx_int8 lookalike\nflags\t\t: fpu avx512f avx512_bf16\n",
    )


def test_native_bf16_read_from_cpu_flags(tmp_path):
    _reads_the_flag(
        cpu_has_native_bf16,
        tmp_path,
        "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n",
        "processor\t: 0\nflags\t\t: fpu sse avx2\n",
    )
    assert autocast_dtype(None, torch.device("cpu")) is None
    assert autocast_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    with pytest.raises(ValueError, match="Allowed: null"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_broad_testbed_draws_refusals_from_every_source(compose_cfg, data_dir):
    cfg = compose_cfg(["model=smollm2-135m-safe-broad"]).model.align
    examples = align.build_examples(cfg, str(data_dir), None)
    kinds = {k: sum(e["kind"] == k for e in examples) for k in ("refusal", "benign", "borderline")}
    assert kinds == {"refusal": 160 + 100 + 40 + 100 + 80, "benign": 400, "borderline": 800}
    from qresafe_exp.data import load_records

    harmfulqa = {r["prompt"] for r in load_records("harmfulqa", str(data_dir))}
    assert sum(e["prompt"] in harmfulqa for e in examples if e["kind"] == "refusal") >= 100  # + shared prompts


def test_later_align_fields_stay_out_of_the_v1_testbeds_key(compose_cfg):
    v1 = align.spec_fields(compose_cfg(["model=smollm2-135m-safe"]).model.align)
    assert "extra_harmful" not in v1 and "autocast" not in v1 and v1["num_harmful"] == 160
    broad = align.spec_fields(compose_cfg(["model=smollm2-135m-safe-broad"]).model.align)
    assert broad["autocast"] == "bf16" and set(broad["extra_harmful"]) == {
        "catqa",
        "dangerousqa",
        "harmfulqa",
        "harmbench_val",
    }


def test_safepatching_bounds_enter_the_key_only_when_set():
    settings = {
        "data": {},
        "se": {"lr": 1e-5, "epochs": 1, "max_steps": None, "max_nll_rise": None},
        "osm": {"lr": 2e-5, "epochs": 1, "max_steps": None, "max_nll_rise": None},
        "target_modules": [],
        "batch_size": 8,
        "max_length": 256,
        "max_response_tokens": 128,
        "snip_batch_size": 4,
    }
    assert train_spec(settings)["se"] == {"lr": 1e-5, "epochs": 1}
    settings["se"]["max_nll_rise"] = 1.0
    assert train_spec(settings)["se"]["max_nll_rise"] == 1.0
    settings["se"]["stop_on"] = "batch"  # the rule as first built: not in the key, cached patches still match
    assert "stop_on" not in train_spec(settings)["se"]
    settings["se"]["stop_on"] = "set"
    assert train_spec(settings)["se"]["stop_on"] == "set"


def test_hh_harmful_keeps_complying_answers_whose_pair_declined(compose_cfg):
    from qresafe_exp.calibration import build_calibration
    from qresafe_exp.patch.safepatching import pairs_cfg

    cfg = compose_cfg(
        ["patch=safepatching", "calib@patch.data=hh_harmful", "patch.data.num_samples=32", "eval=patching"]
    )
    pairs = build_calibration(pairs_cfg(cfg), None)
    kept = pairs.facts["kept_by_judge"]
    assert kept["candidates"] >= 600 and 150 <= kept["kept"] <= 220  # 184 with rules v1
    assert len(pairs.records) == 32
    assert not any(classify_refusal(r["response"]).refused for r in pairs.records)


def test_unknown_refused_field_names_the_fields_there_are(compose_cfg):
    from qresafe_exp.calibration import build_calibration
    from qresafe_exp.patch.safepatching import pairs_cfg

    cfg = compose_cfg(["patch=safepatching", "calib@patch.data=hh_harmful", "patch.data.refused_field=better"])
    with pytest.raises(ValueError, match="refused_field=better.*have: .*chosen"):
        build_calibration(pairs_cfg(cfg), None)
