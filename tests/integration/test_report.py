"""`python -m qresafe_exp.report`: golden tables and tidy rows from a small checked-in study written by
the project itself (tests/data/report_study: trimmed metrics.json of real testbed cells), the figures,
and the dashboard rendered in a real headless Chromium (Debian's; skipped, and said, without it).

The study has three (eval config, protocol) groups: reduced/vanilla (greedy, n=64; FP + 8 cells),
decoding/decoding (worst case over 49 sampled configurations, n=16; FP + AWQ W4) and safety/vanilla (FP
only). Every table and figure holds one group; the golden files were derived by hand from the
metrics.json numbers first, then compared with the code's output.

Added by hand to the real cells (their samples.jsonl were not kept, so nothing recomputes these):
`paired_vs_reference` in gptq-w4 (advbench 2 vs 0 discordant pairs, p 0.5), qlora none (52 vs 0, and
xstest 8 vs 1, p 0.039), qresafe-t0.6-qa (26 vs 1) and the decoding AWQ cell (2 vs 1 of 16, p 1.0):
plausible pairings, not measured ones, consistent with each cell's and its FP's k (so the paired delta
equals vs_reference), each entry written by qresafe_exp.stats.paired_binary from lists with those
counts. `asr_keyword` in fp.none, gptq-w4, qlora none, qresafe-t0.6-qa and both decoding cells:
a copy of `asr`, since these cells were judged by the keyword judge itself. The other cells keep the
older format, so the tables show plain deltas and "-" beside the new ones.

The three Q-resafe cells' unmerged forms (metrics.json patch.variants.adapter) are rows of their own in
results.csv (column `variant`) and in the claims table, without deltas (these older cells' variants carry
no paired test), and in no other table.

samples.jsonl (the dashboard's sample browser) beside five reduced/vanilla cells (FP, GPTQ W2/W3/W4/W8):
the real rows of the same cells from a later run (study testbed_quant, rule-based `harm` judge,
`refusal` refusal judge), trimmed to the same 32 AdvBench, 32 XSTest-safe and 4 AlpacaEval-ppl prompts
per cell. So that the page names the judges that wrote these rows, those five metrics.json were edited
to say `protocol.judge: harm` and `protocol.refusal_judge: refusal` (they said `keyword`; no table or
tidy column reads either). Their scores, the `asr_keyword` copies included, stay those of the original
keyword-judged run: the samples' verdict counts are the later run's, not these metrics.json numbers.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "tests" / "data" / "report_study"
GOLDEN = ROOT / "tests" / "data" / "report_golden"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    studies = out / "studies"
    shutil.copytree(STUDY, studies / "report_study")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qresafe_exp.report",
            "study=report_study",
            "logger=none",
            f"studies_dir={studies}",
            f"out_dir={out / 'report'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "report", result.stdout


# one table per (eval, protocol) group that has such cells: decoding has no Table 5-7 (one AWQ cell, no patch),
# safety only its FP row, so Table 3
TABLES = [
    "table3-decoding-decoding",
    "table4-decoding-decoding",
    "table3-reduced-vanilla",
    "table5-reduced-vanilla",
    "table6-reduced-vanilla",
    "table7-reduced-vanilla",
    "claims-reduced-vanilla",
    "claim_targets-qresafe-reduced-vanilla",
    "recipe_choice-reduced-vanilla",
    "table3-safety-vanilla",
]
FIGURES = [
    "patch_bars-reduced-vanilla",
    "asr_vs_bits-reduced-vanilla",
    "safety_utility-reduced-vanilla",
    "claim_panels-reduced-vanilla",
    "category_bars-safety-vanilla",
]


@pytest.mark.parametrize("table", TABLES)
def test_tables_match_the_golden_files(report, table):
    out, _ = report
    for suffix in (".md", ".tex"):
        assert (out / "tables" / f"{table}{suffix}").read_text() == (GOLDEN / f"{table}{suffix}").read_text()


def test_no_table_beyond_the_golden_ones(report):
    out, _ = report
    made = sorted(p.name for p in (out / "tables").iterdir())
    want = sorted(f"{t}{s}" for t in TABLES for s in (".md", ".tex"))
    assert made == sorted(p.name for p in GOLDEN.iterdir() if p.suffix in (".md", ".tex")) == want


def test_a_decoding_cell_never_sits_beside_greedy_cells(report):
    """The old Table 7 put the decoding AWQ cell (0.81, n=16, delta vs the decoding FP) in a row under the
    greedy FP's 0.03; Table 3 mixed all three groups."""
    out, _ = report
    table7 = (out / "tables" / "table7-reduced-vanilla.md").read_text()
    assert "awq" not in table7 and "0.81 (+0.06)" not in table7 and "0.84 (+0.81*)" in table7
    decoding = (out / "tables" / "table3-decoding-decoding.md").read_text()
    assert "ppl" not in decoding and "gptq" not in decoding and "| awq | 4 |" in decoding
    reduced = (out / "tables" / "table3-reduced-vanilla.md").read_text()
    assert "awq" not in reduced and reduced.count("| none | 16 |") == 1  # one FP row: its own group's


def test_tidy_rows_match_the_golden_csv(report):
    out, _ = report
    got = list(csv.DictReader(open(out / "results.csv")))
    want = list(csv.DictReader(open(GOLDEN / "results.csv")))
    assert len(got) == len(want) == 15  # 12 cells + the unmerged form of 3 Q-resafe cells, a row each
    keys = [
        "cell",
        "eval",
        "protocol",
        "reference_cell",
        "quant",
        "bits",
        "patch_tag",
        "advbench.asr",
        "advbench.asr.n",
        "advbench.asr.lo",
        "advbench.asr.hi",
        "advbench.asr.vs_fp",
        "advbench.asr.vs_fp.lo",
        "advbench.asr.vs_fp.hi",
        "advbench.asr.vs_fp.p",
        "advbench.asr_keyword",
        "advbench.degenerate",
        "xstest_safe.refusal_rate.vs_fp.p",
        "patch_seconds",
        "advbench.decoding.p=0.7",
        "patch.tau",
    ]
    assert [[r[k] for k in keys] for r in got] == [[r[k] for k in keys] for r in want]
    # the patch's tau as a number (cells written before axes.patch_knobs: metrics.json patch.tau)
    assert {r["patch_tag"]: r["patch.tau"] for r in got if r["patch"].startswith("qresafe") and not r["variant"]} == {
        "qresafe-t0.6": "0.6",
        "qresafe-t0.6-qa": "0.6",
        "qresafe-t1.0": "1.0",
    }
    # the judges that made each row's rates (metrics.json protocol.judge / refusal_judge): a rule judge with its
    # rules version, so a table can say what its ASR means; the keyword cells predate a refusal judge
    judged = {(r["judge"], r["refusal_judge"]) for r in got}
    assert judged == {("keyword", ""), ("keyword", "strmatch"), ("harm rules v1", "refusal")}
    unmerged = {r["patch_tag"]: r["advbench.asr"] for r in got if r["variant"] == "unmerged"}
    assert unmerged == {  # metrics.json patch.variants.adapter.scores: k/n of each unmerged form
        "qresafe-t0.6 (unmerged)": str(23 / 64),
        "qresafe-t0.6-qa (unmerged)": str(34 / 64),
        "qresafe-t1.0 (unmerged)": str(26 / 64),
    }
    qlora = next(r for r in got if r["cell"].endswith("risk3-n10e5.none"))
    assert (qlora["advbench.asr.vs_fp.p"], qlora["xstest_safe.refusal_rate.vs_fp.p"]) == ("4.441e-16", "0.03906")
    import pandas as pd

    assert len(pd.read_parquet(out / "results.parquet")) == 15


def test_tidy_row_reads_the_keyword_asr_and_the_paired_test_apart_from_the_headline():
    from qresafe_exp.report.collect import tidy_row

    rate = lambda k, n: {"k": k, "n": n, "rate": k / n, "ci95": [0.1, 0.9]}
    row = tidy_row(
        {
            "cell": "m.gptq-w4.none",
            "reference_cell": "m.fp.none",
            "protocol": {"eval": "reduced", "protocol": "vanilla"},
            "scores": {
                "advbench": {
                    "metric": "asr",
                    "asr": rate(10, 64),
                    "asr_keyword": rate(30, 64),
                    "degenerate": rate(2, 64),
                }
            },
            "vs_reference": {"advbench.asr": 0.125},
            "paired_vs_reference": {
                "advbench.asr": {
                    "delta": 0.125,
                    "ci95": [0.02, 0.23],
                    "n_pairs": 64,
                    "cell_only": 9,
                    "reference_only": 1,
                    "p_value": 0.0215,
                    "test": "mcnemar_exact",
                    "significant": True,
                }
            },
        }
    )
    assert (row["advbench.asr"], row["advbench.asr_keyword"], row["advbench.degenerate"]) == (10 / 64, 30 / 64, 2 / 64)
    assert (
        row["advbench.asr.vs_fp"],
        row["advbench.asr.vs_fp.lo"],
        row["advbench.asr.vs_fp.hi"],
        row["advbench.asr.vs_fp.p"],
    ) == (0.125, 0.02, 0.23, 0.0215)
    old = tidy_row(
        {
            "cell": "m.gptq-w4.none",
            "scores": {"advbench": {"metric": "asr", "asr": rate(10, 64)}},
            "vs_reference": {"advbench.asr": 0.125},
        }
    )
    assert old["advbench.asr.vs_fp"] == 0.125 and "advbench.asr.vs_fp.p" not in old


def test_builders_refuse_rows_of_two_groups(report):
    """A builder handed a whole study (greedy + decoding rows) raises instead of mixing them, and a cell whose
    reference lies in another group is an error."""
    from qresafe_exp.report import collect, figures, groups, tables

    out, _ = report
    rows = [collect.tidy_row(m) for m in collect.read_study(STUDY.parent, STUDY.name)]
    for build in tables.BUILDERS:
        with pytest.raises(ValueError, match="eval/protocol groups"):
            build(rows)
    with pytest.raises(ValueError, match="eval/protocol groups"):
        figures.asr_vs_bits(rows, out / "unused")
    crossed = [
        dict(r, reference_cell="smollm2-135m-safe.fp.none") if r["eval"] == "decoding" and r["quant"] != "none" else r
        for r in rows
    ]
    with pytest.raises(ValueError, match="names smollm2-135m-safe.fp.none .eval=reduced, protocol=vanilla. as its FP"):
        groups.split(crossed)


def test_figures_and_self_contained_dashboard(report):
    out, stdout = report
    want = sorted(f"{n}{s}" for n in FIGURES for s in (".pdf", ".png"))
    assert sorted(p.name for p in (out / "figures").iterdir()) == want
    for name in FIGURES:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:4] == b"%PDF"
    page = (out / "dashboard.html").read_text()
    assert page.count("<img alt=") == page.count('" src="data:image/png;base64,') == len(FIGURES) == 5
    assert "Table 7 — eval=reduced, protocol=vanilla: ASR by bit-width" in page
    assert page.count("* paired test vs FP, p &lt; 0.05") == 6  # the legend under each table with marks
    assert 'src="http' not in page and "<script src" not in page and "<link" not in page  # nothing to fetch
    assert f"tables {', '.join(TABLES)}, figures {', '.join(FIGURES)}" in stdout


def test_missing_study_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "qresafe_exp.report", "study=nope", "logger=none", f"studies_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "no metrics.json under" in result.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _rows(cell: str) -> list[dict]:
    return [json.loads(line) for line in (STUDY / cell / "samples.jsonl").read_text().splitlines()]


def _disagreements(rows: list[dict]) -> int:
    """Rows where the two verdicts recorded for a suite differ, counted straight from samples.jsonl."""
    pairs = [
        (r.get("jailbroken"), r.get("jailbroken_keyword"))
        if "jailbroken" in r
        else (r.get("refused"), r.get("refused_strmatch"))
        for r in rows
        if "jailbroken" in r or "refused" in r
    ]
    return sum(a is not None and b is not None and a != b for a, b in pairs)


def _changed_vs_fp(rows: list[dict], fp: list[dict]) -> int:
    headline = lambda r: r.get("jailbroken", r.get("refused"))
    by_prompt = {(r["suite"], r["id"]): headline(r) for r in fp}
    return sum(
        headline(r) is not None and by_prompt.get((r["suite"], r["id"])) not in (None, headline(r)) for r in rows
    )


W3, FP = "smollm2-135m-safe.gptq-w3g64-alpaca.none", "smollm2-135m-safe.fp.none"


def test_sample_browser_marks_judge_disagreements_and_changes_against_fp():
    from qresafe_exp.report import collect, samples

    metrics = collect.read_study(STUDY.parent, STUDY.name)
    data = samples.browser_data(metrics, collect.cell_dirs(STUDY.parent, STUDY.name), max_chars=200)
    cells = {c["cell"]: c for c in data["cells"]}
    w3 = cells[W3]["samples"]
    assert len(w3) == len(_rows(W3)) == 68
    assert sum(s["disagree"] for s in w3) == _disagreements(_rows(W3)) == 13
    assert sum(s["vs_fp"] for s in w3) == _changed_vs_fp(_rows(W3), _rows(FP)) == 6
    first = w3[0]
    assert list(first["verdicts"]) == ["harm", "keyword"]  # the metric's judge first, then the keyword list
    assert data["prompts"][first["p"]]["prompt"] == _rows(W3)[0]["prompt"]
    xstest = next(s for s in w3 if data["prompts"][s["p"]]["suite"] == "xstest_safe")
    assert list(xstest["verdicts"]) == ["refusal", "xstest_strmatch"]
    # prompts stored once for the study; a long response cut, with its full length kept
    assert len(data["prompts"]) == 68
    long = max(w3, key=lambda s: s["length"])
    assert long["length"] > 200 and len(long["response"]) == 200
    assert cells["smollm2-135m-safe.fp.none.safety"]["note"].startswith("no samples.jsonl")


def test_png_bits_axis_is_categorical_and_scatter_labels_do_not_overlap():
    """Bits were drawn on a continuous 3..8 scale (W3 and W4 squeezed together, room for W5-W7 that do not
    exist); the scatter wrote every cell's name at its point, so names overwrote each other."""
    from qresafe_exp.report import collect, figures, groups

    rows = [collect.tidy_row(m) for m in collect.read_study(STUDY.parent, STUDY.name)]
    reduced = groups.split(rows)[("reduced", "vanilla")]
    ax = figures.draw_asr_vs_bits(reduced).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "4", "8", "16/FP"]  # W2 is broken: left out
    assert list(ax.get_xticks()) == [0, 1, 2, 3]
    fig = figures.draw_safety_utility(reduced)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) >= 6
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup-browser)")
def test_dashboard_works_in_headless_chromium(report, tmp_path):
    """The page in a real browser (driven over the DevTools protocol): no console error, nothing fetched,
    a table sorts on a header click and filters by an axis value, the bits axis is categorical, and the
    sample browser's filters show exactly the rows computed from samples.jsonl."""
    from PIL import Image

    from tests.browser import Chromium

    out, _ = report
    with Chromium(CHROMIUM, tmp_path / "profile", 1280, 2400) as page:
        page.open((out / "dashboard.html").as_uri())
        # the samples are inflated asynchronously (gzip in the page): wait until the browser says so
        assert (
            page.js(
                "new Promise(done => { const t = setInterval(() => { if (document.body.dataset.samples) "
                "{ clearInterval(t); done(document.body.dataset.samples); } }, 50); })"
            )
            == "ready"
        )
        assert page.errors == []
        assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests

        # the Cells table: sort by ASR on a click (ascending, then descending), filter by quant
        asr_column = (
            "Array.from(document.querySelectorAll('#cells-table th')).findIndex(th => th.textContent === 'ASR')"
        )
        read = (
            f"Array.from(document.querySelectorAll('#cells-table tbody tr')).filter(r => !r.hidden)"
            f".map(r => parseFloat(r.cells[{asr_column}].textContent))"
        )
        page.js(f"document.querySelectorAll('#cells-table th')[{asr_column}].click()")
        up = page.js(read)
        assert up == sorted(up) and len(up) == 12
        page.js(f"document.querySelectorAll('#cells-table th')[{asr_column}].click()")
        assert page.js(read) == sorted(up, reverse=True)
        page.js(
            "const s = document.querySelector('.filters[data-for=cells-table] select[data-col=\"2\"]');"
            "s.value = 'gptq'; s.dispatchEvent(new Event('change'))"
        )
        assert len(page.js(read)) == 4  # W2, W3, W4, W8

        # the interactive ASR-vs-bits figure: a category axis, in bit order, FP last
        figure = "document.querySelector('[data-figure=\"asr_vs_bits-reduced-vanilla\"]')"
        assert page.js(f"{figure}._fullLayout.xaxis.type") == "category"
        assert page.js(f"Array.from({figure}.querySelectorAll('.xtick text')).map(t => t.textContent)") == [
            "3",
            "4",
            "8",
            "16/FP",
        ]

        # the sample browser on GPTQ W3: all rows, then the disagreement filter, then the vs-FP filter
        page.js(
            f"const c = document.getElementById('s-cell'); c.value = Array.from(c.options)"
            f".findIndex(o => o.text.startsWith('{W3} ')); c.dispatchEvent(new Event('change'))"
        )
        shown = "document.querySelectorAll('#s-table tbody tr').length"
        assert page.js(shown) == 68
        page.js("document.getElementById('s-disagree').click()")
        assert page.js(shown) == _disagreements(_rows(W3)) == 13
        assert page.js(
            "Array.from(document.querySelectorAll('#s-table tbody tr')).every(r => "
            "new Set(Array.from(r.cells[3].querySelectorAll('.v'), b => b.textContent.split(': ')[1]))"
            ".size === 2)"
        )
        page.js("document.getElementById('s-disagree').click(); document.getElementById('s-vsfp').click()")
        assert page.js(shown) == _changed_vs_fp(_rows(W3), _rows(FP)) == 6
        page.js(
            "document.getElementById('s-vsfp').click(); const q = document.getElementById('s-search');"
            "q.value = 'bomb'; q.dispatchEvent(new Event('input'))"
        )
        assert page.js(shown) == sum("bomb" in (r["prompt"] + r.get("response", "")).lower() for r in _rows(W3)) > 0
        assert page.errors == []
        page.js("window.scrollTo(0, 0)")
        page.screenshot(tmp_path / "shot.png")

    image = Image.open(tmp_path / "shot.png").convert("RGB")
    assert image.size == (1280, 2400)
    # a rendered page, not a blank one: many colours (text, table borders, the plots)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    dark = sum(count for count, (r, g, b) in colours if r + g + b < 200)
    assert dark > 1000  # text and axes were drawn


def test_report_logs_its_table_and_figures_to_a_wandb_run(tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(STUDY, studies / "report_study")
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "qresafe_exp.report",
            "study=report_study",
            "logger=wandb",
            "logger.mode=offline",
            f"studies_dir={studies}",
            f"out_dir={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = list(runs[0].rglob("*.png"))
    assert len(media) == len(FIGURES)  # every figure, as a W&B image
    assert list(runs[0].rglob("summary_*.table.json"))


def test_claims_table_gives_each_seed_a_row_and_their_mean_and_range():
    """A patch run with several seeds (cells `.seedN`): one row per seed, then the seeds' mean and range."""
    from qresafe_exp.report import collect, groups, tables

    rows = collect.without_variants([collect.tidy_row(m) for m in collect.read_study(STUDY.parent, STUDY.name)])
    reduced = groups.split(rows)[("reduced", "vanilla")]
    assert "seed" not in tables.claims(reduced).columns  # one seed: the table as before
    patched = next(r for r in reduced if r["patch"] == "qresafe")
    other = {**patched, "seed": 1, "cell": patched["cell"] + ".seed1", "advbench.asr": patched["advbench.asr"] + 0.1}
    table = tables.claims([*reduced, other])
    assert table.columns[3:5] == ["patch", "seed"]
    runs = [row for row in table.rows if row[3] == patched["patch_tag"] and row[2] == patched["calib"]]
    assert [row[4] for row in runs] == [patched["seed"], 1, "mean of 2"]
    low, high = patched["advbench.asr"], patched["advbench.asr"] + 0.1
    assert runs[2][5] == f"{(low + high) / 2:.2f} [{low:.2f},{high:.2f}]"
    assert table.notes[-1].startswith("mean of n")


def test_claim_panels_draw_a_patchs_seeds_as_one_bar_and_keep_its_unmerged_form_apart(tmp_path):
    """Seeds of one patch share a bar (their mean, a dot each); the unmerged form stays a bar of its own."""
    from qresafe_exp.report import collect, figures, groups

    rows = [collect.tidy_row(m) for m in collect.read_study(STUDY.parent, STUDY.name)]
    reduced = groups.split(rows)[("reduced", "vanilla")]
    patched = next(r for r in reduced if r["patch"] == "qresafe" and not r.get("variant"))
    other = {**patched, "seed": 1, "cell": patched["cell"] + ".seed1", "advbench.asr": patched["advbench.asr"] + 0.1}
    unmerged = {**patched, "variant": "unmerged", "patch_tag": patched["patch_tag"] + " (unmerged)"}
    bars = figures.claim_bars([*reduced, other, unmerged])
    tags = (patched["patch_tag"], unmerged["patch_tag"])
    mine = [b for b in bars if b["runs"][0]["patch_tag"] in tags and b["runs"][0]["calib"] == patched["calib"]]
    assert [b["label"] for b in mine] == [f"{patched['patch_tag']} (2 seeds)", f"{patched['patch_tag']} (unmerged)"]
    assert [r["seed"] for r in mine[0]["runs"]] == [patched["seed"], 1]
    assert bars[0]["label"] == "FP" and all(len(b["runs"]) == 1 for b in bars if b not in mine[:1])
    assert figures.claim_panels([*reduced, other, unmerged], tmp_path).exists()


def test_safety_utility_plots_the_harmful_suite_asked_for(tmp_path):
    """Where the FP model refuses AdvBench, its ASR axis is flat at 0: report.safety_suite puts a suite with room to
    move there (e.g. harmfulqa); a suite that has no ASR is refused with the allowed ones named."""
    from qresafe_exp.report import figures, interactive
    from qresafe_exp.report.__main__ import check_safety_suite

    cells = [("none", 0.0, 0.53, 7.55), ("p1", 0.0, 0.36, 9.53), ("p2", 0.0, 0.44, 8.39)]
    rows = [
        {
            "cell": f"m.fp.{patch}.claims",
            "quant": "none",
            "patch": patch,
            "eval": "claims",
            "protocol": "vanilla",
            "advbench.asr": advbench,
            "harmfulqa.asr": harmfulqa,
            "alpaca_eval_ppl.reference_perplexity": ppl,
        }
        for patch, advbench, harmfulqa, ppl in cells
    ]
    ax = figures.draw_safety_utility(rows, "harmfulqa").axes[0]
    assert ax.get_ylabel() == "ASR (HarmfulQA)"
    plotted = sorted(float(y) for c in ax.collections for _, y in c.get_offsets())
    assert plotted == sorted(c[2] for c in cells)
    assert figures.draw_safety_utility(rows).axes[0].get_ylabel() == "ASR (AdvBench)"  # the default
    plotly = interactive.safety_utility(rows, "harmfulqa")
    assert sorted(y for trace in plotly.data for y in trace.y) == sorted(c[2] for c in cells)
    assert "HarmfulQA" in plotly.layout.yaxis.title.text
    # the key names what sets each point apart: the tag parts every patched cell shares said once (wherever in the
    # tag they sit), a seed, the model where the figure has two; in a panel under the axes, wrapped
    tagged = [
        {**r, "model": "m", "patch_tag": None if r["patch"] == "none" else f"sp-x0.3-{r['patch']}-norescale"}
        for r in rows
    ]
    tagged.append({**tagged[1], "cell": "m2.fp.sp.claims", "model": "m2", "seed": 1, "harmfulqa.asr": 0.9})
    many = [  # 24 spots, the last holding 6 cells: a line that must wrap
        {
            **tagged[1],
            "cell": f"m.fp.sp{i}.claims",
            "patch_tag": f"sp-x0.3-{'long' * 9}{i}-norescale",
            "harmfulqa.asr": i / 30,
        }
        | {"alpaca_eval_ppl.reference_perplexity": 12 + min(i, 23)}
        for i in range(30)
    ]
    fig = figures.draw_safety_utility(tagged + many, "harmfulqa")
    key = fig.axes[1].texts[0].get_text()
    assert "m FP\n" in key and "m p1\n" in key and "m2 p1 seed 1" in key and "24  m long" in key
    assert "also holds: sp-x0.3-norescale" in key
    assert max(len(line) for line in key.splitlines()) <= figures.KEY_WIDTH
    assert fig.get_figwidth() == 9 and fig.axes[1].get_position().y1 < fig.axes[0].get_position().y0  # under the axes
    check_safety_suite("harmfulqa")
    with pytest.raises(ValueError, match="safety_suite=xstest: .* Allowed: advbench"):
        check_safety_suite("xstest")
