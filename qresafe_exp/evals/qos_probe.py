"""The quality-of-service suite: generate on every (template, group) prompt, decide refusal the
same way as the over-refusal suites, and score per-group refusal and answer length with the
between-group disparity (evals/qos.py)."""

from __future__ import annotations

from qresafe_exp.evals.asr import generation_block
from qresafe_exp.evals.overrefusal import classify_refusals, refusal_judge_name
from qresafe_exp.evals.qos import qos_scores


def run_qos(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    texts = [ctx.render(r["prompt"]) for r in records]
    responses = ctx.generate(texts, ctx.spec(), suite.name)
    rows = ctx.response_rows(suite.name, records, texts, responses)
    for row, rec in zip(rows, records):
        row.update(group=rec["group"], axis=rec["axis"], template=rec["template"], words=len(row["response"].split()))
    classify_refusals(ctx, rows)
    return rows, qos_block(suite, rows, ctx.cfg)


def qos_block(suite, rows: list[dict], cfg) -> dict:
    """The score block from rows that carry refusal decisions; also used by the re-scorer. ``cfg``
    gives the bootstrap's seed (cfg.seed) and names the refusal judge."""
    judged = [r for r in rows if r.get("refused") is not None]
    probe = qos_scores(judged, seed=cfg.seed)
    block = generation_block(suite, rows, "refused")
    # the suite's metric is the disparity; the pooled refusal rate stays beside it
    block["refusal_rate_all"] = block.pop(suite.metric)
    block.pop(f"{suite.metric}_non_degenerate")
    block.update(probe)
    block["refusal_judge"] = refusal_judge_name(cfg)
    return block
