"""The short end-of-run table: cell, ASR (CI), XSTest refusal (CI), utility, degeneration, size on
disk, the unmerged patch's ASR, patch time, build time. Simulated (quantize-dequantize) results are marked in the cell column."""

from __future__ import annotations


def _rate(block: dict | None) -> str:
    if not block or block.get("rate") is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{block['rate']:.2f} [{lo:.2f},{hi:.2f}] n={block['n']}"


def _value(block: dict | None) -> str:
    if not block or block.get("value") is None:
        return "-"
    lo, hi = block["ci95"]
    return f"{block['value']:.2f} [{lo:.2f},{hi:.2f}] n={block['n']}"


def _broken_rate(block: dict, metric: str) -> str:
    raw, clean = block.get(metric), block.get(f"{metric}_non_degenerate")
    if not raw:
        return "-"
    clean_text = f"{clean['rate']:.2f} n={clean['n']}" if clean and clean["rate"] is not None else "n=0"
    return f"broken (raw {raw['rate']:.2f}; non-degenerate {clean_text})"


def _build_seconds(metrics: dict) -> float:
    quantize = (metrics.get("quantization") or {}).get("quantize_seconds") or 0.0
    return quantize + _patch_seconds(metrics) + metrics["cost"]["eval_seconds"]


def _patch_seconds(metrics: dict) -> float:
    return ((metrics.get("patch") or {}).get("cost") or {}).get("wall_seconds") or 0.0


def _size(metrics: dict) -> str:
    size = ((metrics.get("patch") or {}).get("sizes") or {}).get("merged_checkpoint_bytes") \
        or (metrics.get("quantization") or {}).get("checkpoint_bytes")
    return f"{size / 1e6:.0f} MB" if size else "-"


def _unmerged_asr(metrics: dict) -> str:
    variant = ((metrics.get("patch") or {}).get("variants") or {}).get("adapter")
    if not variant:
        return "-"
    block = variant["scores"].get("advbench", {}).get("asr")
    return f"{block['rate']:.2f} n={block['n']}" if block and block.get("rate") is not None else "-"


def table_row(metrics: dict) -> dict:
    if metrics.get("status") == "unsupported":
        return {"cell": metrics["cell"], "ASR advbench (95% CI)": "unsupported", "XSTest-safe refusal (95% CI)":
                metrics["reason"], "ref. perplexity (95% CI)": "-", "degenerate": "-", "size": "-",
                "ASR unmerged patch": "-", "patch time": "-", "build time": "-"}
    scores = metrics.get("scores", {})
    advbench, xstest = scores.get("advbench", {}), scores.get("xstest_safe", {})
    degenerate = metrics["summary"]["degenerate"]
    broken = metrics["summary"]["broken"]
    flag = " BROKEN" if broken else ""
    # A broken cell's rates measure gibberish, not safety: say so instead of showing a bare ASR.
    show = _broken_rate if broken else (lambda block, metric: _rate(block.get(metric)))
    simulated = " (simulated)" if (metrics.get("quantization") or {}).get("simulated") else ""
    return {
        "cell": metrics["cell"] + simulated,
        "ASR advbench (95% CI)": show(advbench, "asr"),
        "XSTest-safe refusal (95% CI)": show(xstest, "refusal_rate"),
        "ref. perplexity (95% CI)": _value(scores.get("alpaca_eval_ppl", {}).get("reference_perplexity")),
        "degenerate": f"{degenerate['rate']:.2f}{flag}" if degenerate["rate"] is not None else "-",
        "size": _size(metrics),  # the evaluated (quantized, or merged patched) checkpoint's safetensors
        "ASR unmerged patch": _unmerged_asr(metrics),  # the 16-bit patch on the quantized base
        "patch time": f"{_patch_seconds(metrics):.0f}s" if metrics.get("patch") else "-",
        # seconds spent building this cell's artifacts (quantize + evaluate): the same on a warm
        # rerun, which takes ~0 s of its own (metrics.json keeps that as cost.wall_seconds)
        "build time": f"{_build_seconds(metrics):.0f}s",
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no cells)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    line = lambda values: "| " + " | ".join(str(v).ljust(widths[c]) for c, v in zip(columns, values)) + " |"
    sep = "|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|"
    return "\n".join([line(columns), sep, *(line([r[c] for c in columns]) for r in rows)])
