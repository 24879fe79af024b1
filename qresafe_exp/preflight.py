"""The preflight: what can be checked about a cell before any model loads, each failure in one line that
names the config key (or file) and the fix. ``preflight(overrides)`` composes the cell and validates it
(pipeline.validate, which calls ``check_inputs`` first); the CLI and the sweep callback use the same
one-line form for the errors Hydra raises while composing."""

from __future__ import annotations

import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.cli import CONF_DIR
from qresafe_exp.data.hub import is_hub_uri, parse_hub_uri
from qresafe_exp.hub_push import check_push


class ConfigError(ValueError):
    """A config that cannot run; raised before any model is loaded, in one line."""


# whole numbers a cell needs at least this large: (key, minimum, what the key holds)
COUNTS = [
    ("eval.limit", 1, "prompts per suite (null = all of them)"),
    ("eval.max_new_tokens", 1, "tokens generated per answer"),
    ("eval.batch_size", 1, "prompts per batch"),
    ("eval.sample_seed", 0, "the seed of the prompt sample"),
    ("engine.batch_size", 1, "prompts per generation batch"),
    ("calib.num_samples", 1, "calibration records"),
    ("calib.epochs", 1, "passes over the calibration set"),
    ("calib.max_seq_length", 1, "tokens per calibration record"),
    ("calib.activation.num_samples", 1, "activation-calibration records"),
    ("calib.activation.max_seq_length", 1, "tokens per activation-calibration record"),
]
MAX_SEED = 2**32 - 1  # numpy's seed range; torch and random accept it too


def check_count(key: str, value, minimum: int, what: str) -> None:
    """``key=value`` must be a whole number >= minimum (None passes: the keys that allow it say so)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{key}={value}: the number of {what}; give a whole number >= {minimum}")


def check_positive(key: str, value) -> None:
    """``key=value`` must be a finite number > 0 (a learning rate, a temperature, a scale)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={value}: must be a finite number > 0")


def check_inputs(cfg: DictConfig) -> None:
    """Missing values, counts, the seed, the model path: raises ValueError naming the key and the fix."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"{', '.join(missing)} must be set (??? in its config file): give "
            + " ".join(f"{key}=<value>" for key in missing)
        )
    for key, minimum, what in COUNTS:
        check_count(key, OmegaConf.select(cfg, key), minimum, what)
    for suite, limit in (cfg.eval.get("limits") or {}).items():
        check_count(f"eval.limits.{suite}", limit, 1, "prompts of that suite (null = all of them)")
    for key in ("seed", "quant.seed"):
        seed = OmegaConf.select(cfg, key)
        if key == "quant.seed" and seed is None:  # unset: the cell's seed
            continue
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"{key}={seed}: give a whole number from 0 to {MAX_SEED}")
    check_model_path(cfg.model)
    for key in ("prompts", "calib.dataset"):  # a hub URI's form; whether it loads is checked by validate
        value = OmegaConf.select(cfg, key)
        if is_hub_uri(value):
            parse_hub_uri(value, key)
    check_push(cfg)


def _looks_like_a_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or "\\" in text


def check_model_path(model: DictConfig, key: str = "model.path") -> None:
    """A hub-source model's path is a checkpoint directory, or a hub id that can be reached (offline:
    one already in the local hub cache)."""
    if model.source != "hub":
        return
    path = str(model.path)
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise ValueError(
                f"{key}={path}: not a transformers checkpoint directory (no config.json in it); give "
                "a model directory or a hub id (org/name)"
            )
        return
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(path)
    except HFValidationError:
        ok = False
    else:
        ok = not _looks_like_a_path(path)
    if not ok:
        raise ValueError(
            f"{key}={path}: no such directory, and not a hub id (org/name); give an existing "
            "checkpoint directory or a hub id"
        )
    if constants.HF_HUB_OFFLINE and not isinstance(
        try_to_load_from_cache(path, "config.json", revision=model.get("revision")), str
    ):
        raise ValueError(
            f"{key}={path}: not in the local hub cache, and HF_HUB_OFFLINE=1 forbids downloading it; "
            f"download it first (huggingface-cli download {path}) or give a local directory"
        )


# ---------------------------------------------------------------- composing, in one line
def compose_error_line(err: BaseException) -> str:
    """One line for an error Hydra raised while composing: the override or key, what is wrong, the fix."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        return f"{group}={name}: no such option (conf/{group}/{name}.yaml). Allowed: {', '.join(err.options)}"
    cause = err.__cause__ if err.__cause__ is not None else err
    text = str(cause).strip()
    first = text.splitlines()[0] if text else type(cause).__name__
    if isinstance(cause, MissingMandatoryValue) or "Missing mandatory value" in first:
        key = re.search(r"Missing mandatory value: ([\w.]+)", text)
        name = key.group(1) if key else "a key"
        return f"{name} must be set (??? in its config file): give {name}=<value>"
    override = re.search(r"override (\S+)", str(err))
    where = f"{override.group(1)}: " if override and override.group(1) not in first else ""
    return f"{where}{first}"


def compose_cell(overrides: list[str], config_dir: Path = CONF_DIR) -> DictConfig:
    """The cell config of ``overrides`` (no hydra node), or ConfigError in one line."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from qresafe_exp.cli import UnknownKeyError, check_override_keys
    from qresafe_exp.schema import register_configs

    register_configs()
    try:
        check_override_keys(list(overrides), config_dir)
    except UnknownKeyError as err:
        raise ConfigError(str(err)) from None
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(compose_error_line(err)) from None


def preflight(overrides: list[str], config_dir: Path = CONF_DIR) -> DictConfig:
    """Compose and validate the cell of ``overrides`` as a run would, loading no model: the cell's config,
    or ConfigError, in one line naming the key or file and the fix."""
    from qresafe_exp.pipeline import validate

    cfg = compose_cell(overrides, config_dir)
    validate(cfg)
    return cfg


def check_command_line(argv: list[str], config_dir: Path = CONF_DIR) -> None:
    """Before Hydra starts: each override parses, every value given to a config group (swept ones too)
    is an option of it, and the config of the first value of every override composes. ConfigError in one
    line; a sweep's other cells are composed and validated by the sweep callback."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from qresafe_exp.cli import INFO_FLAGS

    if any(a in INFO_FLAGS or a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        return
    args = [a for a in argv if "=" in a and not a.startswith("-")]
    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        try:
            parsed += parser.parse_overrides([arg])
        except Exception as err:  # noqa: BLE001 - Hydra's grammar errors: first line, and where to read more
            first = str(err).strip().splitlines()[0]
            raise ConfigError(
                f"{arg}: cannot be parsed ({first}); see https://hydra.cc/docs/advanced/override_grammar/basic"
            ) from None
    groups = {p.name for p in config_dir.iterdir() if p.is_dir()}
    first_values, drawn = [], False
    for override in parsed:
        name = override.key_or_group
        if name.startswith("hydra"):
            continue
        if override.is_sweep_override() and not override.is_discrete_sweep():
            drawn = True  # an interval (another sweeper's): no first value to compose with
            continue
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        if name in groups and not (override.is_add() or override.is_delete()):
            options = sorted(p.stem for p in (config_dir / name).glob("*.yaml"))
            for value in values:
                if value not in options and value != "null":
                    raise ConfigError(
                        f"{name}={value}: no such option (conf/{name}/{value}.yaml). Allowed: {', '.join(options)}"
                    )
        prefix = "++" if override.is_force_add() else "+" if override.is_add() else "~" if override.is_delete() else ""
        first_values.append(override.input_line if not override.is_sweep_override() else f"{prefix}{name}={values[0]}")
    if not drawn:
        compose_cell(first_values, config_dir)
