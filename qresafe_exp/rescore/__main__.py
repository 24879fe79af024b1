"""`python -m qresafe_exp.rescore study=NAME [judge=...] [eval.refusal_judge=...]`: re-judge every cell
of a study from its stored responses, without loading the evaluated models (qresafe_exp/rescore).

    python -m qresafe_exp.rescore study=testbed_quant                      # the default judges (harm, refusal)
    python -m qresafe_exp.rescore study=testbed_quant judge=keyword eval.refusal_judge=xstest_strmatch
    python -m qresafe_exp.rescore study=testbed_quant judge=llamacpp       # a judge served by an endpoint

Prints a before/after table and writes it to outputs/studies/NAME/rescore.md.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from qresafe_exp.conf import CONFIG_PATH
from qresafe_exp.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="rescore")
def main(cfg: DictConfig) -> None:
    from qresafe_exp.rescore import rescore_study

    result = rescore_study(cfg)
    print(
        f"\nre-scored study {cfg.study}: {len(result['cells'])} cells\n\n{result['table']}\n"
        + (f"\nkept as they were: {'; '.join(result['kept'])}\n" if result["kept"] else "")
        + f"\n-> {result['out']}\n"
    )


if __name__ == "__main__":
    main()
