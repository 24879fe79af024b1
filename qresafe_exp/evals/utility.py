"""Utility suites: reference-answer perplexity (no judge), MT-Bench (two turns, judge 1-10) and
AlpacaEval win rate against a reference model's outputs (pairwise judge)."""

from __future__ import annotations

from qresafe_exp.data import load_records
from qresafe_exp.evals.judging import judge_failures
from qresafe_exp.evals.perplexity import cached_perplexities
from qresafe_exp.judges import rubrics
from qresafe_exp.stats import geometric_mean_ci, mean_ci


def run_reference_perplexity(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    """Perplexity of each reference answer (its first ``max_new_tokens`` tokens) under the model."""
    tok, cap = ctx.tokenizer, ctx.cfg.eval.max_new_tokens
    texts = [ctx.render(r["prompt"]) for r in records]
    references = [tok.decode(tok(r["response"], add_special_tokens=False)["input_ids"][:cap]) for r in records]
    values = cached_perplexities(
        lambda: ctx.engine().model,
        tok,
        ctx.model_key,
        texts,
        references,
        ctx.requests,
        ctx.cfg.eval.batch_size,
        desc=f"reference perplexity {suite.name}",
    )
    rows = [
        {"suite": suite.name, "id": r["id"], "prompt": r["prompt"], "reference": ref, "perplexity": v}
        for r, ref, v in zip(records, references, values)
    ]
    return rows, {
        "suite": suite.name,
        "metric": suite.metric,
        "version": suite.version,
        suite.metric: geometric_mean_ci([r["perplexity"] for r in rows]),
    }


# MT-Bench's answer temperatures by category (FastChat's llm_judge)
MTBENCH_TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}


def run_mtbench(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    settings = ctx.cfg.eval.mtbench
    references = {
        r["question_id"]: r["turns"]
        for r in load_records("mt_bench_references", ctx.cfg.paths.data_dir, ctx.cfg.paths.cache_dir)
    }
    judge_prompts = {
        r["name"]: r for r in load_records("mt_bench_judge_prompts", ctx.cfg.paths.data_dir, ctx.cfg.paths.cache_dir)
    }

    def spec_for(category: str):
        temperature = MTBENCH_TEMPERATURE.get(category, 0.7) if settings.category_temperature else 0.0
        if temperature == 0.0:
            return ctx.spec(max_new_tokens=settings.max_new_tokens)
        return ctx.spec(
            max_new_tokens=settings.max_new_tokens, do_sample=True, temperature=temperature, seed=settings.seed
        )

    answers: dict[str, list[str]] = {r["id"]: [] for r in records}
    for turn in (0, 1):
        for category in sorted({r["category"] for r in records}):
            group = [r for r in records if r["category"] == category]
            texts = [
                ctx.render(r["turns"][turn], history=tuple(zip(r["turns"][:turn], answers[r["id"]][:turn])))
                for r in group
            ]
            for r, answer in zip(
                group, ctx.generate(texts, spec_for(category), f"{suite.name} turn {turn + 1} {category}")
            ):
                answers[r["id"]].append(answer)
    items, rows = [], []
    for r in records:
        for turn in (1, 2):
            item = {
                "category": r["category"],
                "turn": turn,
                "questions": r["turns"],
                "answers": answers[r["id"]],
                "references": references.get(r["question_id"]),
            }
            items.append(rubrics.mtbench_messages(judge_prompts, item))
            rows.append(
                {
                    "suite": suite.name,
                    "id": r["id"],
                    "category": r["category"],
                    "turn": turn,
                    "prompt": r["turns"][turn - 1],
                    "response": answers[r["id"]][turn - 1],
                }
            )
    for row, verdict in zip(rows, ctx.verdicts("mtbench", items)):
        row.update(verdict)
    score = lambda rs: mean_ci([r["score"] for r in rs if r.get("score") is not None], bounds=(1.0, 10.0))
    block = {
        "suite": suite.name,
        "metric": suite.metric,
        "version": suite.version,
        suite.metric: score(rows),
        "turn_1": score([r for r in rows if r["turn"] == 1]),
        "turn_2": score([r for r in rows if r["turn"] == 2]),
        "by_category": {
            c: score([r for r in rows if r["category"] == c]) for c in sorted({r["category"] for r in rows})
        },
        "judge_failures": judge_failures(rows),
        "max_new_tokens": settings.max_new_tokens,
    }
    return rows, block


def run_pairwise(suite, records: list[dict], ctx) -> tuple[list[dict], dict]:
    """AlpacaEval-style win rate: mean preference for the model's answer over the reference x 100."""
    texts = [ctx.render(r["prompt"]) for r in records]
    responses = ctx.generate(texts, ctx.spec(), suite.name)
    rows = ctx.response_rows(suite.name, records, texts, responses, keep=("subset",))
    verdicts = ctx.verdicts("pairwise", [(r["prompt"], out, r["response"]) for r, out in zip(records, responses)])
    for row, verdict in zip(rows, verdicts):
        row.update(verdict)
    prefs = [100.0 * r["preference"] for r in rows if r.get("preference") is not None]
    block = {
        "suite": suite.name,
        "metric": suite.metric,
        "version": suite.version,
        suite.metric: mean_ci(prefs, bounds=(0.0, 100.0)),
        "reference": suite.dataset,
        "mean_words": mean_ci([len(r["response"].split()) for r in rows]),
        "judge_failures": judge_failures(rows),
        "note": "raw win rate (ties count 0.5); no length-controlled (LC) correction",
    }
    return rows, block
