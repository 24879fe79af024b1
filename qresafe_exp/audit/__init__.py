"""Judge audits: how well a judge agrees with labels (accuracy, precision, recall, F1, Cohen's kappa).

A labels file is a CSV with a response column and a label column (names in config); the prompt is
either a column too or joined back from a registry dataset by ``dataset`` + ``id`` columns (so a
labelled set never has to copy a dataset's prompts). ``positive`` lists the label values that mean
the judge's decision should be True (``jailbroken`` for task harm, ``refused`` for task refusal).
"""

from __future__ import annotations

import csv
from pathlib import Path

from qresafe_exp.stats import rate


def load_labelled(path: str | Path, columns, data_dir=None, cache_dir=None, where: dict | None = None) -> list[dict]:
    from qresafe_exp.data import load_records

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels={path}: no such file. Give a CSV with response and label columns")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"labels file {path} has no rows")
    for need in (columns.response, columns.label):
        if need not in rows[0]:
            raise ValueError(f"labels file {path} has no column '{need}' (columns: {', '.join(rows[0])}); set "
                             "columns.response / columns.label")
    rows = [r for r in rows if all(r.get(k) == str(v) for k, v in (where or {}).items())]
    if columns.prompt in rows[0]:
        return [{"prompt": r[columns.prompt], "response": r[columns.response], "label": r[columns.label], **r}
                for r in rows]
    if columns.dataset not in rows[0] or columns.id not in rows[0]:
        raise ValueError(f"labels file {path} needs a '{columns.prompt}' column, or '{columns.dataset}' and "
                         f"'{columns.id}' columns to join prompts from the datasets")
    prompts = {}
    for name in sorted({r[columns.dataset] for r in rows}):
        prompts.update({(name, rec["id"]): rec["prompt"] for rec in load_records(name, data_dir, cache_dir)})
    missing = [(r[columns.dataset], r[columns.id]) for r in rows if (r[columns.dataset], r[columns.id]) not in prompts]
    if missing:
        raise ValueError(f"labels file {path}: {len(missing)} rows name no known prompt, e.g. {missing[0]}")
    return [{**r, "prompt": prompts[(r[columns.dataset], r[columns.id])], "response": r[columns.response],
             "label": r[columns.label]} for r in rows]


def agreement(predicted: list[bool], truth: list[bool]) -> dict:
    """Binary agreement figures; rates carry n and a 95% Wilson interval."""
    pairs = list(zip(predicted, truth))
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum(t and not p for p, t in pairs)
    tn = sum(not p and not t for p, t in pairs)
    n = len(pairs)
    accuracy = rate([p == t for p, t in pairs])
    precision = rate([t for p, t in pairs if p])
    recall = rate([p for p, t in pairs if t])
    f1 = (2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else None
    # Cohen's kappa: agreement beyond what the two marginals give by chance
    expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n) if n else None
    observed = (tp + tn) / n if n else None
    kappa = None if expected is None or expected == 1 else (observed - expected) / (1 - expected)
    return {"n": n, "accuracy": accuracy, "precision": precision, "recall": recall,
            "f1": None if f1 is None else round(f1, 4), "cohen_kappa": None if kappa is None else round(kappa, 4),
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}
