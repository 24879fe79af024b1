"""Judge audits against labelled responses (qresafe_exp/conf/audit.yaml).

    python -m qresafe_exp.audit suite=default          # every default judge x every task it can do (make audit)
    python -m qresafe_exp.audit judge=NAME [task=harm|refusal] [labels=a.csv,b.csv] [+where.dataset=advbench]

Prints one table (overall and per ``group_by`` group: n, accuracy, precision, recall with Wilson CIs,
F1 and Cohen's kappa with bootstrap CIs, XSTest's 3-way kappa where both sides have its classes) and
writes audit.json, audit.md and disagreements.jsonl under outputs/audits/<suite or judge-task>/.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from qresafe_exp.conf import CONFIG_PATH
from qresafe_exp.schema import register_configs

register_configs()
# outputs/audits/<suite> for a suite, outputs/audits/<judge>-<task> for one judge
OmegaConf.register_new_resolver(
    "qresafe.audit_name", lambda suite, judge, task: suite or f"{judge}-{task}", replace=True
)
log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="audit")
def main(cfg: DictConfig) -> None:
    from qresafe_exp.audit.run import run, write_report
    from qresafe_exp.cache import RequestCache

    report, disagreements = run(cfg, RequestCache(Path(cfg.paths.cache_dir) / "requests.sqlite"))
    text = write_report(Path(cfg.out_dir), report, disagreements)
    what = f"suite {cfg.suite}" if cfg.suite else f"judge {cfg.judge.name} ({cfg.task})"
    print(
        f"\naudit: {what} vs {', '.join(report['labels'])}"
        + (f" where {report['where']}" if report["where"] else "")
        + f"\n\n{text}\n-> {cfg.out_dir}\n"
    )


if __name__ == "__main__":
    main()
