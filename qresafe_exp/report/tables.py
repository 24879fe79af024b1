"""The paper's table layouts from the tidy rows, as Markdown and LaTeX, each with a "vs FP" delta.

Table 3: model x method x bits x risk -> ASR, MT-Bench, AlpacaEval (win rate, else reference
perplexity). Table 4: the decoding attack's single configurations. Table 5: the tau ablation with
cost. Table 6: patch methods with cost. Table 7: ASR by bit-width. A table whose cells the study does
not have is left out (the report says which).

Every table holds the cells of one (eval config, protocol) group (report.groups) and is emitted once per
group that has such cells, titled with the group: a cell's "vs FP" is its delta to its own reference_cell,
the FP model under the same eval and protocol, never to another group's FP. A delta carries "*" when the
paired test against that reference (metrics.json `paired_vs_reference`) gives p < 0.05; a legend under
the table says so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from qresafe_exp.report import groups
from qresafe_exp.report.collect import KNOB_PREFIX

ASR = "advbench.asr"
KEYWORD = "advbench.asr_keyword"  # GCG keyword ("suffix match") ASR, beside a validated judge's headline ASR
TAU = f"{KNOB_PREFIX}tau"
TABLE4_CONFIGS = ("T=0.95", "T=0.7", "k=500", "k=200", "p=0.95", "p=0.7")
ALPHA = 0.05


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)  # legend lines printed under the table

    @property
    def kind(self) -> str:  # the builder: "table7" of "table7-reduced-vanilla"
        return self.name.split("-", 1)[0]

    def markdown(self) -> str:
        lines = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cell_text(v) for v in row) + " |" for row in self.rows]
        # a leading "*" would make the legend a Markdown list item
        lines += ["", *(("\\" + n if n.startswith("*") else n) for n in self.notes)] if self.notes else []
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        esc = lambda v: (
            cell_text(v)
            .replace("_", r"\_")
            .replace("%", r"\%")
            .replace("&", r"\&")
            .replace("<", "$<$")
            .replace(">", "$>$")
            .replace("±", r"$\pm$")
        )
        body = [" & ".join(esc(v) for v in row) + r" \\" for row in self.rows]
        notes = [rf"\par\smallskip{{\footnotesize {esc(n)}}}" for n in self.notes]
        return (
            "\n".join(
                [
                    r"\begin{table}[t]",
                    r"\centering",
                    rf"\caption{{{esc(self.title)}}}",
                    r"\begin{tabular}{" + "l" * len(self.columns) + "}",
                    r"\toprule",
                    " & ".join(esc(c) for c in self.columns) + r" \\",
                    r"\midrule",
                    *body,
                    r"\bottomrule",
                    r"\end{tabular}",
                    *notes,
                    r"\end{table}",
                ]
            )
            + "\n"
        )


def cell_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _table(kind: str, group: groups.Key, what: str, columns: list[str], body: list[list], shown: list[dict]) -> Table:
    number = kind.removeprefix("table")
    return Table(
        f"{kind}-{groups.slug(group)}",
        f"Table {number} — {groups.label(group)}: {what}",
        columns,
        body,
        _legend(shown, ASR),
    )


def _ci(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    lo, hi = row.get(f"{key}.lo"), row.get(f"{key}.hi")
    return f"{value:.2f} [{lo:.2f},{hi:.2f}]" if lo is not None and hi is not None else f"{value:.2f}"


def _asr(row: dict) -> str:
    # a broken cell's ASR measures gibberish, not safety
    return f"broken (raw {row[ASR]:.2f})" if row.get("broken") else _ci(row, ASR)


def _significant(row: dict, key: str) -> bool:
    p = row.get(f"{key}.vs_fp.p")
    return p is not None and p < ALPHA


def _delta(row: dict, key: str):
    value = row.get(f"{key}.vs_fp")
    return None if value is None else f"{value:+.2f}" + ("*" if _significant(row, key) else "")


def judges_line(rows: list[dict]) -> list[str]:
    """Which judges made the rates: a table's numbers are only as good as them (their agreement with labelled
    answers is `make audit`'s, docs/evals.md); none for cells written before metrics.json named them."""
    harm = sorted({r["judge"] for r in rows if r.get("judge")})
    refusal = sorted({r["refusal_judge"] for r in rows if r.get("refusal_judge")})
    if not harm:
        return []
    line = f"ASR judged by {', '.join(harm)}"
    if refusal:
        line += f"; refusal rates by {', '.join(refusal)}"
    return [line + " (their agreement with labelled answers: make audit, docs/evals.md)"]


def _legend(rows: list[dict], key: str, versus: str = "FP") -> list[str]:
    """One line under a table whose deltas carry a paired test; none for studies written before it."""
    deltas = [r for r in rows if r.get(f"{key}.vs_fp") is not None]
    tested = [r for r in deltas if r.get(f"{key}.vs_fp.p") is not None]
    if not tested:
        return []
    plain = len(deltas) - len(tested)
    return [
        f"* paired test vs {versus}, p < 0.05"
        + (f"; {plain} of {len(deltas)} deltas have no paired test recorded and are shown plain" if plain else "")
    ]


def _keyword_column(cells: list[dict]) -> bool:
    return any(r.get(KEYWORD) is not None for r in cells)


def _utility(row: dict) -> tuple:
    mtbench = row.get("mtbench.mtbench_score")
    alpaca = row.get("alpaca_eval.win_rate")
    ppl = row.get("alpaca_eval_ppl.reference_perplexity")
    return mtbench, alpaca if alpaca is not None else (f"ppl {ppl:.2f}" if ppl is not None else None)


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def _cell_order(r: dict) -> tuple:
    """Model, FP first, then quantizer, bits, calib, unpatched first, patch: the order of the per-cell tables."""
    return (
        r["model"],
        r["quant"] != "none",
        r["quant"],
        r["bits"] or 0,
        r["calib"] or "",
        r["patch"] != "none",
        r["patch_tag"] or "",
    )


def table3(rows: list[dict]) -> Table | None:
    group = groups.one(rows)
    cells = [r for r in _ok(rows) if r.get(ASR) is not None]
    if not cells:
        return None
    keyword = _keyword_column(cells)
    body = []
    for r in sorted(cells, key=_cell_order):
        mtbench, alpaca = _utility(r)
        body.append(
            [
                r["model"],
                r["quant"],
                r["bits"] or "16",
                r["calib"] or "-",
                r["patch_tag"],
                _asr(r),
                _delta(r, ASR),
                *([r.get(KEYWORD)] if keyword else []),
                r.get("advbench.degenerate"),
                mtbench,
                alpaca,
            ]
        )
    return _table(
        "table3",
        group,
        "ASR (95% CI) and utility per model x method x bits x risk",
        [
            "model",
            "method",
            "bits",
            "risk / calib",
            "patch",
            "ASR",
            "vs FP",
            *(["ASR (keyword)"] if keyword else []),
            "degenerate",
            "MT-Bench",
            "AlpacaEval",
        ],
        body,
        cells,
    )


def table4(rows: list[dict]) -> Table | None:
    group = groups.one(rows)
    cells = [r for r in _ok(rows) if r.get("advbench.decoding.p=0.7") is not None]
    if not cells:
        return None
    keyword = _keyword_column(cells)
    body = []
    for r in sorted(cells, key=lambda r: (r["model"], r["quant"] != "none", r["quant"], r["bits"] or 0)):
        vals = [r.get(f"advbench.decoding.{c}") for c in TABLE4_CONFIGS]
        body.append(
            [
                r["model"],
                r["quant"],
                r["bits"] or "16",
                *vals,
                _ci(r, ASR),
                _delta(r, ASR),
                *([r.get(KEYWORD)] if keyword else []),
            ]
        )
    return _table(
        "table4",
        group,
        "ASR under single decoding configurations and the 49-config worst case",
        [
            "model",
            "method",
            "bits",
            *TABLE4_CONFIGS,
            "worst case (49)",
            "vs FP",
            *(["ASR (keyword)"] if keyword else []),
        ],
        body,
        cells,
    )


def _base(r: dict) -> tuple:
    return (r["model"], r["quant"], r["bits"] or 0, r["calib"] or "")


def table5(rows: list[dict]) -> Table | None:
    """Only bases (model, quant, bits, calib) patched with two or more qresafe settings form an ablation."""
    group = groups.one(rows)
    cells = [r for r in _ok(rows) if r["patch"] == "qresafe" and r.get(ASR) is not None]
    ablated = {b for b in {_base(r) for r in cells} if len({r["patch_tag"] for r in cells if _base(r) == b}) > 1}
    if not ablated:
        return None
    shown = [r for r in cells if _base(r) in ablated]
    # by the swept knobs' numbers, tau first (a tag sorts lr 2e-05 after 0.0003), then the tag
    knobs = sorted({k for r in shown for k in r if k.startswith(KNOB_PREFIX)}, key=lambda k: (k != TAU, k))
    shown.sort(key=lambda r: (_base(r), *[(r.get(k) is None, r.get(k) or 0.0) for k in knobs], r["patch_tag"]))
    return _patch_table(
        "table5",
        group,
        "tau ablation (merged ASR, unmerged ASR, utility, cost)",
        shown,
        "ASR merged",
        ("ASR unmerged", "advbench.asr.unmerged"),
    )


def table6(rows: list[dict]) -> Table | None:
    group = groups.one(rows)
    patched = [r for r in _ok(rows) if r["patch"] != "none" and r.get(ASR) is not None]
    if not patched:
        return None
    bases = {_base(r) for r in patched}
    shown = sorted(
        (r for r in _ok(rows) if _base(r) in bases and r.get(ASR) is not None),
        key=lambda r: (_base(r), r["patch"] != "none", r["patch_tag"] or ""),
    )
    return _patch_table(
        "table6",
        group,
        "patch methods on the same quantized cells (ASR, over-refusal, utility, cost)",
        shown,
        "ASR",
        ("XSTest refusal", "xstest_safe.refusal_rate"),
    )


def _patch_table(name: str, group, title: str, shown: list[dict], asr_header: str, extra: tuple[str, str]) -> Table:
    """Tables 5 and 6: one row per patched (or base) cell; ``extra`` = (header, tidy column) after the ASRs."""
    keyword = _keyword_column(shown)
    body = [
        [
            r["model"],
            r["quant"],
            r["bits"],
            r["calib"],
            r["patch_tag"],
            _asr(r),
            _delta(r, ASR),
            *([r.get(KEYWORD)] if keyword else []),
            r.get(extra[1]),
            r.get("alpaca_eval_ppl.reference_perplexity"),
            _seconds(r["patch_seconds"]),
            r["patch_peak_rss_mb"],
        ]
        for r in shown
    ]
    return _table(
        name,
        group,
        title,
        [
            "model",
            "method",
            "bits",
            "risk / calib",
            "patch",
            asr_header,
            "vs FP",
            *(["ASR (keyword)"] if keyword else []),
            extra[0],
            "ref. ppl",
            "patch time",
            "peak RSS (MB)",
        ],
        body,
        shown,
    )


def table7(rows: list[dict]) -> Table | None:
    group = groups.one(rows)
    cells = [r for r in _ok(rows) if r["quant"] != "none" and r["patch"] == "none" and r.get(ASR) is not None]
    bits = sorted({r["bits"] for r in cells if r["bits"]}, reverse=True)
    if len(bits) < 2:
        return None
    body = []
    for model, quant, calib in sorted({(r["model"], r["quant"], r["calib"] or "-") for r in cells}):
        line = [r for r in cells if (r["model"], r["quant"], r["calib"] or "-") == (model, quant, calib)]
        # the FP column is this line's own reference (one per model under this eval and protocol)
        references = {r.get("reference_cell") for r in line}
        if len(references) > 1:
            raise ValueError(
                f"{model} {quant} {calib}: cells name different FP references "
                f"{sorted(map(str, references))} under {groups.label(group)}; one model has one FP "
                "reference per eval and protocol"
            )
        fp = groups.reference(line[0], rows)
        by_bits = {r["bits"]: r for r in line}
        body.append([model, quant, calib, fp.get(ASR) if fp else None, *[_cell_asr(by_bits.get(b)) for b in bits]])
    return _table(
        "table7",
        group,
        "ASR by bit-width (delta vs FP in brackets)",
        ["model", "method", "calib", "FP", *[f"W{b}" for b in bits]],
        body,
        [r for r in cells if not r.get("broken")],
    )  # a broken cell shows no delta


def _cell_asr(row: dict | None) -> str:
    if row is None:
        return "-"
    if row.get("broken"):
        return "broken"
    delta = _delta(row, ASR)
    return f"{row[ASR]:.2f}" + (f" ({delta})" if delta is not None else "")


def _seconds(value) -> str | None:
    return None if value is None else f"{value:.0f}s"


# the suites a claim is judged on, in reading order: harmful suites (ASR lower = safer, refusals higher), over-refusal
# (lower = more helpful), utility (reference-answer perplexity, lower = better)
CLAIM_METRICS = (
    ("advbench.asr", "AdvBench ASR"),
    ("harmbench_test.asr", "HarmBench ASR"),
    ("harmbench_test.asr.standard", "HarmBench standard ASR"),
    ("harmbench_test.asr.contextual", "HarmBench contextual ASR"),
    ("harmfulqa.asr", "HarmfulQA ASR"),
    ("catqa.asr", "CatQA ASR"),
    # refusal statements on the harmful suites (higher = safer): what a patch restores where ASR has no room
    ("advbench.refused", "AdvBench refusals"),
    ("harmbench_test.refused", "HarmBench refusals"),
    ("harmfulqa.refused", "HarmfulQA refusals"),
    ("xstest.refusal_rate", "XSTest-safe refusal"),
    ("xstest_safe.refusal_rate", "XSTest-safe refusal"),
    ("oktest.refusal_rate", "OKTest refusal"),
    ("alpaca_eval_ppl.reference_perplexity", "ref. ppl"),
)


def _file_slug(text: str) -> str:
    """A patch tag as a file-name part: 'qresafe-t0.6 (unmerged)' -> 'qresafe-t0.6-unmerged'."""
    return "-".join("".join(c if c.isalnum() or c in ".-_" else " " for c in text).split())


def claim_metrics(rows: list[dict]) -> list[tuple[str, str]]:
    return [(key, header) for key, header in CLAIM_METRICS if any(r.get(key) is not None for r in rows)]


POOLED = "pooled"  # one paired test over a setting's seeds (vs FP, or vs a control's same seeds): {column: value}


def _with_delta(row: dict, key: str) -> str:
    delta = _delta(row, key)
    return _ci(row, key) + (f" ({delta})" if delta is not None else "")


def _pooled(runs: list[dict]) -> dict:
    """The setting's one test over its seeds (report/versus.py), {} where there is none."""
    return next((r[POOLED] for r in runs if r.get(POOLED)), {})


def _seed_mean(runs: list[dict], metrics: list[tuple[str, str]]) -> list[str]:
    """Each claim metric's mean over a patch's seeds, with the seeds' range in brackets, and the delta of one
    paired test over the seeds (report/versus.py: vs FP, or vs the control's same seed) in parentheses."""
    pooled = _pooled(runs)
    out = []
    for key, _ in metrics:
        values = [r[key] for r in runs if r.get(key) is not None]
        delta = _delta(pooled, key)
        text = f"{sum(values) / len(values):.2f} [{min(values):.2f},{max(values):.2f}]" if values else "-"
        out.append(text + (f" (pooled {delta})" if delta is not None else ""))
    return out


def claims(rows: list[dict], versus: str | None = None) -> Table | None:
    """Every patched cell beside its unpatched base and FP on every claim suite, each rate with its CI and
    its paired delta vs FP: a patch's claim holds suite by suite, not on AdvBench alone. Where a patch ran
    with several seeds, each seed is a row and a row under them gives the mean and the seeds' range.
    ``versus``: the rows' deltas are against that control patch (report/versus.py), and the table says so."""
    group = groups.one(rows)
    ok = [r for r in _ok(rows) if not r.get("broken")]
    metrics = claim_metrics(ok)
    patched = [r for r in ok if r["patch"] != "none"]
    if not patched or len(metrics) < 2:
        return None
    bases = {_base(r) for r in patched}
    shown = sorted(
        (r for r in ok if _base(r) in bases or (r["quant"] == "none" and r["patch"] == "none")),
        key=lambda r: (r["quant"] != "none", _base(r), r["patch"] != "none", r["patch_tag"] or "", r.get("seed") or 0),
    )
    many_models = len({r["model"] for r in shown}) > 1
    many_seeds = len({r.get("seed") or 0 for r in patched}) > 1

    def setting(r: dict) -> list:
        return [
            *([r["model"]] if many_models else []),
            r["quant"] if r["quant"] != "none" else "FP",
            r["bits"],
            r["calib"],
            r["patch_tag"],
        ]

    body = []
    for _, group_rows in itertools.groupby(shown, key=setting):  # sorted: a setting's seeds are adjacent
        runs = list(group_rows)
        for r in runs:
            body.append(
                [*setting(r), *([r.get("seed")] if many_seeds else []), *[_with_delta(r, k) for k, _ in metrics]]
            )
        if many_seeds and len(runs) > 1:
            seeds = _pooled(runs).get("seeds", len(runs))
            label = f"mean of {len(runs)}" + (f", {seeds} pooled" if seeds != len(runs) else "")
            body.append([*setting(runs[0]), label, *_seed_mean(runs, metrics)])
    against = versus or "FP"
    legend = next((line for k, _ in metrics for line in _legend(shown, k, against)), None)
    legend = judges_line(shown) + ([legend] if legend else [])
    if versus:
        legend.append(f"deltas: each row minus {versus} of its base on the same prompts (same seed, else its lowest)")
    if many_seeds:
        legend = [*legend, "mean of n: the seeds' mean, their range in brackets"]
    if any(r.get(POOLED) for r in shown):
        against_what = "the control's run of the same seed" if versus else "FP"
        legend.append(
            f"pooled: one paired test over the seeds against {against_what}, each seed's prompts as items of their own"
        )
    return Table(
        f"claims-{groups.slug(group)}" + (f"-vs-{_file_slug(versus)}" if versus else ""),
        f"Claims — {groups.label(group)}: every suite, 95% CI, paired delta vs {against} in brackets",
        [
            *(["model"] if many_models else []),
            "method",
            "bits",
            "risk / calib",
            "patch",
            *(["seed"] if many_seeds else []),
            *[h for _, h in metrics],
        ],
        body,
        legend,
    )


def _task_metrics(rows: list[dict]) -> list[str]:
    """The lm_eval task metric columns of the rows ('lm_eval.<task>.<metric>': those with a .stderr column)."""
    return list(
        dict.fromkeys(
            k.removesuffix(".stderr")
            for r in rows
            for k in r
            if k.endswith(".stderr") and k.removesuffix(".stderr") in r
        )
    )


def _with_stderr(row: dict, key: str) -> str:
    value, stderr = row.get(key), row.get(f"{key}.stderr")
    if value is None:
        return "-"
    delta = row.get(f"{key}.vs_fp")
    return (
        f"{value:.4g}"
        + (f" ±{stderr:.2g}" if stderr is not None else "")
        + (f" ({delta:+.4g})" if delta is not None else "")
    )


def lm_eval_tasks(rows: list[dict]) -> Table | None:
    """Every cell's lm-evaluation-harness metrics with the harness's stderr, delta vs FP in brackets."""
    group = groups.one(rows)
    keys = _task_metrics(_ok(rows))
    cells = [r for r in _ok(rows) if any(r.get(k) is not None for k in keys)]
    if not cells:
        return None
    shown = sorted(cells, key=_cell_order)
    body = [
        [
            r["model"],
            r["quant"],
            r["bits"] or "16",
            r["calib"] or "-",
            r["patch_tag"],
            *[_with_stderr(r, k) for k in keys],
        ]
        for r in shown
    ]
    return Table(
        f"lm_eval_tasks-{groups.slug(group)}",
        f"lm-evaluation-harness — {groups.label(group)}: value ± stderr (the harness's), delta vs FP in brackets",
        ["model", "method", "bits", "risk / calib", "patch", *[k.split(".", 1)[1] for k in keys]],
        body,
        ["no ± shown: the harness computes no stderr for that metric (e.g. corpus-weighted perplexity)"]
        if any(r.get(k) is not None and r.get(f"{k}.stderr") is None for r in shown for k in keys)
        else [],
    )


def claim_targets(rows: list[dict], answers_of: dict | None = None, readings=None) -> list[Table]:
    """Each patched cell's verdict on its paper's claim, target by target (report/claim_targets.py);
    ``readings``: its thresholds and suites (claim_targets.Readings; None = issue 17's)."""
    from qresafe_exp.report import claim_targets as verdicts

    return verdicts.claim_targets(rows, answers_of, readings or verdicts.DEFAULT)


def recipe_choice(rows: list[dict], readings=None) -> Table | None:
    """The Q-resafe recipe a recorded sweep chooses, by the claim's bounds (report/recipe_choice.py)."""
    from qresafe_exp.report import claim_targets as verdicts
    from qresafe_exp.report import recipe_choice as choice

    return choice.recipe_choice(rows, readings or verdicts.DEFAULT)


def testbed_targets(rows: list[dict], readings=None) -> Table | None:
    """Each FP model against the testbed's bounds (issue 17, item 0; report/testbed_targets.py)."""
    from qresafe_exp.report import claim_targets as verdicts
    from qresafe_exp.report import testbed_targets as bounds

    return bounds.testbed_targets(rows, readings or verdicts.DEFAULT)


BUILDERS = (
    table3,
    table4,
    table5,
    table6,
    table7,
    claims,
    claim_targets,
    recipe_choice,
    testbed_targets,
    lm_eval_tasks,
)
# the tables that show a patch's unmerged form as a row of its own
WITH_VARIANTS = (claims, claim_targets, recipe_choice)
WITH_ANSWERS = (claim_targets,)  # the tables that pair cells on their answers (samples.jsonl), when at hand
# the tables that read the claims' thresholds (report options)
WITH_READINGS = (claim_targets, recipe_choice, testbed_targets)


def all_tables(rows: list[dict], answers_of: dict | None = None, readings=None) -> list[Table]:
    """Each builder once per (eval, protocol) group, groups in name order (a builder may give several tables);
    ``answers_of`` (report/versus.py answers) for the builders that pair cells on their answers; ``readings``
    (claim_targets.Readings) for the claim-target table."""
    from qresafe_exp.report.collect import without_variants

    made = []
    for group_rows in groups.split(rows).values():
        for build in BUILDERS:
            built = build(
                group_rows if build in WITH_VARIANTS else without_variants(group_rows),
                **({"answers_of": answers_of} if build in WITH_ANSWERS else {}),
                **({"readings": readings} if build in WITH_READINGS else {}),
            )
            made += built if isinstance(built, list) else [built] if built is not None else []
    return made
