"""The study's figures (matplotlib, PNG + PDF): before/after-patch bars with CI whiskers, ASR vs
bits per method, the safety-utility scatter, per-category bars. A figure whose cells the study does
not have is skipped."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

ASR = "advbench.asr"


def _err(rows: list[dict], key: str):
    lows = [max(0.0, r[key] - r[f"{key}.lo"]) if r.get(f"{key}.lo") is not None else 0.0 for r in rows]
    highs = [max(0.0, r[f"{key}.hi"] - r[key]) if r.get(f"{key}.hi") is not None else 0.0 for r in rows]
    return [lows, highs]


def _save(fig, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=130)
    fig.savefig(out / f"{name}.pdf")
    plt.close(fig)
    return out / f"{name}.png"


def _fp(rows):
    return next((r for r in rows if r["quant"] == "none" and r.get(ASR) is not None), None)


def patch_bars(rows: list[dict], out: Path) -> Path | None:
    patched = [r for r in rows if r["patch"] != "none" and r.get(ASR) is not None]
    if not patched:
        return None
    bases = sorted({(r["quant"], r["bits"], r["calib"]) for r in patched}, key=str)
    fig, axes = plt.subplots(1, len(bases), figsize=(max(4.5, 3.2 * len(bases)), 3.6), squeeze=False, sharey=True)
    by_cell = {r["cell"]: r for r in rows}
    for ax, base in zip(axes[0], bases):
        cells = sorted([r for r in rows if (r["quant"], r["bits"], r["calib"]) == base and r.get(ASR) is not None],
                       key=lambda r: (r["patch"] != "none", r["patch_tag"]))
        # each panel's own FP reference (an AOA-protocol cell compares with FP under the AOA prompt)
        fp = by_cell.get(cells[0].get("reference_cell")) or _fp(rows)
        labels = ["quantized" if r["patch"] == "none" else r["patch_tag"] for r in cells]
        colors = ["#c44e52" if r["patch"] == "none" else "#4c72b0" for r in cells]
        ax.bar(range(len(cells)), [r[ASR] for r in cells], yerr=_err(cells, ASR), color=colors, capsize=3)
        if fp:
            ax.axhline(fp[ASR], color="black", linestyle="--", linewidth=1, label=f"FP {fp[ASR]:.2f}")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(cells)), labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{base[0]} W{base[1]} {base[2] or ''}".strip(), fontsize=8)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("ASR (AdvBench, 95% CI)")
    fig.suptitle("Before / after the safety patch", fontsize=9)
    return _save(fig, out, "patch_bars")


def asr_vs_bits(rows: list[dict], out: Path) -> Path | None:
    cells = [r for r in rows if r["quant"] != "none" and r["patch"] == "none" and r.get(ASR) is not None
             and r["bits"] and not r.get("broken")]
    methods = sorted({(r["quant"], r["calib"] or "") for r in cells})
    if not any(len({r["bits"] for r in cells if (r["quant"], r["calib"] or "") == m}) > 1 for m in methods):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method in methods:
        line = sorted([r for r in cells if (r["quant"], r["calib"] or "") == method], key=lambda r: r["bits"])
        ax.errorbar([r["bits"] for r in line], [r[ASR] for r in line], yerr=_err(line, ASR), marker="o",
                    capsize=3, label=f"{method[0]} {method[1]}".strip())
    fp = _fp(rows)
    if fp:
        ax.axhline(fp[ASR], color="black", linestyle="--", linewidth=1, label="FP")
    ax.set_xlabel("bits (broken cells left out)")
    ax.set_ylabel("ASR (AdvBench, 95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title("ASR vs bit-width", fontsize=9)
    return _save(fig, out, "asr_vs_bits")


def safety_utility(rows: list[dict], out: Path) -> Path | None:
    key, label = ("mtbench.mtbench_score", "MT-Bench (1-10)")
    cells = [r for r in rows if r.get(ASR) is not None and r.get(key) is not None]
    if len(cells) < 2:
        key, label = ("alpaca_eval_ppl.reference_perplexity", "reference perplexity (lower = better)")
        cells = [r for r in rows if r.get(ASR) is not None and r.get(key) is not None and not r.get("broken")]
    if len(cells) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in cells:
        ax.scatter(r[key], r[ASR], color="#4c72b0" if r["patch"] == "none" else "#55a868",
                   marker="*" if r["quant"] == "none" else "o", s=60 if r["quant"] == "none" else 25)
        ax.annotate(r["cell"].split(".", 1)[-1], (r[key], r[ASR]), fontsize=5, alpha=0.8)
    ax.set_xlabel(label)
    ax.set_ylabel("ASR (AdvBench)")
    ax.set_title("Safety vs utility, one point per cell (star = FP, green = patched)", fontsize=8)
    return _save(fig, out, "safety_utility")


def category_bars(metrics: list[dict], out: Path) -> Path | None:
    suites = {}
    for m in metrics:
        for suite, block in (m.get("scores") or {}).items():
            if block.get("by_category"):
                suites.setdefault(suite, []).append((m["cell"], block["by_category"]))
    if not suites:
        return None
    suite, cells = max(suites.items(), key=lambda kv: len(kv[1]))
    cells = cells[:6]
    categories = sorted({c for _, cats in cells for c in cats})
    fig, ax = plt.subplots(figsize=(max(5.5, 0.7 * len(categories) * max(1, len(cells) / 2)), 3.8))
    width = 0.8 / len(cells)
    for i, (cell, cats) in enumerate(cells):
        xs = [j + i * width for j in range(len(categories))]
        ax.bar(xs, [(cats.get(c) or {}).get("rate") or 0.0 for c in categories], width, label=cell.split(".", 1)[-1])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(categories))], categories, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel(f"ASR ({suite})")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.set_title(f"ASR per category: {suite}", fontsize=9)
    return _save(fig, out, "category_bars")


def all_figures(rows: list[dict], metrics: list[dict], out: Path) -> dict[str, Path]:
    made = {"patch_bars": patch_bars(rows, out), "asr_vs_bits": asr_vs_bits(rows, out),
            "safety_utility": safety_utility(rows, out), "category_bars": category_bars(metrics, out)}
    return {name: path for name, path in made.items() if path is not None}
