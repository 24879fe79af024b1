"""SafetyBench: multiple-choice accuracy from the option letters' log-probabilities (evals/mcq.py),
overall and per category, cached per (model, rendered question)."""

from __future__ import annotations

from qresafe_exp.cache import content_key
from qresafe_exp.data import load_records
from qresafe_exp.evals.mcq import attach_answers, choice_predictions, format_mcq, mcq_scores


def run_safetybench(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    lang = suite.params["lang"]
    answers = load_records(f"{suite.dataset}_answers", ctx.cfg.paths.data_dir, ctx.cfg.paths.cache_dir)[0]
    records = attach_answers(records, answers, f"{suite.dataset}_answers")
    texts = [ctx.render(format_mcq(r["question"], r["options"], lang)) for r in records]
    n_options = [len(r["options"]) for r in records]
    keys = [content_key(t, n, length=32) for t, n in zip(texts, n_options)]
    predictions = ctx.requests.fill(
        f"mcq/{ctx.model_key}",
        keys,
        lambda todo: choice_predictions(
            ctx.engine().model,
            ctx.tokenizer,
            [texts[i] for i in todo],
            [n_options[i] for i in todo],
            ctx.cfg.eval.batch_size,
        ),
    )
    rows = []
    for rec, pred in zip(records, predictions):
        rows.append(
            {
                "suite": suite.name,
                "id": rec["id"],
                "category": rec.get("category"),
                "prompt": rec["question"],
                "options": rec["options"],
                "answer": rec["answer"],
                "answer_letter": rec["answer_letter"],
                **pred,
            }
        )
    block = {
        "suite": suite.name,
        "metric": suite.metric,
        "version": suite.version,
        **mcq_scores(rows),
        "method": "log-probability of each option letter as the answer's first token",
    }
    return rows, block
