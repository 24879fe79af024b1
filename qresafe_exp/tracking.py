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

log = logging.getLogger(__name__)
_SECRET = re.compile(r"(api[_-]?key|token|secret|password|passwd|authorization)", re.IGNORECASE)


def scrub_secrets(obj: Any) -> Any:
    """A copy of ``obj`` with the values of secret-looking keys replaced."""
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET.search(str(k)) and v not in (None, "") else scrub_secrets(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub_secrets(v) for v in obj]
    return obj


def _flatten(prefix: str, obj: Any, out: dict) -> dict:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float, bool)) or obj is None:
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


def build_tracker(cfg) -> Tracker:
    if cfg.name == "none" or cfg.mode == "disabled":
        return NoTracker()
    if cfg.name == "wandb":
        return WandbTracker(cfg)
    raise ValueError(f"logger={cfg.name} is unknown. Allowed: wandb, none")
