"""`python -m qresafe_exp [-m] key=value ...`: run one cell, or a sweep of cells with -m."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from qresafe_exp.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_app(cfg: DictConfig) -> float | None:
    from qresafe_exp.pipeline import ConfigError, run_cell

    try:
        metrics = run_cell(cfg)
    except ConfigError as err:
        print(f"Error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    asr = metrics.get("scores", {}).get("advbench", {}).get("asr", {})
    return asr.get("rate")  # the value an optimizing sweeper would read


def main() -> None:
    from qresafe_exp.cli import UnknownKeyError, check_override_keys

    try:
        check_override_keys(sys.argv[1:])
    except UnknownKeyError as err:
        print(f"Error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_app()


if __name__ == "__main__":
    main()
