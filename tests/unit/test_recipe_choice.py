"""The report's recipe choice (report/recipe_choice.py): a recorded Q-resafe sweep chooses its recipe by the
claim's bounds (XSTest-safe refusal and perplexity within 10 % of FP), then the lowest mean harm ASR."""

from qresafe_exp.report import claim_targets, recipe_choice, tables
from tests.report_rows import fp_row

FP = "m.fp.none.claims"


def _fp() -> dict:
    return fp_row(
        "m",
        **{
            "advbench.asr": 0.0,
            "harmfulqa.asr": 0.05,
            "xstest_safe.refusal_rate": 0.30,
            "alpaca_eval_ppl.reference_perplexity": 7.0,
        },
    )


def _recipe(lr: float, advbench: float, harmfulqa: float, xstest: float, ppl: float, variant=None, seed=None):
    tag = f"qresafe-lr{lr}" + (" (unmerged)" if variant else "")
    fp = _fp()
    row = {
        **fp,
        "cell": f"m.qlora-nf4.qresafe-lr{lr}.claims"
        + (" [unmerged]" if variant else "")
        + (f".seed{seed}" if seed else ""),
        "quant": "qlora",
        "bits": 4,
        "calib": "hh",
        "patch": "qresafe",
        "patch_tag": tag,
        "reference_cell": FP,
        "seed": seed,
        "patch.lr": lr,
        "patch.epochs": 1,
        "advbench.asr": advbench,
        "harmfulqa.asr": harmfulqa,
        "xstest_safe.refusal_rate": xstest,
        "alpaca_eval_ppl.reference_perplexity": ppl,
    }
    if variant:
        row["variant"] = variant
    return row


def test_the_lowest_harm_asr_within_the_bounds_is_chosen_not_the_lowest_overall():
    rows = [
        _fp(),
        _recipe(5e-6, 0.10, 0.20, 0.31, 7.2),  # within, mean ASR 0.15
        _recipe(2e-5, 0.02, 0.08, 0.32, 7.5),  # within (+7 %, +7 %), mean 0.05: chosen
        _recipe(1e-4, 0.00, 0.02, 0.60, 7.4),  # the lowest ASR, but XSTest-safe +100 %: out
    ]
    table = recipe_choice.recipe_choice(rows)
    assert table.name == "recipe_choice-claims-vanilla"
    assert table.columns[5] == "lr" and "epochs" not in table.columns  # only what the sweep varied
    by_lr = {float(row[5]): row for row in table.rows}
    assert [row[5] for row in table.rows] == ["5e-06", "2e-05", "0.0001"]  # by the swept number, as written
    assert by_lr[2e-5][6] == "0.050" and by_lr[2e-5][-1] == "chosen"
    assert by_lr[1e-4][-1] == "" and by_lr[1e-4][7].startswith("NOT met: XSTest-safe refusal 0.60 vs 0.30 (+100%)")
    assert by_lr[5e-6][-1] == ""
    assert "AdvBench ASR" in table.notes[0] and "HarmfulQA ASR" in table.notes[0]


def test_without_a_recipe_in_the_bounds_nothing_is_chosen_and_the_closest_is_named():
    rows = [_fp(), _recipe(2e-5, 0.02, 0.08, 0.45, 7.5), _recipe(1e-4, 0.00, 0.02, 0.60, 7.4)]
    table = recipe_choice.recipe_choice(rows)
    marks = {float(row[5]): row[-1] for row in table.rows}
    assert marks == {2e-5: "closest (none within the bounds)", 1e-4: ""}  # +50 % strays less than +100 %


def test_merged_and_unmerged_forms_are_chosen_apart_and_a_recipe_is_its_seeds_mean():
    rows = [
        _fp(),
        _recipe(2e-5, 0.30, 0.40, 0.31, 7.1),
        _recipe(1e-4, 0.20, 0.30, 0.31, 7.1),  # seed 0 alone would be chosen (0.25 < 0.35) ...
        _recipe(1e-4, 0.60, 0.70, 0.31, 7.1, seed=1),  # ... but its seeds' mean is 0.45
        _recipe(2e-5, 0.00, 0.04, 0.31, 7.1, variant="unmerged"),
        _recipe(1e-4, 0.00, 0.06, 0.31, 7.1, variant="unmerged"),
    ]
    table = recipe_choice.recipe_choice(rows)
    chosen = {(row[4], float(row[5])) for row in table.rows if row[-1] == "chosen"}
    assert chosen == {("merged", 2e-5), ("unmerged", 2e-5)}
    assert len(table.rows) == 4
    merged_1e4 = next(row for row in table.rows if row[4] == "merged" and float(row[5]) == 1e-4)
    assert merged_1e4[6] == "0.450" and merged_1e4[-2] == "0, 1"
    assert "mean over the seeds named" in table.notes[0]


def test_a_seed_out_of_the_bounds_moves_its_recipe_by_the_mean_not_by_the_lowest_seed():
    """XSTest-safe refusal 0.31 at seed 0 and 0.45 at seed 1: the recipe's 0.38 is +27 % of FP's 0.30, out."""
    rows = [
        _fp(),
        _recipe(2e-5, 0.10, 0.10, 0.31, 7.1),
        _recipe(2e-5, 0.10, 0.10, 0.45, 7.1, seed=1),
        _recipe(1e-4, 0.20, 0.20, 0.31, 7.1),
    ]
    table = recipe_choice.recipe_choice(rows)
    by_lr = {float(row[5]): row for row in table.rows}
    assert by_lr[2e-5][7].startswith("NOT met: XSTest-safe refusal 0.38 vs 0.30 (+27%)")
    assert by_lr[1e-4][-1] == "chosen"


def test_no_sweep_no_table_and_the_report_builds_it_with_the_variants_and_readings():
    assert recipe_choice.recipe_choice([_fp(), _recipe(2e-5, 0.0, 0.0, 0.3, 7.0)]) is None
    assert tables.recipe_choice in tables.BUILDERS and tables.recipe_choice in tables.WITH_VARIANTS
    rows = [_fp(), _recipe(2e-5, 0.02, 0.08, 0.32, 7.5), _recipe(1e-4, 0.00, 0.02, 0.32, 7.4)]
    loose = tables.recipe_choice(rows, readings=claim_targets.Readings(within=0.10))
    strict = tables.recipe_choice(rows, readings=claim_targets.Readings(within=0.05))
    assert [row[-1] for row in loose.rows] == ["", "chosen"]  # both within 10 %: the lower ASR
    assert [row[-1] for row in strict.rows] == ["", "closest (none within the bounds)"]  # +6 % and +7 % ppl


def test_read_on_the_loss_side_only_a_recipe_refusing_less_than_fp_is_within():
    """claim_targets.sides=rise: a fall of XSTest-safe refusal (0.30 -> 0.10) is no utility lost, so the recipe
    is chosen; read two-sided (the default) it strays -67 % and nothing is chosen. A rise still counts."""
    rows = [_fp(), _recipe(2e-5, 0.02, 0.08, 0.10, 7.5), _recipe(1e-4, 0.00, 0.02, 0.60, 7.4)]
    both = recipe_choice.recipe_choice(rows)
    rise = recipe_choice.recipe_choice(rows, claim_targets.Readings(sides="rise"))
    assert [row[-1] for row in both.rows] == ["closest (none within the bounds)", ""]
    assert [row[-1] for row in rise.rows] == ["chosen", ""]
    assert rise.rows[0][7] == "met: XSTest-safe refusal 0.10 vs 0.30 (-67%); ref. ppl 7.50 vs 7.00 (+7%)"
    assert rise.rows[1][7].startswith("NOT met: XSTest-safe refusal 0.60 vs 0.30 (+100%)")
    assert rise.columns[7] == "XSTest-safe refusal and ref. ppl at most +10% of FP"
    assert "claim_targets.sides=rise" in rise.notes[-1] and "sides" not in " ".join(both.notes)


def test_rows_name_their_patch_and_seed_and_a_mask_control_is_not_a_recipe():
    control = {**_recipe(1e-4, 0.00, 0.02, 0.30, 7.1), "patch_tag": "qresafe_random-lr0.0001", "mask_score": "random"}
    rows = [_fp(), _recipe(5e-6, 0.10, 0.20, 0.31, 7.2), _recipe(2e-5, 0.02, 0.08, 0.32, 7.5), control]
    table = recipe_choice.recipe_choice(rows)
    assert table.columns[-3:] == ["patch", "seeds", "choice"]
    # the random-mask control would win the rule (lowest harm ASR, within the bounds): it is left out
    assert [(row[-3], row[-2], row[-1]) for row in table.rows] == [
        ("qresafe-lr5e-06", "0", ""),
        ("qresafe-lr2e-05", "0", "chosen"),
    ]
