"""The study's figures (matplotlib, PNG + PDF): before/after-patch bars with CI whiskers, ASR vs
bits per method, the safety-utility scatter, per-category bars. Each figure holds the cells of one
(eval config, protocol) group and its own FP reference (report.groups): a decoding-attack point never
shares an axis with greedy points. A figure whose cells a group does not have is skipped."""

from __future__ import annotations

import itertools
import math
import os
import re
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from qresafe_exp.report import groups  # noqa: E402
from qresafe_exp.report.testbed_targets import BOUND as TESTBED_BOUND  # noqa: E402

ASR = "advbench.asr"
SUITE_NAMES = {"advbench": "AdvBench", "harmbench_test": "HarmBench test", "harmfulqa": "HarmfulQA", "catqa": "CatQA"}
FP_BITS = "16/FP"  # the unquantized reference's place on a bits axis


def bits_label(bits) -> str:
    return FP_BITS if bits in (None, "", 16) else str(bits)


def bit_categories(bits: list) -> list[str]:
    """The bits axis as ordered categories, lowest first, FP last: ["2", "4", "8", "16/FP"]."""
    return [str(b) for b in sorted({int(b) for b in bits if bits_label(b) != FP_BITS})] + [FP_BITS]


def _err(rows: list[dict], key: str):
    lows = [max(0.0, r[key] - r[f"{key}.lo"]) if r.get(f"{key}.lo") is not None else 0.0 for r in rows]
    highs = [max(0.0, r[f"{key}.hi"] - r[key]) if r.get(f"{key}.hi") is not None else 0.0 for r in rows]
    return [lows, highs]


def _save(fig, out: Path, name: str, group: groups.Key) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    title = fig.get_suptitle()  # tight_layout leaves a suptitle out: room for its lines (~0.2 inch each) above
    lines = title.count("\n") + 1 if title else 0
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.2 * lines / fig.get_figheight()) if lines else None)
    stem = f"{name}-{groups.slug(group)}"
    # tight: text reaching past an axes (a long key, rotated tick labels) is kept whole, not cut at the edge
    fig.savefig(out / f"{stem}.png", dpi=130, bbox_inches="tight")
    fig.savefig(out / f"{stem}.pdf", bbox_inches="tight")
    plt.close(fig)
    return out / f"{stem}.png"


def fp_reference(row: dict, rows: list[dict]) -> dict | None:
    """The row's own FP reference in its group; for a cell written without reference_cell, the FP cell of
    the same model in the same group (never another group's)."""
    ref = groups.reference(row, rows)
    if ref is None and not row.get("reference_cell"):
        ref = next((r for r in rows if r["quant"] == "none" and r["model"] == row["model"]), None)
    return ref if ref is not None and ref.get(ASR) is not None else None


def patch_bars(rows: list[dict], out: Path) -> Path | None:
    group = groups.one(rows)
    patched = [r for r in rows if r["patch"] != "none" and r.get(ASR) is not None]
    if not patched:
        return None
    base = lambda r: (r["model"], r["quant"], r["bits"], r["calib"])
    bases = sorted({base(r) for r in patched}, key=str)
    fig, axes = plt.subplots(1, len(bases), figsize=(max(4.5, 3.2 * len(bases)), 3.6), squeeze=False, sharey=True)
    for ax, b in zip(axes[0], bases):
        cells = sorted(
            [r for r in rows if base(r) == b and r.get(ASR) is not None],
            key=lambda r: (r["patch"] != "none", r["patch_tag"]),
        )
        fp = fp_reference(cells[0], rows)  # each panel's own FP reference (FP under the AOA prompt for an AOA cell)
        labels = ["quantized" if r["patch"] == "none" else r["patch_tag"] for r in cells]
        colors = ["#c44e52" if r["patch"] == "none" else "#4c72b0" for r in cells]
        ax.bar(range(len(cells)), [r[ASR] for r in cells], yerr=_err(cells, ASR), color=colors, capsize=3)
        if fp:
            ax.axhline(fp[ASR], color="black", linestyle="--", linewidth=1, label=f"FP {fp[ASR]:.2f}")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xticks(range(len(cells)), labels, rotation=35, ha="right", fontsize=7)
        model = f"{b[0]}\n" if len({x[0] for x in bases}) > 1 else ""
        ax.set_title(f"{model}{b[1]} W{b[2]} {b[3] or ''}".strip(), fontsize=8)
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("ASR (AdvBench, 95% CI)")
    fig.suptitle(f"Before / after the safety patch — {groups.label(group)}", fontsize=9)
    return _save(fig, out, "patch_bars", group)


def asr_vs_bits(rows: list[dict], out: Path) -> Path | None:
    fig = draw_asr_vs_bits(rows)
    return None if fig is None else _save(fig, out, "asr_vs_bits", groups.one(rows))


def draw_asr_vs_bits(rows: list[dict]):
    """The figure (not saved): one line per method over the bit-widths as categories, FP at 16/FP."""
    group = groups.one(rows)
    cells = [
        r
        for r in rows
        if r["quant"] != "none"
        and r["patch"] == "none"
        and r.get(ASR) is not None
        and r["bits"]
        and not r.get("broken")
    ]
    methods = sorted({(r["model"], r["quant"], r["calib"] or "") for r in cells})
    method = lambda r: (r["model"], r["quant"], r["calib"] or "")
    if not any(len({r["bits"] for r in cells if method(r) == m}) > 1 for m in methods):
        return None
    several = len({m[0] for m in methods}) > 1
    # bits are categories, evenly spaced: a continuous 2..16 scale squeezes 2/3/4 together and invents 5-7
    ticks = bit_categories([r["bits"] for r in cells])
    at = {label: i for i, label in enumerate(ticks)}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    references = {}
    for m in methods:
        line = sorted([r for r in cells if method(r) == m], key=lambda r: r["bits"])
        ax.errorbar(
            [at[bits_label(r["bits"])] for r in line],
            [r[ASR] for r in line],
            yerr=_err(line, ASR),
            marker="o",
            capsize=3,
            label=" ".join(m if several else m[1:]).strip(),
        )
        fp = fp_reference(line[0], rows)
        if fp:
            references[fp["cell"]] = (fp, m[0])
    for fp, model in references.values():
        name = f"FP {model}" if several else "FP"
        ax.axhline(fp[ASR], color="black", linestyle="--", linewidth=1, label=name)
        ax.errorbar(
            [at[FP_BITS]],
            [fp[ASR]],
            yerr=_err([fp], ASR),
            marker="*",
            markersize=9,
            color="black",
            capsize=3,
            linestyle="none",
        )
    ax.set_xticks(range(len(ticks)), ticks)
    ax.set_xlim(-0.5, len(ticks) - 0.5)
    ax.set_xlabel("bits (broken cells left out)")
    ax.set_ylabel("ASR (AdvBench, 95% CI)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(f"ASR vs bit-width — {groups.label(group)}", fontsize=9)
    fig.tight_layout()
    return fig


def safety_utility(rows: list[dict], out: Path, suite: str = "advbench") -> Path | None:
    fig = draw_safety_utility(rows, suite)
    return None if fig is None else _save(fig, out, "safety_utility", groups.one(rows))


def safety_axis(suite: str) -> tuple[str, str]:
    """The safety-utility figure's y column and its name: a harmful suite's ASR (report.safety_suite; AdvBench by
    default, the suite with room to move where the FP model refuses AdvBench, e.g. harmfulqa)."""
    return f"{suite}.asr", f"ASR ({SUITE_NAMES.get(suite, suite)})"


def safety_utility_points(rows: list[dict], suite: str) -> tuple[list[dict], str, str] | None:
    """(the cells to plot, the utility column, its name) for the safety-utility figures, PNG and dashboard:
    MT-Bench where two cells have it, else reference perplexity (broken cells left out); None under two cells."""
    asr, _ = safety_axis(suite)
    key, label = ("mtbench.mtbench_score", "MT-Bench (1-10)")
    cells = [r for r in rows if r.get(asr) is not None and r.get(key) is not None]
    if len(cells) < 2:
        key, label = ("alpaca_eval_ppl.reference_perplexity", "reference perplexity (lower = better)")
        cells = [r for r in rows if r.get(asr) is not None and r.get(key) is not None and not r.get("broken")]
    return (cells, key, label) if len(cells) >= 2 else None


def draw_safety_utility(rows: list[dict], suite: str = "advbench"):
    """The figure (not saved): one point per cell, numbered, with the numbers' key in a panel under the axes."""
    group = groups.one(rows)
    asr, asr_label = safety_axis(suite)
    points = safety_utility_points(rows, suite)
    if points is None:
        return None
    cells, key, label = points
    fig, ax, spots = keyed_axes(cells, key, asr, (9, 3.6))
    for r in cells:
        ax.scatter(
            r[key],
            r[asr],
            color="#4c72b0" if r["patch"] == "none" else "#55a868",
            marker="*" if r["quant"] == "none" else "o",
            s=60 if r["quant"] == "none" else 25,
        )
    ax.set_xlabel(label)
    ax.set_ylabel(asr_label)
    ax.set_title(
        f"Safety vs utility, one point per cell (star = FP, green = patched)\n{groups.label(group)}", fontsize=8
    )
    fig.tight_layout()  # the axes' final place first: the numbers are placed in display space
    _place_numbers(ax, spots)
    return fig


def keyed_axes(cells: list[dict], x: str, y: str, size: tuple[float, float]):
    """(figure, axes, numbered spots) for a scatter of cells whose key sits in a panel under the axes.

    Numbered markers and a key: cell names written at the points overwrite each other wherever cells sit close
    (every QLoRA variant near ASR 0.8); points within 2% of the axes' span share a number. The key is under the
    axes, wrapped: beside them, a study of ~25 cells made a figure 30 inches wide."""
    shared = shared_tag_parts(sorted({r["patch_tag"] for r in cells if r.get("patch_tag") and r["patch"] != "none"}))
    many_models = len({r.get("model") for r in cells}) > 1
    spots = _numbered(cells, x, y, lambda r: _point_name(r, shared, many_models))
    key_text = safety_utility_key(spots, shared)
    width, height = size
    key_height = 0.13 * (key_text.count("\n") + 1) + 0.1
    fig, (ax, key_ax) = plt.subplots(2, 1, figsize=(width, height + key_height), height_ratios=(height, key_height))
    key_ax.axis("off")
    key_ax.text(0.0, 1.0, key_text, transform=key_ax.transAxes, fontsize=7, va="top", family="monospace")
    return fig, ax, spots


KEY_WIDTH = 118  # characters per line of the safety-utility key (monospace 7 pt: about the figure's width)


def safety_utility_key(spots: list[tuple[float, float, list[str]]], shared: list[str]) -> str:
    """The key's text: a (wrapped) line per numbered spot, then the tag parts every patched cell shares."""
    lines = [
        textwrap.fill(f"{i:>2}  {'; '.join(names)}", KEY_WIDTH, subsequent_indent="    ")
        for i, (_, _, names) in enumerate(spots, 1)
    ]
    if shared:
        lines.append(textwrap.fill(f"every patched cell's tag also holds: {'-'.join(shared)}", KEY_WIDTH))
    return "\n".join(lines)


def shared_tag_parts(tags: list[str]) -> list[str]:
    """The '-'-separated parts that every tag holds, in the first tag's order: said once under the figure, so
    each point's name shows only what sets it apart (a shared prefix alone leaves the long middles)."""
    if len(tags) < 2:
        return []
    others = [set(tag_parts(t)) for t in tags[1:]]
    return [part for part in tag_parts(tags[0]) if all(part in o for o in others)]


def tag_parts(tag: str) -> list[str]:
    """A patch tag's '-'-separated parts, a number's exponent kept whole: 'qresafe-lr2e-05' -> [qresafe, lr2e-05]."""
    return re.split(r"-(?!\d)", tag)


def _point_name(r: dict, shared: list[str], many_models: bool) -> str:
    """A point's name in the key: what sets the cell apart (its model only where the figure has several; the
    patch tag's parts that not every patched cell shares; its seed), not the whole cell name."""
    if r["patch"] == "none":
        setting = "FP" if r.get("quant") == "none" else r["cell"].split(".", 1)[-1]
    else:
        tag = r.get("patch_tag") or r["patch"]
        setting = "-".join(p for p in tag_parts(tag) if p not in shared) or "-".join(shared)
        if r.get("quant") != "none":
            setting = f"{r['quant']} {setting}"
    seed = f" seed {r['seed']}" if r.get("seed") else ""
    return (f"{r['model']} " if many_models and r.get("model") else "") + setting + seed


def _numbered(
    cells: list[dict], key: str, asr: str = ASR, name_of=lambda r: r["cell"].split(".", 1)[-1]
) -> list[tuple[float, float, list[str]]]:
    """(x, y, cell names) per numbered spot, left to right; near-coincident points share a spot."""
    xs, ys = [r[key] for r in cells], [r[asr] for r in cells]
    dx, dy = (max(xs) - min(xs)) * 0.02 or 1e-9, (max(ys) - min(ys)) * 0.02 or 1e-9
    spots: list[tuple[float, float, list[str]]] = []
    for r in sorted(cells, key=lambda r: (r[key], r[asr])):
        name = name_of(r)
        near = next((s for s in spots if abs(s[0] - r[key]) <= dx and abs(s[1] - r[asr]) <= dy), None)
        if near:
            near[2].append(name)
        else:
            spots.append((r[key], r[asr], [name]))
    return spots


# offsets (points) tried in turn for a spot's number: up-right first, then around the marker
_OFFSETS = ((4, 3), (4, -10), (-10, 3), (-10, -10), (5, -4), (-12, -4), (-2, 6), (-2, -14), (10, 8), (10, -16))


def _place_numbers(ax, spots: list[tuple[float, float, list[str]]], fontsize: int = 7) -> None:
    """Each spot's number at the first offset whose box hits no other number and no marker."""
    scale = 72 / ax.figure.dpi
    points = [tuple(p * scale for p in ax.transData.transform((x, y))) for x, y, _ in spots]
    taken = [(px - 3, py - 3, px + 3, py + 3) for px, py in points]  # the markers
    for number, (px, py) in enumerate(points, 1):
        width, height = 0.62 * fontsize * len(str(number)), fontsize
        for dx, dy in _OFFSETS:
            box = (px + dx - 1, py + dy - 1, px + dx + width + 1, py + dy + height + 1)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
                break
        else:
            dx, dy = _OFFSETS[0]  # crowded on every side: the first choice, the key still names it
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
        taken.append(box)
        ax.annotate(
            str(number),
            spots[number - 1][:2],
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=fontsize,
            va="bottom",
            ha="left",
        )


def category_bars(rows: list[dict], metrics: list[dict], out: Path) -> Path | None:
    group = groups.one(rows)
    names = {r["cell"] for r in rows}
    suites = {}
    for m in metrics:
        if m["cell"] not in names:  # only this group's cells
            continue
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
    ax.set_xticks(
        [j + 0.4 - width / 2 for j in range(len(categories))], categories, rotation=35, ha="right", fontsize=7
    )
    ax.set_ylabel(f"ASR ({suite})")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.set_title(f"ASR per category: {suite} — {groups.label(group)}", fontsize=9)
    return _save(fig, out, "category_bars", group)


def claim_bars(rows: list[dict]) -> list[dict]:
    """The bars of the claim panels, in reading order: FP, each unpatched base, then its patches (each
    form), one bar per setting with all its seeds' runs: {'label', 'color', 'runs'}."""
    from qresafe_exp.report.tables import claim_metrics

    ok = [r for r in rows if r["status"] == "ok" and not r.get("broken")]
    patched = [r for r in ok if r["patch"] != "none"]
    if not patched or len(claim_metrics(ok)) < 2:
        return []
    base = lambda r: (r["model"], r["quant"], r["bits"], r["calib"])
    setting = lambda r: (r["quant"] != "none", str(base(r)), r["patch"] != "none", r["patch_tag"] or "")
    bases = {base(r) for r in patched}
    cells = sorted(
        (r for r in ok if base(r) in bases or (r["quant"] == "none" and r["patch"] == "none")),
        key=lambda r: (*setting(r), r.get("seed") or 0),
    )
    several_models = len({r["model"] for r in cells}) > 1  # then each unpatched bar names its model
    bars = []
    for _, runs in itertools.groupby(cells, key=setting):
        runs = list(runs)
        r = runs[0]
        if r["patch"] == "none":
            label = "FP" if r["quant"] == "none" else f"{r['quant']} W{r['bits']}"
            label = f"{r['model']} {label}" if several_models else label
            color = "#4c4c4c" if r["quant"] == "none" else "#c44e52"
        else:  # the unmerged form (quantized base + 16-bit delta) lighter than the merged one
            label, color = r["patch_tag"], "#8fb0d9" if r.get("variant") else "#4c72b0"
        if len(runs) > 1:
            label += f" ({len(runs)} seeds)"
        bars.append({"label": label, "color": color, "runs": runs})
    return bars


def shared_tag_prefix(tags: list[str]) -> str:
    """The longest prefix of every tag that ends where a tag's part ends (its end, or before a '-'): said
    once in the figure, so each bar shows only what sets it apart."""
    if len(tags) < 2:
        return ""
    prefix = os.path.commonprefix(tags)
    while prefix and not all(len(t) == len(prefix) or t[len(prefix)] == "-" for t in tags):
        prefix = prefix[: prefix.rfind("-")] if "-" in prefix else ""
    return prefix


def tick_labels(bars: list[dict]) -> tuple[list[str], str]:
    """(each bar's tick label, the legend line for the shared patch-tag prefix shown as '…')."""
    tags = [bar["label"] for bar in bars if bar["runs"][0]["patch"] != "none"]
    prefix = shared_tag_prefix(tags)
    if not prefix:
        return [bar["label"] for bar in bars], ""
    labels = ["…" + bar["label"][len(prefix) :] if bar["runs"][0]["patch"] != "none" else bar["label"] for bar in bars]
    return labels, f"… = {prefix}"


def claim_panels(rows: list[dict], out: Path) -> Path | None:
    """Before / after on every claim suite: FP, the unpatched base and each patch, with 95% CIs. A patch
    run with several seeds is one bar at the seeds' mean with each seed as a dot (their spread, not a CI)."""
    from qresafe_exp.report.tables import claim_metrics

    group = groups.one(rows)
    bars = claim_bars(rows)
    if not bars:
        return None
    metrics = claim_metrics([r for bar in bars for r in bar["runs"]])
    many_seeds = any(len(bar["runs"]) > 1 for bar in bars)
    labels, legend = tick_labels(bars)
    label_of = {id(bar): label for bar, label in zip(bars, labels)}
    # panels wrap at 3 a row and widen with the bars, so a study of many settings stays legible
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(2.6, 0.32 * len(bars) + 1.0)
    height = 2.4 + 0.07 * max(len(label) for label in labels)  # room for the rotated tick labels
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    for ax, (key, header) in zip(axes.flat, metrics):
        shown = [bar for bar in bars if any(r.get(key) is not None for r in bar["runs"])]
        values = [[r[key] for r in bar["runs"] if r.get(key) is not None] for bar in shown]
        single = [bar["runs"][0] if len(v) == 1 else {key: sum(v) / len(v)} for bar, v in zip(shown, values)]
        ax.bar(
            range(len(shown)),
            [sum(v) / len(v) for v in values],
            yerr=_err(single, key),  # a Wilson interval for one run; none for a seeds' mean (the dots show them)
            capsize=2,
            color=[bar["color"] for bar in shown],
        )
        for x, v in enumerate(values):
            if len(v) > 1:
                ax.plot([x] * len(v), v, "o", color="black", markersize=2.5, zorder=3)
        ax.set_xticks(range(len(shown)), [label_of[id(bar)] for bar in shown], rotation=60, ha="right", fontsize=6)
        for x, bar in enumerate(shown[1:], start=1):  # a line before each unpatched base: its patches follow it
            if bar["runs"][0]["patch"] == "none":
                ax.axvline(x - 0.5, color="#bbbbbb", linewidth=0.8)
        ax.set_title(header, fontsize=8)
        if "perplexity" not in key:
            ax.set_ylim(0, 1.05)
    note = "\nA bar of several seeds: their mean, a dot per seed (no CI)" if many_seeds else ""
    note += f"\n{legend}" if legend else ""
    fig.suptitle(f"Before / after on every claim suite (95% CI) — {groups.label(group)}{note}", fontsize=9)
    return _save(fig, out, "claim_panels", group)


HARMFUL_REFUSED = ("advbench", "harmbench_test", "harmfulqa", "catqa")  # suites whose rows carry `<suite>.refused`
# XSTest's safe-prompt refusal: the `xstest` suite's headline (its safe prompts; eval=claims) or `xstest_safe`'s
SAFE_REFUSAL = ("xstest.refusal_rate", "xstest_safe.refusal_rate")


def pooled_refusal(row: dict, suites: list[str]) -> tuple[float, float, float]:
    """(rate, Wilson low, high) of refusal statements pooled over ``suites`` (k and n summed, not rates averaged)."""
    from qresafe_exp.stats import wilson_interval

    k = sum(round(row[f"{s}.refused"] * row[f"{s}.refused.n"]) for s in suites)
    n = sum(row[f"{s}.refused.n"] for s in suites)
    return (k / n, *wilson_interval(k, n))


def refusal_tradeoff(rows: list[dict], out: Path) -> Path | None:
    fig = draw_refusal_tradeoff(rows)
    return None if fig is None else _save(fig, out, "refusal_tradeoff", groups.one(rows))


def draw_refusal_tradeoff(rows: list[dict]):
    """Refusal of harmful requests against refusal of XSTest's safe ones, one point per cell and patch form, 95%
    Wilson whiskers both ways. A patch that only shifts how often the model refuses moves along a line; one that
    restores the FP model's selectivity reaches FP's corner (top left of it is better than FP). The harmful suites
    are those every plotted cell has refusal counts for, pooled. A study of FP models alone (a testbed recipe
    search) is drawn too, one star per model, with issue 17's over-refusal bound (0.10). None under two cells, or
    without a patched cell or a second model."""
    group = groups.one(rows)
    safe = next((k for k in SAFE_REFUSAL if sum(r.get(k) is not None for r in rows) >= 2), SAFE_REFUSAL[0])
    have = [r for r in rows if r.get(safe) is not None and not r.get("broken")]
    suites = [s for s in HARMFUL_REFUSED if have and all(r.get(f"{s}.refused.n") for r in have)]
    models_only = all(r["patch"] == "none" for r in have)
    if len(have) < 2 or not suites or (models_only and len({r["model"] for r in have}) < 2):
        return None
    points = []
    for r in have:
        rate, lo, hi = pooled_refusal(r, suites)
        points.append({**r, "_harmful_refused": rate, "_lo": lo, "_hi": hi})
    fig, ax, spots = keyed_axes(points, safe, "_harmful_refused", (7, 4.2))
    for r in points:
        fp, unpatched = r["quant"] == "none" and r["patch"] == "none", r["patch"] == "none"
        x, y = r[safe], r["_harmful_refused"]
        ax.errorbar(
            x,
            y,
            xerr=_err([r], safe),
            yerr=[[y - r["_lo"]], [r["_hi"] - y]],
            fmt="*" if fp else "s" if unpatched else "^" if r.get("variant") else "o",
            markersize=10 if fp else 5,
            color="#4c72b0" if unpatched else "#dd8452" if r.get("variant") else "#55a868",
            elinewidth=0.6,
            capsize=1.5,
        )
        if fp and not models_only:
            ax.axvline(x, color="#4c72b0", linewidth=0.6, linestyle=":")
            ax.axhline(y, color="#4c72b0", linewidth=0.6, linestyle=":")
    if models_only:  # a testbed search: its over-refusal target (report/testbed_targets.py)
        ax.axvline(TESTBED_BOUND, color="#c44e52", linewidth=0.8, linestyle="--")
        ax.text(TESTBED_BOUND + 0.01, 0.02, f"target: XSTest-safe <= {TESTBED_BOUND:.2f}", fontsize=7, color="#c44e52")
    names = ", ".join(SUITE_NAMES.get(s, s) for s in suites)
    ax.set_xlabel("XSTest-safe refusal (over-refusal; lower = better)")
    ax.set_ylabel(f"refusal of harmful requests\n({names}; higher = safer)", fontsize=8)
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    markers = (
        "a star per FP model (a testbed search)"
        if models_only
        else "star = FP, square = unpatched, circle = patched,\ntriangle = a patch's unmerged form"
    )
    ax.set_title(f"Refusal of harmful vs of safe requests ({markers}; 95% Wilson) — {groups.label(group)}", fontsize=8)
    fig.tight_layout()
    _place_numbers(ax, spots)
    return fig


def all_figures(rows: list[dict], metrics: list[dict], out: Path, safety_suite: str = "advbench") -> dict[str, Path]:
    """Each figure once per (eval, protocol) group that has its cells; keys are the file stems."""
    from qresafe_exp.report.collect import without_variants

    made = {}
    for group_rows in groups.split(rows).values():
        cells = without_variants(group_rows)  # the unmerged patch forms appear in the claim panels only
        for path in (
            patch_bars(cells, out),
            asr_vs_bits(cells, out),
            safety_utility(cells, out, safety_suite),
            category_bars(cells, metrics, out),
            claim_panels(group_rows, out),
            refusal_tradeoff(group_rows, out),  # the unmerged forms beside the merged: both ways to serve a patch
        ):
            if path is not None:
                made[path.stem] = path
    return made
