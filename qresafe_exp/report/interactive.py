"""The dashboard's interactive figures (Plotly JSON; plotly.js is embedded in the page, nothing fetched):
ASR vs bits per quantizer on a categorical bits axis, and the safety-utility scatter with the cell in
the hover label. One figure per (eval, protocol) group, like the PNGs (report.figures)."""

from __future__ import annotations

import json

import plotly.graph_objects as go

from qresafe_exp.report import groups
from qresafe_exp.report.figures import (
    ASR,
    FP_BITS,
    bit_categories,
    bits_label,
    fp_reference,
    safety_axis,
    safety_utility_points,
)


def _ci_text(r: dict, key: str) -> str:
    lo, hi = r.get(f"{key}.lo"), r.get(f"{key}.hi")
    text = f"{r[key]:.3f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")
    n = r.get(f"{key}.n")
    return text + (f", n={n}" if n else "")


def _error(rows: list[dict], key: str) -> dict:
    return {
        "type": "data",
        "symmetric": False,
        "visible": True,
        "array": [max(0.0, r[f"{key}.hi"] - r[key]) if r.get(f"{key}.hi") is not None else 0 for r in rows],
        "arrayminus": [max(0.0, r[key] - r[f"{key}.lo"]) if r.get(f"{key}.lo") is not None else 0 for r in rows],
    }


def _delta_text(r: dict, key: str = ASR) -> str:
    delta, p = r.get(f"{key}.vs_fp"), r.get(f"{key}.vs_fp.p")
    if delta is None:
        return ""
    return f"<br>vs FP {delta:+.2f}" + (f" (paired p={p:.2g})" if p is not None else "")


def asr_vs_bits(rows: list[dict]) -> go.Figure | None:
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
    method = lambda r: (r["model"], r["quant"], r["calib"] or "")
    methods = sorted({method(r) for r in cells})
    if not any(len({r["bits"] for r in cells if method(r) == m}) > 1 for m in methods):
        return None
    several = len({m[0] for m in methods}) > 1
    fig = go.Figure()
    references = {}
    for m in methods:
        line = sorted([r for r in cells if method(r) == m], key=lambda r: r["bits"])
        fig.add_trace(
            go.Scatter(
                x=[bits_label(r["bits"]) for r in line],
                y=[r[ASR] for r in line],
                mode="lines+markers",
                name=" ".join(m if several else m[1:]).strip(),
                error_y=_error(line, ASR),
                customdata=[[r["cell"], _ci_text(r, ASR)] for r in line],
                hovertemplate="%{customdata[0]}<br>W%{x}: ASR %{customdata[1]}<extra></extra>",
            )
        )
        fp = fp_reference(line[0], rows)
        if fp:
            references[fp["cell"]] = (fp, m[0])
    for fp, model in references.values():
        fig.add_hline(y=fp[ASR], line={"dash": "dash", "width": 1, "color": "black"})  # FP level across all bits
        fig.add_trace(
            go.Scatter(
                x=[FP_BITS],
                y=[fp[ASR]],
                mode="markers",
                name=f"FP {model}" if several else "FP",
                marker={"symbol": "star", "size": 12, "color": "black"},
                error_y=_error([fp], ASR),
                customdata=[[fp["cell"], _ci_text(fp, ASR)]],
                hovertemplate="%{customdata[0]}<br>FP: ASR %{customdata[1]}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"ASR vs bit-width — {groups.label(group)}",
        xaxis={
            "title": {"text": "bits (broken cells left out)"},
            "type": "category",
            "categoryorder": "array",
            "categoryarray": bit_categories([r["bits"] for r in cells]),
        },
        yaxis={"title": {"text": "ASR (AdvBench, 95% CI)"}, "range": [0, 1.05]},
    )
    return fig


def safety_utility(rows: list[dict], suite: str = "advbench") -> go.Figure | None:
    group = groups.one(rows)
    asr, asr_label = safety_axis(suite)
    points = safety_utility_points(rows, suite)
    if points is None:
        return None
    cells, key, label = points
    fig = go.Figure()
    kinds = (
        ("FP", lambda r: r["quant"] == "none" and r["patch"] == "none", "star", "black"),
        ("quantized", lambda r: r["quant"] != "none" and r["patch"] == "none", "circle", "#4c72b0"),
        ("patched", lambda r: r["patch"] != "none", "diamond", "#55a868"),
    )
    for name, pick, symbol, colour in kinds:
        shown = [r for r in cells if pick(r)]
        if not shown:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r[key] for r in shown],
                y=[r[asr] for r in shown],
                mode="markers",
                name=name,
                marker={"symbol": symbol, "size": 11, "color": colour},
                error_y=_error(shown, asr),
                customdata=[[r["cell"], _ci_text(r, asr), _delta_text(r, asr)] for r in shown],
                hovertemplate="%{customdata[0]}<br>ASR %{customdata[1]}%{customdata[2]}<br>"
                + label
                + " %{x:.3f}<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Safety vs utility, one point per cell (hover for the cell) — {groups.label(group)}",
        xaxis={"title": {"text": label}},
        yaxis={"title": {"text": f"{asr_label[:-1]}, 95% CI)"}},
    )
    return fig


def all_figures(rows: list[dict], safety_suite: str = "advbench") -> dict[str, dict]:
    """{"asr_vs_bits-reduced-vanilla": plotly figure as a JSON-able dict, ...}."""
    builders = {
        "asr_vs_bits": asr_vs_bits,
        "safety_utility": lambda group_rows: safety_utility(group_rows, safety_suite),
    }
    made = {}
    for group, group_rows in groups.split(rows).items():
        for name, build in builders.items():
            fig = build(group_rows)
            if fig is not None:
                fig.update_layout(
                    template="plotly_white",
                    height=420,
                    margin={"t": 60},
                    legend={"font": {"size": 11}},
                    hoverlabel={"namelength": -1},
                )
                made[f"{name}-{groups.slug(group)}"] = json.loads(fig.to_json())
    return made
