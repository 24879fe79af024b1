"""`python -m qresafe_exp [-m] key=value ...`: run one cell, or a sweep of cells with -m."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from qresafe_exp.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from qresafe_exp.pipeline import run_cell

    metrics = run_cell(cfg)
    asr = metrics["scores"].get("advbench", {}).get("asr", {})
    return asr.get("rate")  # the value an optimizing sweeper would read


if __name__ == "__main__":
    main()
