"""Suite lm_eval's parts without a model: the harness's output -> the score block, the local tasks' data
files, deltas to the FP reference, the run table's columns, the report's tidy row and table."""

import json
from pathlib import Path

import pytest

from qresafe_exp.evals import lm_harness
from qresafe_exp.evals.runner import eval_spec
from qresafe_exp.pipeline import headline_deltas
from qresafe_exp.report import collect, tables
from qresafe_exp.summary import table_row

# the shape simple_evaluate returns (lm_eval 0.4.13): a group with two subtasks, a generative task with
# two filters, a rolling-perplexity task whose metrics have no stderr ("N/A")
RESULTS = {
    "results": {
        "grp": {"name": "grp", "alias": "grp", "acc,none": 0.5, "acc_stderr,none": 0.1, "sample_len": 20},
        "grp_a": {"alias": " - grp_a", "acc,none": 0.4, "acc_stderr,none": 0.11},
        "grp_b": {"alias": " - grp_b", "acc,none": 0.6, "acc_stderr,none": 0.11},
        "gen": {
            "alias": "gen",
            "exact_match,strict-match": 0.25,
            "exact_match_stderr,strict-match": 0.05,
            "exact_match,flexible-extract": 0.3,
            "exact_match_stderr,flexible-extract": 0.06,
        },
        "ppl": {
            "alias": "ppl",
            "word_perplexity,none": 42.0,
            "word_perplexity_stderr,none": "N/A",
            "bits_per_byte,none": 1.5,
            "bits_per_byte_stderr,none": "N/A",
        },
    },
    "group_subtasks": {"grp": ["grp_a", "grp_b"]},
    "n-samples": {
        "grp_a": {"original": 100, "effective": 10},
        "grp_b": {"original": 100, "effective": 10},
        "gen": {"original": 50, "effective": 50},
        "ppl": {"original": 8, "effective": 8},
    },
    "configs": {"ppl": {"metric_list": [{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}]}},
}


def block(results=RESULTS, order=("ppl", "grp", "gen")) -> dict:
    tasks = lm_harness.task_scores(results, list(order))
    return {
        "suite": "lm_eval",
        "metric": "tasks",
        "version": 1,
        "tasks": tasks,
        "order": list(tasks),
        "metric_order": {t: list(m) for t, m in tasks.items()},
        "groups": results["group_subtasks"],
    }


def test_task_scores_keep_value_stderr_ci_and_n_and_never_invent_a_stderr():
    b = block()
    assert b["order"][:3] == ["ppl", "grp", "gen"]  # as configured, subtasks after
    assert b["tasks"]["grp_a"]["acc"] == {"value": 0.4, "stderr": 0.11, "ci95": [0.1844, 0.6156], "n": 10}
    assert b["tasks"]["grp"]["acc"]["n"] == 20  # a group: its own sample_len
    assert b["tasks"]["ppl"]["word_perplexity"] == {"value": 42.0, "stderr": None, "ci95": [None, None], "n": 8}
    assert b["metric_order"]["ppl"] == ["word_perplexity", "bits_per_byte"]  # the task's metric_list order
    assert set(b["tasks"]["gen"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert lm_harness.top_level(b) == ["ppl", "grp", "gen"]
    # metrics.json is written with sorted keys: the order survives the round trip
    again = json.loads(json.dumps(b, sort_keys=True))
    assert lm_harness.top_level(again) == ["ppl", "grp", "gen"]
    assert lm_harness.task_metrics(again, "ppl")[0] == "word_perplexity"


def _metrics(cell: str, b: dict, reference: dict | None = None, quant: str = "rtn") -> dict:
    m = {
        "cell": cell,
        "study": "s",
        "axes": {
            "model": "tiny",
            "quant": quant,
            "bits": 8 if quant != "none" else None,
            "group_size": None,
            "calib": None,
            "patch": "none",
            "patch_tag": "none",
        },
        "protocol": {"eval": "lm_eval", "protocol": "vanilla"},
        "scores": {"lm_eval": b},
        "summary": {"degenerate": {"rate": None, "n": 0, "k": 0, "ci95": [0, 1]}, "broken": False},
        "cost": {"eval_seconds": 1.0},
    }
    if reference is not None:
        m["reference_cell"] = reference["cell"]
        m["vs_reference"] = headline_deltas(m["scores"], reference["scores"])
    return m


def _worse(b: dict) -> dict:
    worse = json.loads(json.dumps(b))
    worse["tasks"]["grp"]["acc"] = lm_harness.metric_value(0.3, 0.1, 20)
    worse["tasks"]["ppl"]["word_perplexity"] = lm_harness.metric_value(50.0, "N/A", 8)
    return worse


def test_deltas_table_row_and_report_show_each_task_with_its_stderr():
    fp = _metrics("tiny.fp.none.lm_eval", block(), quant="none")
    cell = _metrics("tiny.rtn-w8.none.lm_eval", _worse(block()), reference=fp)
    assert cell["vs_reference"]["lm_eval.grp.acc"] == pytest.approx(-0.2)
    assert cell["vs_reference"]["lm_eval.ppl.word_perplexity"] == pytest.approx(8.0)
    assert "lm_eval.tasks" not in cell["vs_reference"]  # no fake single headline

    row = table_row(cell)  # the end-of-run table: each top-level task's headline metric
    assert row["grp acc"] == "0.30 ±0.10 n=20" and row["grp acc vs FP"] == "-0.20"
    assert row["ppl word_perplexity"] == "50.00 n=8" and row["ppl word_perplexity vs FP"] == "+8.00"
    assert "grp_a acc" not in row  # a group's subtasks stay in metrics.json

    rows = [collect.tidy_row(m) for m in (fp, cell)]
    assert rows[1]["lm_eval.grp.acc"] == 0.3 and rows[1]["lm_eval.grp.acc.stderr"] == 0.1
    assert (
        rows[1]["lm_eval.grp.acc.vs_fp"] == pytest.approx(-0.2) and rows[1]["lm_eval.ppl.bits_per_byte.stderr"] is None
    )
    table = tables.lm_eval_tasks(rows)
    md = table.markdown()
    assert table.name == "lm_eval_tasks-lm_eval-vanilla"
    assert "| patch | ppl.word_perplexity | ppl.bits_per_byte | grp.acc | gen.exact_match,strict-match |" in md
    assert "| tiny | none | 16 | - | none | 42 | 1.5 | 0.5 ±0.1 | 0.25 ±0.05 |" in md
    assert "| tiny | rtn | 8 | - | none | 50 (+8) | 1.5 (+0) | 0.3 ±0.1 (-0.2) | 0.25 ±0.05 (+0) |" in md
    assert "no ± shown" in md and r"$\pm$" in table.latex()
    assert tables.lm_eval_tasks([collect.tidy_row({**fp, "scores": {}})]) is None  # no harness cells, no table


def test_local_tasks_write_their_data_from_the_project_copies(compose_cfg):
    cfg = compose_cfg(["eval=lm_eval"])
    sb = lm_harness.local_task_config("qresafe_safetybench_zh", cfg)
    files = sb["dataset_kwargs"]["data_files"]
    test = [json.loads(line) for line in Path(files["test"]).read_text().splitlines()]
    fewshot = [json.loads(line) for line in Path(files["fewshot"]).read_text().splitlines()]
    assert len(test) + len(fewshot) == 2100 and len(fewshot) == lm_harness.FEWSHOT_DOCS
    assert not {r["id"] for r in fewshot} & {r["id"] for r in test}  # few-shot examples are never evaluated
    assert all(r["letters"] == list("ABCD"[: len(r["options"])]) and 0 <= r["answer"] < len(r["options"]) for r in test)
    assert len({r["category"] for r in test[:200]}) >= 5  # a seeded order: the harness's first N span topics
    again = lm_harness.local_task_config("qresafe_safetybench_zh", cfg)["dataset_kwargs"]["data_files"]
    assert again == files and Path(files["test"]).is_relative_to(cfg.paths.cache_dir)
    ppl = lm_harness.local_task_config("qresafe_alpaca_eval_ppl", cfg)
    texts = Path(ppl["dataset_kwargs"]["data_files"]["test"]).read_text().splitlines()
    assert len(texts) == 803 and ppl["output_type"] == "loglikelihood_rolling"  # 805 answers, 2 of them empty


@pytest.mark.parametrize(
    "override, says",
    [
        ("eval.lm_eval.num_fewshot=-1", "eval.lm_eval.num_fewshot=-1: the number of few-shot examples"),
        ("eval.lm_eval.limit=0", "eval.lm_eval.limit=0: the number of documents per task"),
        ("eval.lm_eval.include_path=/no/such/dir", "eval.lm_eval.include_path=/no/such/dir: no such directory"),
        ("eval.lm_eval.tasks=[/no/such/task.yaml]", "eval.lm_eval.tasks: /no/such/task.yaml: no such task file"),
    ],
)
def test_bad_settings_name_the_key(compose_cfg, override, says):
    with pytest.raises(ValueError, match="^" + says.replace("[", r"\[").replace("(", r"\(")):
        lm_harness.check_lm_eval(compose_cfg(["eval=lm_eval", override]))


def test_the_eval_cache_key_of_every_other_eval_config_is_unchanged(compose_cfg):
    """eval.lm_eval is a new key of every eval config: it enters the evaluation's key only with the suite,
    so the evaluations cached before it keep their keys."""
    reduced = eval_spec(compose_cfg(["eval=reduced"]), None, frozenset())
    assert "lm_eval" not in reduced["eval"] and "lm_eval" not in reduced
    mine = eval_spec(compose_cfg(["eval=lm_eval", "eval.lm_eval.limit=7"]), None, frozenset())
    assert mine["eval"]["lm_eval"]["limit"] == 7 and mine["lm_eval"] == {"version": "0.4.13", "task_files": {}}


def test_a_task_yaml_of_yours_is_in_the_key_by_content(compose_cfg, tmp_path):
    task = tmp_path / "mine.yaml"
    keys = []
    for text in ("task: mine\nmetadata: {version: 1}\n", "task: mine\nmetadata: {version: 2}\n"):
        task.write_text(text)
        keys.append(eval_spec(compose_cfg(["eval=lm_eval", f"eval.lm_eval.tasks=[{task}]"]), None, frozenset()))
    assert keys[0]["lm_eval"]["task_files"][str(task)] != keys[1]["lm_eval"]["task_files"][str(task)]
