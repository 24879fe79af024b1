"""Each run of a study keeps its own Hydra records: a rerun never overwrites the earlier run's
multirun.yaml or a cell's .hydra/ files, and the cells' metrics.json stay where the report reads them.

The cells are unsupported ones (quant=rtn bits=9,10 with on_unsupported=record): Hydra writes its
records and the pipeline writes metrics.json without loading any model, so two real runs take seconds."""

import json
import os
import time

from omegaconf import OmegaConf

from qresafe_exp.report.collect import read_study
from tests.conftest import run_cli

SWEEP = [
    "-m",
    "debug=smoke",
    "model=tiny-random-llama",
    "quant=rtn",
    "bits=9,10",
    "on_unsupported=record",
    "study=records",
]
CELLS = ["tiny-random-llama.rtn-w9g64.none", "tiny-random-llama.rtn-w10g64.none"]


def test_a_rerun_keeps_the_earlier_runs_hydra_records_apart(tmp_path):
    out = tmp_path / "outputs"
    study = out / "studies" / "records"
    for _ in range(2):  # the same study twice
        proc = run_cli(*SWEEP, f"paths.output_dir={out}")
        assert proc.returncode == 0, proc.stderr[-2000:]

    runs = sorted((study / ".hydra").iterdir())
    assert len(runs) == 2  # one folder per run, named by its start time
    for run in runs:
        saved = OmegaConf.load(run / "multirun.yaml")
        assert "bits=9,10" in saved.hydra.overrides.task
    for cell, bits in zip(CELLS, ("bits=9", "bits=10")):
        records = sorted(p.name for p in (study / cell / ".hydra").iterdir())
        assert records == [r.name for r in runs]  # each run's config of the cell, under that run's name
        for name in records:
            assert (study / cell / ".hydra" / name / "config.yaml").is_file()
            assert bits in OmegaConf.load(study / cell / ".hydra" / name / "overrides.yaml")
        assert not (study / cell / ".hydra" / "config.yaml").exists()
        assert json.loads((study / cell / "metrics.json").read_text())["status"] == "unsupported"
    assert sorted(m["cell"] for m in read_study(out / "studies", "records")) == sorted(CELLS)


def test_a_legacy_multirun_yaml_is_kept_beside_the_new_runs_records(tmp_path):
    out = tmp_path / "outputs"
    study = out / "studies" / "records"
    study.mkdir(parents=True)
    (study / "multirun.yaml").write_text("legacy: true\n")  # written by a run before this layout
    old = time.time() - 3600
    os.utime(study / "multirun.yaml", (old, old))
    proc = run_cli(*SWEEP, f"paths.output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = [p for p in (study / ".hydra").glob("*/multirun.yaml") if p.read_text() == "legacy: true\n"]
    assert len(kept) == 1
    assert len(list((study / ".hydra").glob("*/multirun.yaml"))) == 2


def test_rescore_reads_the_config_of_the_run_that_wrote_the_metrics(tmp_path):
    from qresafe_exp.rescore import Cell, degeneration_cfg

    cell = tmp_path / "c"
    now = time.time()
    # two runs, then metrics.json, then a third run that failed before writing metrics.json
    for stamp, threshold, age in (
        ("2024-01-01_00-00-00_000000", 0.1, 300),
        ("2024-01-02_00-00-00_000000", 0.2, 200),
        ("2024-01-03_00-00-00_000000", 0.3, 0),
    ):
        (cell / ".hydra" / stamp).mkdir(parents=True)
        OmegaConf.save(
            {"eval": {"degeneration": {"broken_if_rate_above": threshold}}}, cell / ".hydra" / stamp / "config.yaml"
        )
        os.utime(cell / ".hydra" / stamp / "config.yaml", (now - age, now - age))
    (cell / "metrics.json").write_text("{}")
    os.utime(cell / "metrics.json", (now - 100, now - 100))
    assert degeneration_cfg(Cell(cell, {}, [])).broken_if_rate_above == 0.2
