"""`python -m qresafe_exp.align [model=...] [model.align.epochs=...]`: build the aligned FP model.

The same artifact that `python -m qresafe_exp model=smollm2-135m-safe` builds on first use; this
command builds it on its own and prints what the training did.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from qresafe_exp.conf import CONFIG_PATH
from qresafe_exp.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="align")
def main(cfg: DictConfig) -> None:
    from qresafe_exp.cache import ArtifactCache
    from qresafe_exp.models import materialize

    if cfg.model.source != "aligned":
        print(
            f"Error: model={cfg.model.name} is not an aligned model (source={cfg.model.source}). "
            "Use an aligned model config, e.g. model=smollm2-135m-safe",
            file=sys.stderr,
        )
        raise SystemExit(2)
    ref = materialize(cfg.model, ArtifactCache(cfg.paths.cache_dir), cfg.paths)
    info = json.loads((Path(ref.path) / "align_info.json").read_text())
    info.pop("config", None)
    print(f"\naligned model {cfg.model.name}: {ref.path}\n{json.dumps(info, indent=2)}\n", flush=True)


if __name__ == "__main__":
    main()
