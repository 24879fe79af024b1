"""Datasets from the Hugging Face Hub by URI: ``hf://owner/name[/config][@revision][:split]``.

Accepted wherever a prompt or pair file is (``prompts=``, ``calib.dataset=``). The rows come through
``datasets.load_dataset``, so its cache serves them offline (``HF_HUB_OFFLINE=1``) once a dataset has been
loaded on a machine with internet; offline, ``@revision`` cannot be checked and the cached copy is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

SCHEME = "hf://"
DEFAULT_SPLIT = "train"
_URI = re.compile(
    r"^hf://(?P<repo>[^/@:]+/[^/@:]+)(?:/(?P<config>[^/@:]+))?(?:@(?P<revision>[^:]+))?"
    r"(?::(?P<split>.+))?$"
)
FORM = "hf://owner/name[/config][@revision][:split]"


class HubSourceError(ValueError):
    """A hub URI that cannot be parsed or loaded; the message names the key and the fix."""


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    config: str | None
    revision: str | None
    split: str

    @property
    def slug(self) -> str:
        """A file name for this source's rows (cache_dir/datasets/hf/<slug>.jsonl)."""
        parts = [self.repo_id.replace("/", "--"), self.config or "default", self.split, self.revision or "latest"]
        return "__".join(re.sub(r"[^\w.-]", "_", p) for p in parts)


def is_hub_uri(name) -> bool:
    return isinstance(name, str) and name.startswith(SCHEME)


def parse_hub_uri(uri: str, key: str) -> HubSource:
    match = _URI.match(uri)
    if not match:
        raise HubSourceError(f"{key}={uri}: not a hub dataset URI; give {FORM} (e.g. hf://walledai/AdvBench:train)")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(match["repo"])
    except HFValidationError as err:
        raise HubSourceError(f"{key}={uri}: '{match['repo']}' is not a hub dataset id ({err}); give {FORM}") from None
    return HubSource(match["repo"], match["config"], match["revision"], match["split"] or DEFAULT_SPLIT)


@lru_cache(maxsize=32)  # preflight and the run read the same split once per process
def _load(source: HubSource) -> tuple[str, ...]:
    from datasets import load_dataset

    rows = load_dataset(source.repo_id, source.config, split=source.split, revision=source.revision)
    return tuple(json.dumps(dict(row), default=str) for row in rows)  # tuples of JSON: hashable, never mutated


def hub_rows(uri: str, key: str) -> list[dict]:
    """The rows of the split ``uri`` names, or HubSourceError in one line naming ``key`` and the fix."""
    source = parse_hub_uri(uri, key)
    try:
        return [json.loads(line) for line in _load(source)]
    except ValueError as err:  # datasets: 'Unknown split "x". Should be one of [...]', or a bad config name
        first = str(err).strip().splitlines()[0]
        raise HubSourceError(f"{key}={uri}: {first}; pick one of them ({FORM})") from None
    except Exception as err:  # noqa: BLE001 - offline and not cached, unknown repo, gated: not loadable here
        raise HubSourceError(
            f"{key}={uri}: cannot load {source.repo_id} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            "with HF_HUB_OFFLINE=1 it must be in the datasets cache (load it once with internet), or give a "
            "local .csv/.json/.jsonl/.parquet file"
        ) from None
