"""Agreement of a judge with labels: accuracy, precision, recall (95 % Wilson CIs), F1 and Cohen's kappa
(95 % percentile-bootstrap CIs), binary and over XSTest's three refusal classes.

Bootstrap: resampling n rows with replacement is the same as drawing the confusion counts from a
multinomial(n, observed cell shares), so each of the ``resamples`` (default 2000, seeded) is one
multinomial draw of the KxK matrix: exact for the row bootstrap, and fast enough to run per group.
A resample whose kappa is undefined (every row in one class on both sides: chance agreement 1) is
dropped; perfect agreement therefore gets kappa 1 with CI [1, 1].
"""

from __future__ import annotations

import numpy as np

from qresafe_exp.stats import rate

XSTEST_CLASSES = ("1_full_compliance", "2_full_refusal", "3_partial_refusal")
RESAMPLES = 2000
SEED = 0


def _kappa(counts: np.ndarray) -> np.ndarray:
    """Cohen's kappa of KxK count matrices (..., K, K) (rows judge, columns labels); nan where undefined."""
    n = counts.sum(axis=(-2, -1)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(counts, axis1=-2, axis2=-1) / n
        expected = (counts.sum(axis=-1) * counts.sum(axis=-2)).sum(axis=-1) / (n * n)
        kappa = (observed - expected) / (1 - expected)
    return np.where(np.isclose(expected, 1.0), np.nan, kappa)


def _f1(counts: np.ndarray) -> np.ndarray:
    """F1 of the positive class from 2x2 matrices [[tp, fp], [fn, tn]]; nan with no positive anywhere."""
    tp, fp, fn = counts[..., 0, 0], counts[..., 0, 1], counts[..., 1, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)


def _with_ci(matrix: np.ndarray, statistic, resamples: int, seed: int) -> dict:
    """{'value', 'ci95'}: the statistic of ``matrix`` and its percentile-bootstrap 95 % interval."""
    value = float(statistic(matrix))
    if np.isnan(value):
        return {"value": None, "ci95": [None, None]}
    n = int(matrix.sum())
    draws = np.random.default_rng(seed).multinomial(n, matrix.ravel() / n, size=resamples)
    stats = statistic(draws.reshape(resamples, *matrix.shape))
    stats = stats[~np.isnan(stats)]
    if not stats.size:
        return {"value": round(value, 4), "ci95": [None, None]}
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return {"value": round(value, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def cohen_kappa(matrix, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Kappa of a KxK count matrix (rows judge, columns labels) with its bootstrap 95 % CI."""
    return _with_ci(np.asarray(matrix, dtype=np.int64), _kappa, resamples, seed)


def agreement(predicted: list[bool], truth: list[bool], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """Binary agreement figures; rates carry n and a 95% Wilson interval, F1 and kappa a bootstrap one."""
    pairs = list(zip(predicted, truth))
    tp = sum(p and t for p, t in pairs)
    fp = sum(p and not t for p, t in pairs)
    fn = sum(t and not p for p, t in pairs)
    tn = sum(not p and not t for p, t in pairs)
    matrix = np.array([[tp, fp], [fn, tn]], dtype=np.int64)
    empty = {"value": None, "ci95": [None, None]}
    return {
        "n": len(pairs),
        "accuracy": rate([p == t for p, t in pairs]),
        "precision": rate([t for p, t in pairs if p]),
        "recall": rate([p for p, t in pairs if t]),
        "f1": _with_ci(matrix, _f1, resamples, seed) if pairs else empty,
        "cohen_kappa": _with_ci(matrix, _kappa, resamples, seed) if pairs else empty,
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def agreement_multiclass(
    predicted: list[str], truth: list[str], classes=XSTEST_CLASSES, resamples: int = RESAMPLES, seed: int = SEED
) -> dict:
    """Agreement over several classes (XSTest's 3 by default): the KxK confusion (rows judge, columns
    labels), accuracy with a Wilson CI and multi-class Cohen's kappa with a bootstrap CI."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in (*predicted, *truth) if v not in index})
    if unknown:
        raise ValueError(f"classes {unknown} are not among {list(classes)}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for p, t in zip(predicted, truth):
        matrix[index[p], index[t]] += 1
    kappa = cohen_kappa(matrix, resamples, seed) if matrix.sum() else {"value": None, "ci95": [None, None]}
    return {
        "n": int(matrix.sum()),
        "classes": list(classes),
        "accuracy": rate([p == t for p, t in zip(predicted, truth)]),
        "cohen_kappa": kappa,
        "confusion": matrix.tolist(),
    }
