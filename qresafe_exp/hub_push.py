"""Push a cell's quantized or patched checkpoint to the Hugging Face Hub, with a generated model card.

Off by default (``hub.push=false``). The repository id comes from the config (``hub.repo_id``; give
``'hub.repo_id=owner/qresafe-${cell}'`` so a sweep pushes one repository per cell), the token only from
the ``HF_TOKEN`` environment variable: it is never a config key, so it never reaches the cell's config
files, metrics.json or the tracker. The push runs after metrics.json is written: a failed upload loses no
result; it is logged and recorded under ``hub`` in metrics.json.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig

from qresafe_exp.cache import MANIFEST_FILE, SPEC_FILE, SUCCESS_MARKER
from qresafe_exp.metrics import headline as block_headline

log = logging.getLogger(__name__)
TOKEN_ENV = "HF_TOKEN"
CACHE_FILES = {SPEC_FILE, MANIFEST_FILE, SUCCESS_MARKER}  # the artifact cache's bookkeeping, not the model
CONTENT_WARNING = (
    "**Content warning.** This model was produced by a safety study: it was quantized and/or "
    "patched and evaluated on harmful requests. Its safety may be degraded (see the attack "
    "success rates below). Do not deploy it; use it to study safety, not to serve users."
)


def repo_id_of(cfg: DictConfig) -> str:
    return str(cfg.hub.repo_id)  # resolved: a ${cell} in it is this cell's name


def check_push(cfg: DictConfig) -> None:
    """Preflight: with hub.push=true, a valid repo id and a token in the environment (no network)."""
    hub = cfg.get("hub")
    if not hub or not hub.push:
        return
    if not hub.repo_id:
        raise ValueError(
            "hub.push=true needs hub.repo_id=<owner>/<name> ('hub.repo_id=<owner>/qresafe-${cell}' "
            "for one repository per cell); or set hub.push=false"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    repo_id = repo_id_of(cfg)
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(
            f"hub.repo_id={hub.repo_id}: '{repo_id}' is not a hub repository id ({err}); give <owner>/<name>"
        ) from None
    if "/" not in repo_id:
        raise ValueError(f"hub.repo_id={hub.repo_id}: give <owner>/<name>, the owner being your user or organisation")
    if not os.environ.get(TOKEN_ENV):
        raise ValueError(
            f"hub.push=true needs a write token in the environment: export {TOKEN_ENV}=hf_... "
            "(never put it in a config file or on the command line)"
        )
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            "hub.push=true but HF_HUB_OFFLINE=1 forbids any request to the Hub: unset HF_HUB_OFFLINE "
            "for this run, or set hub.push=false"
        )


def cell_command(cfg: DictConfig) -> str:
    """The command that reruns this cell: its Hydra overrides (a sweep's one cell), else this process's argv.
    Secret-looking overrides are masked, as the tracker's config is."""
    from qresafe_exp.tracking import _is_secret_key

    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra (tests, the Python API)
        overrides = sys.argv[1:]
    shown = [f"{o.split('=', 1)[0]}=***" if "=" in o and _is_secret_key(o.split("=", 1)[0]) else o for o in overrides]
    return " ".join(["python -m qresafe_exp", *(shlex.quote(o) for o in shown)])


def _score_line(suite: str, block: dict) -> str | None:
    score = block_headline(block)
    if score is None:
        return None
    fmt = lambda x: "n/a" if x is None else f"{x:.4g}"
    n = "n/a" if score.n is None else score.n
    return f"| {suite} | {block['metric']} | {fmt(score.value)} | [{fmt(score.lo)}, {fmt(score.hi)}] | {n} |"


def _hub_id(model) -> str | None:
    path = model.get("path")
    return str(path) if model.get("source") == "hub" and path and not Path(str(path)).exists() else None


def _base_model(model) -> tuple[str, str | None]:
    """(what the card shows, the hub id for its ``base_model`` metadata or None): where the weights came
    from, following an aligned model back to the model it was safety-tuned from."""
    source = model.get("source")
    if source == "aligned" and model.get("base") is not None:
        shown, hub_id = _base_model(model.base)
        return f"{model.name} (safety-tuned by qresafe_exp.align from {shown})", hub_id
    if _hub_id(model):
        return _hub_id(model), _hub_id(model)
    if source == "gguf_package":
        return f"{model.name} (GGUF {model.gguf_file} from the PyPI package {model.gguf_package})", None
    return f"{model.name} (model.source={source})", None


def model_card(metrics: dict, cfg: DictConfig, command: str) -> str:
    """The README.md of the pushed repository: metadata, content warning, the cell's axes, its scores with
    95% CIs (from metrics.json), the FP reference's deltas and the command."""
    from huggingface_hub import ModelCard, ModelCardData

    axes = metrics.get("axes", {})
    protocol = metrics.get("protocol") or {}
    judge = protocol.get("judge")
    base, hub_id = _base_model(cfg.model)
    data = ModelCardData(
        base_model=hub_id,
        tags=["qresafe_exp", "safety-evaluation", f"quant-{axes.get('quant')}", f"patch-{axes.get('patch')}"],
        library_name="transformers",
    )
    rows = [line for suite, block in sorted(metrics.get("scores", {}).items()) if (line := _score_line(suite, block))]
    deltas = [
        f"| {name} | {value:+.4g} |"
        for name, value in sorted((metrics.get("vs_reference") or {}).items())
        if value is not None
    ]
    git = (metrics.get("provenance") or {}).get("git") or {}
    parts = [
        f"---\n{data.to_yaml()}\n---",
        f"# {metrics.get('cell', cfg.cell)}",
        CONTENT_WARNING,
        "## What this checkpoint is",
        "| base model | quantizer | bits | calibration | patch |\n|---|---|---|---|---|\n"
        f"| {base} | {axes.get('quant')} | {axes.get('bits')} | {axes.get('calib')} "
        f"| {axes.get('patch_tag', axes.get('patch'))} |",
        f"Study `{metrics.get('study')}`, judge `{judge.get('name') if isinstance(judge, dict) else judge}`, "
        f"evaluation `{protocol.get('eval')}` (protocol `{protocol.get('protocol')}`, limit {protocol.get('limit')}).",
        "## Scores (95% confidence intervals)",
        "| suite | metric | value | 95% CI | n |\n|---|---|---|---|---|\n" + "\n".join(rows) if rows else "No scores.",
    ]
    if deltas:
        parts += [
            f"Minus the FP reference cell `{metrics.get('reference_cell')}`:",
            "| score | cell - reference |\n|---|---|\n" + "\n".join(deltas),
        ]
    parts += ["## Reproduce", f"```\n{command}\n```"]
    if git.get("commit"):
        parts.append(f"qresafe_exp commit `{git['commit']}`{' (with local changes)' if git.get('dirty') else ''}.")
    return str(ModelCard("\n\n".join(parts) + "\n"))


def push_checkpoint(cfg: DictConfig, checkpoint: Path, metrics: dict) -> dict:
    """Create (or reuse) the repository and upload the checkpoint and its card in one commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    repo_id = repo_id_of(cfg)
    card = model_card(metrics, cfg, cell_command(cfg))
    api = HfApi(endpoint=cfg.hub.get("endpoint") or None, token=os.environ.get(TOKEN_ENV))
    url = api.create_repo(repo_id, repo_type="model", private=bool(cfg.hub.private), exist_ok=True)
    files = sorted(
        p
        for p in Path(checkpoint).rglob("*")
        if p.is_file() and p.name not in CACHE_FILES and not p.name.startswith(".")
    )
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(checkpoint).as_posix(), path_or_fileobj=str(p))
        for p in files
        if p.relative_to(checkpoint).as_posix() != "README.md"
    ]
    operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    info = api.create_commit(repo_id, operations=operations, commit_message=f"qresafe_exp cell {cfg.cell}")
    log.info("pushed %s (%d files) to %s", checkpoint, len(operations), url)
    return {
        "repo_id": repo_id,
        "url": str(url),
        "commit": info.oid,
        "files": len(operations),
        "private": bool(cfg.hub.private),
    }


def push_cell(cfg: DictConfig, checkpoint: Path | None, metrics: dict) -> dict:
    """The ``hub`` record of metrics.json: what was pushed, or why not (never raises: results are written)."""
    if checkpoint is None:
        log.warning(
            "hub.push=true: cell %s has no checkpoint of its own (FP model, no patch); nothing pushed", cfg.cell
        )
        return {"pushed": False, "reason": "no quantized or patched checkpoint in this cell"}
    try:
        return {"pushed": True, **push_checkpoint(cfg, checkpoint, metrics)}
    except Exception as err:  # noqa: BLE001 - network, auth, quota: the cell's results stay written
        log.error("hub push of %s to %s failed: %s: %s", cfg.cell, repo_id_of(cfg), type(err).__name__, err)
        return {"pushed": False, "error": f"{type(err).__name__}: {str(err)[:300]}"}
