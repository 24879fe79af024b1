"""Command-line checks that Hydra does not make, before anything runs: an override of a key that does
not exist is reported with the node's allowed keys and a did-you-mean; an output or cache dir that
cannot take a file (read-only, no permission, full) is reported with the path and the fix. And the
one-paragraph message for a write the file system refuses mid-run (disk full, read-only)."""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from qresafe_exp.conf import CONF_DIR


class UnknownKeyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _first_value(override) -> str:
    if override.is_sweep_override():
        return next(iter(override.sweep_string_iterator()))
    return override.get_value_element_as_str()


def _parse_overrides(argv: list[str]) -> list:
    """Hydra's parse of the command line's overrides (raises on a syntax error: Hydra reports those)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])


def check_override_keys(argv: list[str], config_dir: Path = CONF_DIR) -> None:
    """Raise UnknownKeyError for ``a.b=c`` where ``a`` has no key ``b`` (group choices honoured)."""
    from hydra import compose, initialize_config_dir

    try:
        parsed = _parse_overrides(argv)
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


# ---------------------------------------------------------------- writable output (fault drill 4)
INFO_FLAGS = (
    "--help",
    "-h",
    "--hydra-help",
    "--version",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--resolve",
)
WRITE_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}
OUTPUT_SETTING = "paths.output_dir (or QRESAFE_OUTPUT_DIR)"


class NotWritableError(OSError):
    def __str__(self) -> str:
        return str(self.args[0])


def _reason(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{err.strerror or err}{f', {name}' if name else ''}"


def probe_writable(path: Path, what: str, setting: str) -> None:
    """Create ``path`` if needed, write, fsync and remove a probe file in it; NotWritableError if that fails."""
    probe = path / f".qresafe-write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"probe\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        fix = "free space on that file system or point " if err.errno in (errno.ENOSPC, errno.EDQUOT) else "point "
        raise NotWritableError(
            f"{what} {path} is not writable ({_reason(err)}): {fix}{setting} at a writable directory. Nothing was run."
        ) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def check_writable_dirs(argv: list[str], config_dir: Path = CONF_DIR) -> None:
    """Before Hydra writes anything: the output and cache dirs this command would use take a file.

    The config is composed with the first value of every override (a sweep's cells share these dirs);
    if it cannot be composed, Hydra reports why when it runs, so nothing is checked here."""
    if any(a in INFO_FLAGS or a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        return
    from hydra import compose, initialize_config_dir

    try:
        parsed = _parse_overrides(argv)
        overrides = [
            override.input_line
            if not override.is_sweep_override()
            else f"{'++' if override.is_force_add() else '+' if override.is_add() else ''}"
            f"{override.key_or_group}={_first_value(override)}"
            for override in parsed
            if not override.key_or_group.startswith("hydra")
        ]
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        output_dir, cache_dir = Path(cfg.paths.output_dir), Path(cfg.paths.cache_dir)
    except Exception:
        return
    probe_writable(output_dir, "output dir", OUTPUT_SETTING)
    if cache_dir != output_dir:
        probe_writable(cache_dir, "cache dir", "paths.cache_dir")


def _under(path: Path, root: Path) -> Path | None:
    try:
        return path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return None


def describe_write_error(err: BaseException, output_dir: str, cache_dir: str) -> str | None:
    """A one-paragraph message for a write that the file system refused (full, read-only, no permission),
    naming the path, the stage and the fix; None for any other error."""
    from qresafe_exp.cache import DiskFullError, is_disk_full

    if isinstance(err, DiskFullError):
        return str(err)
    code = err.errno if isinstance(err, OSError) else None
    disk_full = is_disk_full(err)
    if not disk_full and code not in WRITE_ERRNOS:
        return None
    filename = getattr(err, "filename", None)
    path = Path(filename) if filename else None
    where = ""
    if path is not None:
        in_cache, in_output = _under(path, Path(cache_dir)), _under(path, Path(output_dir))
        if in_cache is not None and len(in_cache.parts) > 1:
            where = f" (the {in_cache.parts[0]} stage's artifact)"
        elif in_cache is not None and in_cache.name.startswith("requests.sqlite"):
            where = " (the request cache)"
        elif in_output is not None and in_output.parts[:1] == ("studies",):
            where = " (the cell's results)"
    target = f" {path}{where}" if path is not None else " a file (the system did not say which)"
    if disk_full:
        name = "EDQUOT" if code == errno.EDQUOT else "ENOSPC"
        what = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        return (
            f"{what} ({name}) writing{target}. Artifacts and results already published are intact (each is "
            f"written to a temp file and renamed). Free space on that file system, or point {OUTPUT_SETTING} "
            f"and paths.cache_dir at a larger one, and rerun: finished stages are served from the cache."
        )
    if code == errno.EROFS:
        return (
            f"{path or 'the output'} is on a read-only file system (EROFS){where}: point {OUTPUT_SETTING} and "
            f"paths.cache_dir at a writable directory."
        )
    return (
        f"permission denied ({errno.errorcode[code]}) on{target}: make it writable for this user, or point "
        f"{OUTPUT_SETTING} and paths.cache_dir at a writable directory."
    )
