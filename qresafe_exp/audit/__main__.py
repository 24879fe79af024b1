"""`python -m qresafe_exp.audit judge=NAME labels=FILE [task=harm|refusal] [positive=[...]]`.

Scores a judge against labelled responses and prints accuracy, precision, recall, F1 and Cohen's
kappa (JSON and the disagreements under outputs/audits/). Any judge config works, so every judge can
be checked on the same labels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from qresafe_exp.schema import register_configs

register_configs()
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="audit")
def main(cfg: DictConfig) -> None:
    from qresafe_exp.audit import agreement, load_labelled
    from qresafe_exp.cache import RequestCache, write_json_atomic
    from qresafe_exp.evals.judging import cached_verdicts, judge_failures
    from qresafe_exp.judges import build_judge
    from qresafe_exp.judges.base import TASK_FIELDS

    rows = load_labelled(cfg.labels, cfg.columns, cfg.paths.data_dir, cfg.paths.cache_dir,
                         OmegaConf.to_container(cfg.where) if cfg.where else None)
    judge = build_judge(cfg.judge)
    requests = RequestCache(Path(cfg.paths.cache_dir) / "requests.sqlite")
    verdicts = cached_verdicts(judge, cfg.task, [(r["prompt"], r["response"]) for r in rows], requests)
    field = TASK_FIELDS[cfg.task]
    positive = {str(v) for v in cfg.positive}
    judged = [(bool(v[field]), r["label"] in positive, r, v) for r, v in zip(rows, verdicts) if v.get(field) is not None]
    figures = agreement([p for p, *_ in judged], [t for _, t, *_ in judged])
    report = {"judge": judge.identity, "task": cfg.task, "labels": str(cfg.labels), "label_column": cfg.columns.label,
              "positive": sorted(positive), "where": OmegaConf.to_container(cfg.where) if cfg.where else None,
              **figures, "judge_failures": judge_failures(verdicts)}
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "audit.json", report)
    with open(out / "disagreements.jsonl", "w") as handle:
        for predicted, truth, row, verdict in judged:
            if predicted != truth:
                handle.write(json.dumps({"id": row.get(cfg.columns.id), "label": row["label"], "judge": predicted,
                                         "response": row["response"][:500]}) + "\n")
    fmt = lambda block: "-" if block["rate"] is None else f"{block['rate']:.2f} [{block['ci95'][0]:.2f},{block['ci95'][1]:.2f}] n={block['n']}"
    print(f"\naudit: judge {judge.name} ({cfg.task}) vs '{cfg.columns.label}' in {cfg.labels}"
          + (f" where {report['where']}" if report["where"] else "") + f", positive = {sorted(positive)}\n"
          f"  n {figures['n']}   accuracy {fmt(figures['accuracy'])}   precision {fmt(figures['precision'])}   "
          f"recall {fmt(figures['recall'])}   F1 {figures['f1']}   Cohen's kappa {figures['cohen_kappa']}\n"
          f"  confusion {figures['confusion']}   judge failures {report['judge_failures']['n']}\n  -> {out}\n")


if __name__ == "__main__":
    main()
