"""The one module that talks to the experiment tracker (W&B, or none).

Pipeline code calls ``start`` / ``log_metrics`` / ``log_table`` / ``finish`` and nothing else.
W&B runs are offline by default: real run files under the cell directory, uploaded later with
``make wandb-sync``. Secrets never reach the tracker: the config is scrubbed first.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from qresafe_exp.registry import Registry

log = logging.getLogger(__name__)
# Secret keys are matched by whole words of the key (split at _ - . and camelCase), not by substring:
# max_new_tokens, num_tokens and tokenizer are ordinary fields, hf_token and WANDB_API_KEY are not.
_SECRET_WORDS = frozenset({"token", "secret", "secrets", "password", "passwd", "passphrase", "auth",
                           "authorization", "apikey", "credential", "credentials", "cookie", "bearer"})
_SECRET_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@]+@")  # scheme://user:pass@host


def _is_secret_key(key: Any) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key)).lower()) if w]
    for i, word in enumerate(words):
        after = words[i + 1] if i + 1 < len(words) else None
        if word in _SECRET_WORDS and not (word == "token" and after in ("id", "ids")):  # eos_token_id: a vocab id
            return True
        if (word, after) in _SECRET_PAIRS:
            return True
    return False


def scrub_secrets(obj: Any) -> Any:
    """A copy of ``obj`` with the values of secret keys replaced and credentials cut out of URLs."""
    if isinstance(obj, dict):
        return {k: ("***" if _is_secret_key(k) and v not in (None, "") else scrub_secrets(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_secrets(v) for v in obj]
    if isinstance(obj, str):
        return _URL_USERINFO.sub(r"\1***@", obj)
    return obj


def _flatten(prefix: str, obj: Any, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float, bool)) or obj is None:
        out[prefix] = obj
    return out


def _histories(prefix: str, obj: Any, out: dict) -> dict:
    """{path: rows} of every per-step history in ``obj``: a list of dicts that each have a "step"."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _histories(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) and "step" in r for r in obj):
        out[prefix] = obj
    return out


class Tracker:
    def start(self, *, run_dir: Path, name: str, group: str, job_type: str, config: dict, tags: list[str]) -> None: ...
    def log_metrics(self, metrics: dict) -> None: ...
    def log_table(self, key: str, rows: list[dict]) -> None: ...
    def log_images(self, images: dict[str, Path]) -> None: ...
    def save_json(self, name: str, obj: dict) -> None: ...
    def finish(self) -> None: ...
    run_path: str | None = None


class NoTracker(Tracker):
    def __init__(self, cfg=None):
        pass


class WandbTracker(Tracker):
    def __init__(self, cfg):
        self.cfg = cfg
        self.run = None

    def start(self, *, run_dir, name, group, job_type, config, tags):
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_START_METHOD", "thread")  # robust under Hydra/submitit
        self.run = wandb.init(
            project=self.cfg.project, entity=self.cfg.entity, mode=self.cfg.mode, dir=str(run_dir),
            name=name, group=group, job_type=job_type, tags=list(tags) + list(self.cfg.tags),
            config=scrub_secrets(config), reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.run_path = str(Path(self.run.dir).parent)

    def log_metrics(self, metrics):
        # per-step histories (e.g. patch/train/history, which _flatten skips as lists) become charts over
        # their own step axis, so they never clash with the run's step; logged before the summary
        for path, rows in _histories("", metrics, {}).items():
            self.run.define_metric(f"{path}/step")
            self.run.define_metric(f"{path}/*", step_metric=f"{path}/step")
            for row in rows:
                self.run.log({f"{path}/{k}": v for k, v in row.items() if isinstance(v, (int, float, bool))})
        flat = _flatten("", metrics, {})
        self.run.log(flat)
        self.run.summary.update(flat)

    def log_table(self, key, rows):
        import wandb

        if not rows:
            return
        columns = list(rows[0])
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        self.run.log({key: table})

    def log_images(self, images):
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})

    def save_json(self, name, obj):
        """A file of the run (synced with it): how `report source=wandb` reads a cell's metrics back."""
        Path(self.run.dir, name).write_text(json.dumps(scrub_secrets(obj), default=str))

    def finish(self):
        if self.run is not None:
            self.run.finish()
            self.run = None


def _cell(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


TRACKERS: Registry[type[Tracker]] = Registry("logger", {
    "none": "qresafe_exp.tracking:NoTracker",
    "wandb": "qresafe_exp.tracking:WandbTracker",
})


def check_logger(cfg) -> None:
    if cfg.name not in TRACKERS:
        raise ValueError(f"logger={cfg.name} is unknown. Allowed: {', '.join(TRACKERS.names())}")


def build_tracker(cfg) -> Tracker:
    if cfg.mode == "disabled":
        return NoTracker()
    check_logger(cfg)
    return TRACKERS.get(cfg.name)(cfg)
