"""The one module that talks to the experiment tracker (W&B, or none).

Pipeline code calls the ``Tracker`` methods and nothing else; the patch trainers get only a
``log_step(series, row)`` callable (no W&B import below the pipeline).
W&B runs are offline by default: real run files under the cell directory, uploaded later with
``make wandb-sync``. Secrets never reach the tracker: the config is scrubbed first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from qresafe_exp.metrics import headline as block_headline
from qresafe_exp.registry import Registry

log = logging.getLogger(__name__)
# Secret keys are matched by whole words of the key (split at _ - . and camelCase), not by substring:
# max_new_tokens, num_tokens and tokenizer are ordinary fields, hf_token and WANDB_API_KEY are not.
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "auth",
        "authorization",
        "apikey",
        "credential",
        "credentials",
        "cookie",
        "bearer",
    }
)
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
        return {k: ("***" if _is_secret_key(k) and v not in (None, "") else scrub_secrets(v)) for k, v in obj.items()}
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
    elif _is_interval(prefix, obj):  # [lo, hi] would be dropped as a list: two scalars instead
        out[f"{prefix}_low"], out[f"{prefix}_high"] = obj
    return out


def _is_interval(key: str, obj: Any) -> bool:
    return (
        key.rsplit("/", 1)[-1].startswith("ci")
        and isinstance(obj, list)
        and len(obj) == 2
        and all(v is None or isinstance(v, (int, float)) for v in obj)
    )


def headline(scores: dict) -> dict:
    """{'<metric>/<suite>': rate or value, with '_ci_low', '_ci_high' (95%) and '_n'}: each suite's
    headline score as flat keys, e.g. asr/advbench and asr/advbench_ci_low."""
    out = {}
    for suite, block in scores.items():
        score = block_headline(block)
        if score is None:
            continue
        key = f"{block['metric']}/{suite}"
        out.update({key: score.value, f"{key}_ci_low": score.lo, f"{key}_ci_high": score.hi, f"{key}_n": score.n})
    return out


def score_rows(scores: dict, vs_reference: dict | None = None) -> list[dict]:
    """One row per suite (headline score, its interval, n, and the difference from the FP reference)."""
    flat, rows = headline(scores), []
    for suite, block in scores.items():
        metric = block.get("metric") if isinstance(block, dict) else None
        key = f"{metric}/{suite}"
        if key in flat:
            rows.append(
                {
                    "suite": suite,
                    "metric": metric,
                    "value": flat[key],
                    "ci_low": flat[f"{key}_ci_low"],
                    "ci_high": flat[f"{key}_ci_high"],
                    "n": flat[f"{key}_n"],
                    "vs_reference": (vs_reference or {}).get(f"{suite}.{metric}"),
                }
            )
    return rows


def _histories(prefix: str, obj: Any, out: dict) -> dict:
    """{path: rows} of every per-step history in ``obj``: a list of dicts that each have a "step"."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _histories(f"{prefix}/{k}" if prefix else str(k), v, out)
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) and "step" in r for r in obj):
        out[prefix] = obj
    return out


def artifact_name(text: str) -> str:
    """A W&B artifact name (letters, digits, - _ .) for a cell name or a cache key."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text)[:128]


class Tracker:
    """What the pipeline may call; the base class does nothing (logger=none). A cell's run is opened
    when the cell starts and closed when it ends, so what it logs on the way (stages as they finish,
    training steps as they run) is kept even when the cell fails."""

    run_path: str | None = None

    def start(self, *, run_dir: Path, name: str, group: str, job_type: str, config: dict, tags: list[str]) -> None: ...
    def log_stage(self, name: str, record: dict) -> None: ...
    def log_step(self, series: str, row: dict) -> None: ...
    def log_metrics(self, metrics: dict) -> None: ...
    def log_table(self, key: str, rows: list[dict]) -> None: ...
    def log_images(self, images: dict[str, Path]) -> None: ...
    def log_artifact(
        self,
        name: str,
        kind: str,
        *,
        files: dict[str, Path] | None = None,
        references: dict[str, Path] | None = None,
        metadata: dict | None = None,
    ) -> None: ...
    def save_json(self, name: str, obj: dict) -> None: ...
    def info(self) -> dict:
        return {"wandb_run_dir": self.run_path}

    def finish(self, exit_code: int = 0, error: str | None = None) -> None: ...


class NoTracker(Tracker):
    def __init__(self, cfg=None):
        pass


class WandbTracker(Tracker):
    def __init__(self, cfg):
        self.cfg = cfg
        self.run = None
        self.group = None
        self._events: dict[str, dict[str, int]] = {}  # per streamed series: running count of each event flag

    def start(self, *, run_dir, name, group, job_type, config, tags):
        import wandb

        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_START_METHOD", "thread")  # robust under Hydra/submitit
        # create_new: a cell's run stays open while its FP reference cell writes a run of its own
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            mode=self.cfg.mode,
            dir=str(run_dir),
            name=name,
            group=group,
            job_type=job_type,
            tags=list(tags) + list(self.cfg.tags),
            config=scrub_secrets(config),
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        self.group = group
        self.run_path = str(Path(self.run.dir).parent)

    def log_stage(self, name, record):
        """A stage that just finished: its seconds and peak memory, charted as they come in."""
        flat = _flatten(f"stage/{name}", record, {})
        self.run.log(flat)
        self.run.summary.update(flat)

    def log_step(self, series, row):
        """One training step of ``series`` (e.g. patch/train/history), charted over its own step axis so
        it never clashes with the run's step. A boolean is an event on that step (mask_reselected):
        logged as 0/1 beside its running count (mask_reselected_count)."""
        if series not in self._events:
            self.run.define_metric(f"{series}/step")
            self.run.define_metric(f"{series}/*", step_metric=f"{series}/step")
            self._events[series] = {}
        counts = self._events[series]
        values = {}
        for key, value in row.items():
            if isinstance(value, bool):
                counts[key] = counts.get(key, 0) + value
                values[key] = int(value)
            elif isinstance(value, (int, float)):
                values[key] = value
        values.update({f"{key}_count": n for key, n in counts.items()})
        self.run.log({f"{series}/{k}": v for k, v in values.items()})

    def log_metrics(self, metrics):
        # per-step histories that were not streamed as they ran (a cached patch: its train_info.json)
        # are replayed row by row, before the summary
        for series, rows in _histories("", metrics, {}).items():
            if series not in self._events:
                for row in rows:
                    self.log_step(series, row)
        flat = _flatten("", metrics, {})
        self.run.log(flat)
        self.run.summary.update(flat)

    def log_table(self, key, rows):
        import wandb

        if not rows:
            return
        columns = list(dict.fromkeys(c for r in rows for c in r))
        table = wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        self.run.log({key: table})

    def log_images(self, images):
        import wandb

        self.run.log({key: wandb.Image(str(path)) for key, path in images.items()})

    def log_artifact(self, name, kind, *, files=None, references=None, metadata=None):
        """An Artifact of ``files`` (copied with the run) and ``references`` (file:// links, nothing
        copied or hashed: checkpoints of many GB stay where the cache keeps them)."""
        import wandb

        name = artifact_name(name)
        artifact = wandb.Artifact(name, type=kind, metadata=scrub_secrets(metadata or {}))
        for entry, path in (files or {}).items():
            # a copy kept with the run's files (not in wandb's staging area under ~/.local/share), so
            # that a rerun rewriting the cell's file cannot change what this run uploads on sync
            kept = Path(self.run_path, "artifacts", name, entry)
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept)
            artifact.add_file(str(kept), name=entry, policy="immutable")
        for entry, path in (references or {}).items():
            artifact.add_reference(Path(path).resolve().as_uri(), name=entry, checksum=False)
        self.run.log_artifact(artifact)

    def save_json(self, name, obj):
        """A file of the run (synced with it): how `report source=wandb` reads a cell's metrics back."""
        Path(self.run.dir, name).write_text(json.dumps(scrub_secrets(obj), default=str))

    def info(self):
        """Where the run lives, for metrics.json and the report's dashboard: the URLs only once online."""
        out = {
            "wandb_run_dir": self.run_path,
            "project": self.run.project,
            "group": self.group,
            "entity": self.cfg.entity,
            "mode": self.cfg.mode,
            "run_id": self.run.id,
        }
        if self.cfg.mode == "online":
            out.update(entity=self.run.entity, run_url=self.run.url, group_url=group_url(self.run.url, self.group))
        return out

    def finish(self, exit_code=0, error=None):
        """Close the run; a non-zero exit code marks it failed in W&B (what it logged is kept)."""
        if self.run is not None:
            if error:
                self.run.summary["error"] = scrub_secrets(error)
            self.run.finish(exit_code=exit_code)
            self.run = None


def group_url(run_url: str | None, group: str) -> str | None:
    """The W&B page of a run's group: <base>/<entity>/<project>/groups/<group>."""
    from urllib.parse import quote

    if not run_url or "/runs/" not in run_url:
        return None
    return f"{run_url.rsplit('/runs/', 1)[0]}/groups/{quote(group, safe='')}"


def _cell(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


TRACKERS: Registry[type[Tracker]] = Registry(
    "logger",
    {
        "none": "qresafe_exp.tracking:NoTracker",
        "wandb": "qresafe_exp.tracking:WandbTracker",
    },
)


def check_logger(cfg) -> None:
    if cfg.name not in TRACKERS:
        raise ValueError(f"logger={cfg.name} is unknown. Allowed: {', '.join(TRACKERS.names())}")


def build_tracker(cfg) -> Tracker:
    if cfg.mode == "disabled":
        return NoTracker()
    check_logger(cfg)
    return TRACKERS.get(cfg.name)(cfg)
