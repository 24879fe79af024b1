"""The judge interface: a batch of (prompt, response) -> one verdict dict per pair."""

from __future__ import annotations

from typing import ClassVar


class Judge:
    name: ClassVar[str]
    # Costly judges (models, APIs) have their verdicts cached per request; cheap ones do not.
    cache_verdicts: ClassVar[bool] = False

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def identity(self) -> dict:
        """What makes two verdicts comparable: name, settings, prompt version."""
        return {"name": self.name, "version": int(self.cfg.version)}

    def judge(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Each verdict has ``jailbroken`` (bool) and may add judge-specific fields."""
        raise NotImplementedError
