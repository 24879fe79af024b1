"""Audit runs: one judge on one task, or a suite (every listed judge on every task it can do), with
figures overall and per group (``group_by`` columns), written as audit.json + audit.md + disagreements.jsonl.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from qresafe_exp.audit import XSTEST_CLASSES, Labelled, agreement, agreement_multiclass, label_files, load_labelled
from qresafe_exp.conf import CONF_DIR

log = logging.getLogger(__name__)


def task_spec(cfg, task: str, overrides: bool = True) -> tuple[str, list[str]]:
    """(label column, positive values) for ``task``: the task's entry under ``tasks``, or (one-judge
    mode, ``overrides``) ``columns.label`` / ``positive`` where set."""
    if task not in cfg.tasks:
        raise ValueError(
            f"task={task} has no entry under `tasks` in qresafe_exp/conf/audit.yaml (have: {', '.join(cfg.tasks)})"
        )
    spec = cfg.tasks[task]
    label = (overrides and cfg.columns.label) or spec.label
    positive = cfg.positive if overrides and cfg.positive is not None else spec.positive
    return label, [str(v) for v in positive]


def labelled_for(cfg, label_column: str) -> Labelled:
    columns = OmegaConf.merge(cfg.columns, {"label": label_column})
    where = OmegaConf.to_container(cfg.where) if cfg.where else None
    return load_labelled(
        cfg.labels,
        columns,
        cfg.paths.data_dir,
        cfg.paths.cache_dir,
        where,
        OmegaConf.to_container(cfg.sources) if cfg.get("sources") else None,
    )


def groups(rows: list, group_by) -> list[tuple[str, str | None, str | None, list]]:
    """[(name, column, value, rows)]: all rows, then each value of each ``group_by`` column (sorted)."""
    out = [("all", None, None, rows)]
    for column in group_by:
        values = sorted({str(r[0].get(column) or "-") for r in rows})
        out += [(f"{column}={v}", column, v, [r for r in rows if str(r[0].get(column) or "-") == v]) for v in values]
    return out


def audit_task(
    judge,
    task: str,
    labelled: Labelled,
    label_column: str,
    positive: list[str],
    requests,
    group_by=("dataset", "model"),
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """One judge on one task: (the report entry, the disagreements)."""
    from qresafe_exp.evals.judging import cached_verdicts, judge_failures
    from qresafe_exp.judges.base import TASK_FIELDS

    rows = labelled.rows
    verdicts = cached_verdicts(judge, task, [(r["prompt"], r["response"]) for r in rows], requests)
    field = TASK_FIELDS[task]
    positive = {str(v) for v in positive}
    judged = [(r, v) for r, v in zip(rows, verdicts) if v.get(field) is not None]
    # 3-way agreement where both sides speak XSTest's classes (refusal labels; a judge's `label` field)
    three_way = (
        task == "refusal"
        and bool(judged)
        and all(r["label"] in XSTEST_CLASSES and v.get("label") in XSTEST_CLASSES for r, v in judged)
    )
    figures = []
    for name, column, value, subset in groups(judged, group_by):
        entry = {
            "group": name,
            "column": column,
            "value": value,
            **agreement(
                [bool(v[field]) for _, v in subset], [r["label"] in positive for r, _ in subset], resamples, seed
            ),
        }
        if three_way:
            entry["three_way"] = agreement_multiclass(
                [v["label"] for _, v in subset], [r["label"] for r, _ in subset], XSTEST_CLASSES, resamples, seed
            )
        figures.append(entry)
    report = {
        "judge": judge.identity,
        "task": task,
        "label_column": label_column,
        "positive": sorted(positive),
        "rows": len(rows),
        "skipped_rows": labelled.skipped,
        "judge_failures": judge_failures(verdicts),
        "three_way": three_way,
        "groups": figures,
    }
    disagreements = [
        {
            "judge": judge.name,
            "task": task,
            "file": r["file"],
            "dataset": r.get("dataset"),
            "id": r.get("id"),
            "side": r.get("side"),
            "model": r["model"],
            "label": r["label"],
            "judge_decision": bool(v[field]),
            "judge_label": v.get("label"),
            "response": r["response"][:500],
        }
        for r, v in judged
        if bool(v[field]) != (r["label"] in positive)
    ]
    return report, disagreements


def judge_config(name: str):
    """The composed qresafe_exp/conf/judge/<name>.yaml (inside the audit app, or standalone in tests and scripts)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from qresafe_exp.schema import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="audit", overrides=[f"judge={name}"]).judge
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="audit", overrides=[f"judge={name}"]).judge


def suite_judges(cfg) -> tuple[list[str], bool]:
    """(judge names, explicit): ``judges=[...]`` on the command line, or the suite's list."""
    if cfg.get("judges"):
        return list(cfg.judges), True
    if cfg.suite not in cfg.suites:
        raise ValueError(
            f"suite={cfg.suite} is not defined under `suites` in qresafe_exp/conf/audit.yaml "
            f"(have: {', '.join(cfg.suites)})"
        )
    return list(cfg.suites[cfg.suite]), False


def run_suite(cfg, requests) -> tuple[dict, list[dict]]:
    """Every judge of the suite on every task under ``tasks`` it can do, against every labels file.
    A judge of the suite's default list that is not registered (or has no config) is skipped and
    recorded; one named explicitly with ``judges=[...]`` is an error."""
    from qresafe_exp.judges import JUDGES, build_judge

    names, explicit = suite_judges(cfg)
    skipped, built = {}, []
    for name in names:
        reason = None
        if name not in JUDGES:
            reason = f"not registered in qresafe_exp/judges/__init__.py JUDGES (registered: {', '.join(JUDGES)})"
        else:
            try:
                built.append(build_judge(judge_config(name)))
            except Exception as exc:  # a missing qresafe_exp/conf/judge/<name>.yaml, a judge that cannot start
                reason = f"could not be built: {type(exc).__name__}: {exc}"
        if reason:
            if explicit:
                raise ValueError(f"judge '{name}' cannot be audited: {reason}")
            log.warning("audit suite %s: judge '%s' skipped: %s", cfg.suite, name, reason)
            skipped[name] = reason
    entries, disagreements, loaded = [], [], {}
    for judge in built:
        tasks = [t for t in cfg.tasks if t in judge.capabilities]
        if not tasks:
            skipped[judge.name] = f"does none of the tasks {', '.join(cfg.tasks)}"
        for task in tasks:
            label, positive = task_spec(cfg, task, overrides=False)
            if label not in loaded:
                loaded[label] = labelled_for(cfg, label)
            entry, wrong = audit_task(
                judge,
                task,
                loaded[label],
                label,
                positive,
                requests,
                list(cfg.group_by),
                cfg.bootstrap.resamples,
                cfg.bootstrap.seed,
            )
            entries.append(entry)
            disagreements += wrong
    return {"suite": cfg.suite, "skipped_judges": skipped, "audits": entries}, disagreements


def run(cfg, requests) -> tuple[dict, list[dict]]:
    """The audit the config asks for (``suite=NAME``, or one ``judge`` on ``task``): (report, disagreements)."""
    from qresafe_exp.judges import build_judge

    if cfg.get("judges") and not cfg.suite:
        raise ValueError("judges=[...] picks judges of a suite: add suite=NAME (e.g. suite=default), or use judge=NAME")
    if cfg.suite:
        report, disagreements = run_suite(cfg, requests)
    else:
        label, positive = task_spec(cfg, cfg.task)
        entry, disagreements = audit_task(
            build_judge(cfg.judge),
            cfg.task,
            labelled_for(cfg, label),
            label,
            positive,
            requests,
            list(cfg.group_by),
            cfg.bootstrap.resamples,
            cfg.bootstrap.seed,
        )
        report = {"suite": None, "skipped_judges": {}, "audits": [entry]}
    report.update(
        {
            "labels": [str(p) for p in label_files(cfg.labels)],
            "where": OmegaConf.to_container(cfg.where) if cfg.where else None,
            "group_by": list(cfg.group_by),
            "ci_method": f"percentile bootstrap over rows ({cfg.bootstrap.resamples} resamples, "
            f"seed {cfg.bootstrap.seed})",
        }
    )
    return report, disagreements


# ---- rendering ---------------------------------------------------------------------------------


def _rate(block: dict, with_n: bool = False) -> str:
    if block["rate"] is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{block['rate']:.2f} [{lo:.2f},{hi:.2f}]" + (f" n={block['n']}" if with_n else "")


def _value(block: dict | None) -> str:
    if not block or block["value"] is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{block['value']:.2f}" + ("" if lo is None else f" [{lo:.2f},{hi:.2f}]")


def judge_title(identity: dict) -> str:
    # short text settings only (a keyword list's name); the full identity is in audit.json
    extras = [v for k, v in identity.items() if k != "name" and isinstance(v, str) and len(v) <= 24]
    return identity["name"] + (f" ({', '.join(extras)})" if extras else "")


def markdown(report: dict) -> str:
    """One table: a row per judge x task x group (all, then each group), figures with 95 % CIs."""
    lines = [
        "| judge | task vs label (positive) | rows | n | accuracy | precision | recall | F1 | Cohen's kappa "
        "| 3-way kappa |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for audit in report["audits"]:
        task = f"{audit['task']} vs `{audit['label_column']}` ({', '.join(audit['positive'])})"
        for g in audit["groups"]:
            lines.append(
                f"| {judge_title(audit['judge'])} | {task} | {g['group']} | {g['n']} | {_rate(g['accuracy'])} "
                f"| {_rate(g['precision'], True)} | {_rate(g['recall'], True)} | {_value(g['f1'])} "
                f"| {_value(g['cohen_kappa'])} | {_value(g.get('three_way', {}).get('cohen_kappa'))} |"
            )
    notes = [f"95 % CIs: accuracy, precision, recall Wilson; F1 and kappa {report['ci_method']}."]
    for audit in report["audits"]:
        empty = {Path(f).name: s["empty_label"] for f, s in audit["skipped_rows"].items() if s["empty_label"]}
        failures = audit["judge_failures"]
        notes.append(
            f"{audit['judge']['name']} / {audit['task']}: {audit['rows']} labelled rows"
            + (f", skipped for an empty `{audit['label_column']}`: {empty}" if empty else "")
            + (f", judge failures {failures['n']} (not scored)" if failures["n"] else "")
        )
    for name, reason in report.get("skipped_judges", {}).items():
        notes.append(f"judge {name} skipped: {reason}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def write_report(out_dir: Path, report: dict, disagreements: list[dict]) -> str:
    from qresafe_exp.cache import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    write_json_atomic(out_dir / "audit.json", report)
    text = markdown(report)
    write_text_atomic(out_dir / "audit.md", text)
    write_text_atomic(out_dir / "disagreements.jsonl", "".join(json.dumps(d) + "\n" for d in disagreements))
    return text
