"""Command-line checks that Hydra does not make: an override of a key that does not exist is
reported with the node's allowed keys and a did-you-mean, before anything runs."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class UnknownKeyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _first_value(override) -> str:
    if override.is_sweep_override():
        return next(iter(override.sweep_string_iterator()))
    return override.get_value_element_as_str()


def check_override_keys(argv: list[str], config_dir: Path = CONF_DIR) -> None:
    """Raise UnknownKeyError for ``a.b=c`` where ``a`` has no key ``b`` (group choices honoured)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except Exception:  # a syntax error: Hydra's own message is the right one
        return
    groups = {p.name for p in config_dir.iterdir() if p.is_dir()}
    choices, keys = [], []
    for override in parsed:
        name = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or name.startswith("hydra"):
            continue
        if name in groups:
            choices.append(f"{name}={_first_value(override)}")
        else:
            keys.append(name)
    if not keys:
        return
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=choices)
    except Exception:  # an unknown group option etc.: Hydra reports it with the allowed options
        return
    for key in keys:
        node: object = cfg
        walked = []
        for part in key.split("."):
            # `in` is False for a key whose value is MISSING ('???'); keys() lists it
            if isinstance(node, DictConfig) and part not in node.keys() and not OmegaConf.is_struct(node):
                break  # an open mapping (e.g. model.architecture) takes new keys
            if not isinstance(node, DictConfig) or part not in node.keys():
                allowed = sorted(node.keys()) if isinstance(node, DictConfig) else []
                close = difflib.get_close_matches(part, allowed, n=1)
                where = ".".join(walked) or "the root config"
                hint = f" Did you mean '{'.'.join([*walked, close[0]])}'?" if close else ""
                raise UnknownKeyError(
                    f"unknown config key '{key}': {where} has no key '{part}'.{hint} "
                    f"Allowed keys of {where}: {', '.join(map(str, allowed))}"
                )
            walked.append(part)
            child = node._get_node(part)  # no resolution: interpolations may need Hydra's runtime
            node = child if isinstance(child, DictConfig) else None
