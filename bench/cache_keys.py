"""Check: the current code finds every artifact an existing results tree was built from (issue 18).

    python bench/cache_keys.py --outputs /path/to/outputs          # read-only; prints one line per cell

For every cell under ``<outputs>/studies`` that has its Hydra overrides (``.hydra/[<stamp>/]overrides.yaml``,
the latest run), the cell's config is composed again from those overrides with the current conf/, and
the model, reference evaluation, quantize, patch and evaluation plans of the current stages are asked
for their artifacts in ``<outputs>/cache``. An artifact is served only if it is there (nothing is built,
fingerprinted, marked or written); the keys must equal the ones the cell's metrics.json recorded, and
the scores read back from the cached evaluation must equal the cell's. Exit code 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from qresafe_exp.cache import Artifact, ArtifactCache, RequestCache


class Missing(Exception):
    pass


class ReadOnlyCache(ArtifactCache):
    """Serves published artifacts as they are (no manifest check, which may move one aside); never builds."""

    def get_or_build(self, stage, spec, build, *, upstream=(), version=1):
        key = self.key(stage, spec, upstream, version)
        if not self.exists(stage, key):
            raise Missing(f"{stage}/{key} is not in the cache")
        return Artifact(stage, key, self.path(stage, key), built=False)


def compose(overrides: list[str], outputs: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from qresafe_exp.conf import CONF_DIR
    from qresafe_exp.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        paths = [f"paths.output_dir={outputs}", f"paths.cache_dir={outputs / 'cache'}"]
        cfg = hydra_compose("config", overrides=[*overrides, *paths], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_cell(cfg, recorded: dict, ctx) -> list[str]:
    """The differences between what the current stages ask for and what the cell recorded."""
    from qresafe_exp.align import training_prompts
    from qresafe_exp.evals.runner import eval_plan
    from qresafe_exp.models import materialize
    from qresafe_exp.pipeline import patch, run_plan
    from qresafe_exp.quant import QUANTIZERS

    # pipeline.quantize and pipeline.evaluate less what writes (a fingerprint, un-publishing an evaluation)
    keys = recorded["artifacts"]
    fp = materialize(cfg.model, ctx.artifacts, cfg.paths)
    exclude = frozenset(training_prompts(fp.path))
    reference = run_plan(eval_plan(fp, cfg, ctx, "reference", scorer=fp, exclude=exclude), ctx)
    quant = run_plan(QUANTIZERS.get(cfg.quant.name).plan(fp, cfg, ctx), ctx)
    patched = patch(fp, quant.model, cfg, ctx)
    if patched.model.key == fp.key:
        result = reference
    else:
        result = run_plan(eval_plan(patched.model, cfg, ctx, cfg.cell, scorer=fp, exclude=exclude), ctx)
    found = {
        "model": fp.key,
        "reference_eval": reference.key,
        "quantize": quant.info.get("artifact"),
        "patch": patched.info.get("artifact"),
        "eval": result.key,
    }
    problems = [f"{k}: recorded {keys.get(k)}, now {v}" for k, v in found.items() if keys.get(k) != v]
    if result.scores != recorded["scores"]:
        problems.append("the cached evaluation's scores differ from metrics.json")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=Path, required=True, help="a results tree: studies/ and cache/")
    args = parser.parse_args()
    outputs = args.outputs.resolve()
    failed = checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        from qresafe_exp.stages import StageContext

        requests = RequestCache(Path(tmp) / "requests.sqlite")  # never written: nothing is generated
        ctx = StageContext(ReadOnlyCache(outputs / "cache"), requests, torch.device("cpu"))
        for metrics_path in sorted((outputs / "studies").glob("*/*/metrics.json")):
            runs = sorted(metrics_path.parent.glob(".hydra/**/overrides.yaml"), key=lambda p: p.parent.name)
            recorded = json.loads(metrics_path.read_text())
            if not runs or recorded.get("status") == "unsupported":
                continue  # a reference cell (written by another cell) or a cell that never ran
            cell = f"{metrics_path.parent.parent.name}/{metrics_path.parent.name}"
            try:
                problems = check_cell(compose(list(OmegaConf.load(runs[-1])), outputs), recorded, ctx)
            except Missing as err:
                problems = [str(err)]
            checked += 1
            failed += bool(problems)
            print(f"{'OK  ' if not problems else 'DIFF'} {cell}" + "".join(f"\n     {p}" for p in problems), flush=True)
        requests.close()
    print(f"{checked - failed} of {checked} cells: same artifact keys and scores")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
