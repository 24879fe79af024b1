"""`python -m qresafe_exp [-m] key=value ...`: run one cell, or a sweep of cells with -m."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from qresafe_exp.conf import CONFIG_PATH
from qresafe_exp.schema import RUN_STAMP_ENV, new_run_stamp, register_configs

register_configs()


def _fail(message: str, code: int) -> None:
    print(f"Error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code) from None


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")
def hydra_app(cfg: DictConfig) -> float | None:
    from qresafe_exp.cache import CacheError
    from qresafe_exp.cli import describe_write_error
    from qresafe_exp.pipeline import ConfigError, run_cell

    try:
        metrics = run_cell(cfg)
    except ConfigError as err:
        _fail(str(err), 2)
    except CacheError as err:  # e.g. a corrupt request cache: the message names the file and the fix
        _fail(str(err), 1)
    except Exception as err:
        # a write the file system refused (disk full, read-only, no permission): one clear paragraph
        # naming the path, the stage and the fix instead of a traceback; anything else propagates
        message = describe_write_error(err, cfg.paths.output_dir, cfg.paths.cache_dir)
        if message is None:
            raise
        _fail(message, 1)
    asr = metrics.get("scores", {}).get("advbench", {}).get("asr", {})
    return asr.get("rate")  # the value an optimizing sweeper would read


def main() -> None:
    from qresafe_exp.cli import NotWritableError, UnknownKeyError, check_override_keys, check_writable_dirs
    from qresafe_exp.preflight import ConfigError, check_command_line

    try:
        check_override_keys(sys.argv[1:])
        check_command_line(sys.argv[1:])  # Hydra's own compose errors, in one line
    except (UnknownKeyError, ConfigError) as err:
        _fail(str(err), 2)
    try:
        check_writable_dirs(sys.argv[1:])  # before Hydra writes its run dir there
    except NotWritableError as err:
        _fail(str(err), 1)
    os.environ[RUN_STAMP_ENV] = new_run_stamp()  # this run's name for its Hydra records, in every worker too
    hydra_app()


if __name__ == "__main__":
    main()
