"""Quality-of-service probe: the same benign requests, instantiated for different demographic groups.

After "From Representational Harms to Quality-of-Service Harms": a model that refuses (or answers
worse) for some groups than for others on requests that are harmless for everyone shows a
quality-of-service harm. The prompts come from ``data/qos/templates.json`` (written for this project).

Statistics: per-group refusal rates (Wilson CI) and answer lengths; the spread between the best- and
worst-served groups with a paired bootstrap over templates (the template is the unit of variation:
every group sees the same resampled templates); and a chi-square test of refusal vs group.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from qresafe_exp.stats import mean_ci, rate

TEMPLATES_FILE = Path(__file__).resolve().parents[1] / "data" / "qos" / "templates.json"


def load_templates(path: str | Path = TEMPLATES_FILE) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def render_template(template: str, group_text: str) -> str:
    """Fill ``{group}``; an empty group (the control) leaves no double space or space before punctuation."""
    text = template.replace("{group}", group_text)
    text = re.sub(r"\s{2,}", " ", text)
    return re.sub(r"\s+([,.;:?!])", r"\1", text).strip()


def qos_prompts(templates_data: dict) -> list[dict]:
    """One record {id, prompt, group, axis, template} per template x group (template-major order)."""
    records = []
    for t in templates_data["templates"]:
        if "{group}" not in t["text"]:
            raise ValueError(f"qos template {t['id']!r} has no {{group}} slot: {t['text']!r}")
        for g in templates_data["groups"]:
            records.append(
                {
                    "id": f"qos-{t['id']}-{_slug(g['name'])}",
                    "prompt": render_template(t["text"], g.get("text", g["name"])),
                    "group": g["name"],
                    "axis": g["axis"],
                    "template": t["id"],
                }
            )
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("qos prompt ids are not unique: two templates or group names share a slug")
    return records


def _quantile_ci(samples: np.ndarray) -> list[float | None]:
    """Percentile 95% interval; no interpolation, so an infinite resample stays infinite (-> None)."""
    finite = lambda x: round(float(x), 4) if math.isfinite(x) else None  # noqa: E731
    lo, hi = np.quantile(samples, [0.025, 0.975], method="inverted_cdf")
    return [finite(lo), finite(hi)]


def chi2_independence(table: np.ndarray) -> dict:
    """Pearson chi-square test of independence for a groups x outcomes count table.

    scipy is not in the pinned stack; the survival function of chi2(dof) is the regularized upper
    incomplete gamma Q(dof/2, x/2), which torch provides. No Yates correction.
    """
    table = table[table.sum(axis=1) > 0]
    cols = table.sum(axis=0)
    if (cols == 0).any() or table.shape[0] < 2:
        return {
            "statistic": 0.0,
            "dof": 0,
            "p_value": 1.0,
            "note": "no variation in refusal (every answer refused, or none): nothing to test",
        }
    expected = table.sum(axis=1, keepdims=True) * cols / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    p = float(
        torch.special.gammaincc(
            torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)
        )
    )
    note = "some expected counts < 5: the chi-square approximation is rough" if (expected < 5).any() else None
    return {"statistic": round(statistic, 4), "dof": dof, "p_value": p, "note": note}


def qos_scores(rows: list[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Per-group refusal rate / answer length / quality, group disparities with bootstrap CIs, chi-square.

    Each row has ``group``, ``axis``, ``template``, ``refused`` (bool), ``words`` (int) and optionally
    ``quality`` (float or None).
    """
    groups = list(dict.fromkeys(r["group"] for r in rows))  # first-seen order, stable output
    templates = sorted({r["template"] for r in rows})
    if n_boot < 1:
        raise ValueError(f"qos_scores: n_boot must be >= 1, got {n_boot}")
    if len(groups) < 2:
        raise ValueError(f"qos_scores needs at least two groups, got {groups}")
    gi = {g: i for i, g in enumerate(groups)}
    ti = {t: i for i, t in enumerate(templates)}

    # Per (group, template) sums: the bootstrap then only reweights templates.
    count = np.zeros((len(groups), len(templates)))
    refused = np.zeros_like(count)
    words = np.zeros_like(count)
    for r in rows:
        g, t = gi[r["group"]], ti[r["template"]]
        count[g, t] += 1
        refused[g, t] += bool(r["refused"])
        words[g, t] += r["words"]

    per_group = {}
    for g in groups:
        mine = [r for r in rows if r["group"] == g]
        block = {
            "axis": mine[0]["axis"],
            "refusal_rate": rate([bool(r["refused"]) for r in mine]),
            "mean_words": mean_ci([float(r["words"]) for r in mine], min_n=2),
        }
        qualities = [float(r["quality"]) for r in mine if r.get("quality") is not None]
        if qualities:
            block["mean_quality"] = mean_ci(qualities, min_n=2)
        per_group[g] = block

    # Paired bootstrap: one draw of templates (with replacement) per resample, shared by all groups.
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(templates), size=(n_boot, len(templates)))
    weights = np.zeros((n_boot, len(templates)))
    np.add.at(weights, (np.repeat(np.arange(n_boot), len(templates)), draws.ravel()), 1)

    with np.errstate(divide="ignore", invalid="ignore"):
        n_w = weights @ count.T  # (n_boot, groups); 0 where a group has none of the drawn templates
        boot_rates = (weights @ refused.T) / n_w
        boot_words = (weights @ words.T) / n_w
        point_rates = refused.sum(1) / count.sum(1)
        point_words = words.sum(1) / count.sum(1)

        # The range is recomputed per resample (which groups are extreme may change), as the statistic is.
        boot_gap = np.nanmax(boot_rates, axis=1) - np.nanmin(boot_rates, axis=1)
        boot_ratio = np.nanmax(boot_words, axis=1) / np.nanmin(boot_words, axis=1)
    boot_ratio = np.where(np.isnan(boot_ratio), np.inf, boot_ratio)  # 0/0: no words anywhere

    refusal_disparity = {
        "value": round(float(point_rates.max() - point_rates.min()), 4),
        "ci95": _quantile_ci(boot_gap),
        "max_group": groups[int(point_rates.argmax())],
        "min_group": groups[int(point_rates.argmin())],
    }
    min_words = float(point_words.min())
    length_disparity = {
        "value": round(float(point_words.max()) / min_words, 4) if min_words > 0 else None,
        "ci95": _quantile_ci(boot_ratio),
        "max_group": groups[int(point_words.argmax())],
        "min_group": groups[int(point_words.argmin())],
    }
    if min_words == 0:
        length_disparity["note"] = f"group {length_disparity['min_group']!r} has no answer words: ratio undefined"

    table = np.stack([refused.sum(1), count.sum(1) - refused.sum(1)], axis=1)
    return {
        "groups": per_group,
        "refusal_disparity": refusal_disparity,
        "length_disparity": length_disparity,
        "chi2": chi2_independence(table),
        "n_templates": len(templates),
        "n_boot": n_boot,
        "seed": seed,
    }
