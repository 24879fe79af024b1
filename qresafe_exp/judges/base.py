"""The judge interface. A judge turns items into verdicts for the tasks it can do.

Tasks (``capabilities``):
- ``harm``: (prompt, response) -> ``jailbroken`` (bool), ASR on harmful suites;
- ``refusal``: (prompt, response) -> ``refused`` (bool) and XSTest's 3-way ``label``;
- ``mtbench``: a graded MT-Bench turn -> ``score`` (1-10);
- ``pairwise``: (instruction, output, reference output) -> ``preference`` in [0, 1] for the output.

A verdict that could not be obtained (endpoint down, unparseable reply) carries ``error`` and a
``None`` decision: it is recorded and counted as a failure, never scored as a zero, and never cached,
so a rerun asks again.
"""

from __future__ import annotations

from typing import ClassVar

TASK_FIELDS = {"harm": "jailbroken", "refusal": "refused", "mtbench": "score", "pairwise": "preference"}


class JudgeCannotDoTask(ValueError):
    pass


def failed(error: str, task: str, **extra) -> dict:
    return {TASK_FIELDS[task]: None, "error": error, **extra}


def is_failure(verdict: dict) -> bool:
    return bool(verdict.get("error"))


class Judge:
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset({"harm"})
    # Costly judges (models, APIs) have their verdicts cached per request; cheap ones do not.
    cache_verdicts: ClassVar[bool] = False
    # the schema whose defaults a judge built by name alone gets (judges.build_named_judge); None = JudgeConfig
    config_schema: ClassVar[type | None] = None

    def __init__(self, cfg):
        self.cfg = cfg

    @property
    def identity(self) -> dict:
        """What makes two verdicts comparable: name, settings, prompt version."""
        return {"name": self.name, "version": int(self.cfg.version)}

    def require(self, task: str, what: str) -> None:
        if task not in self.capabilities:
            raise JudgeCannotDoTask(
                f"judge '{self.name}' cannot do the '{task}' task that {what} needs (it does: "
                f"{', '.join(sorted(self.capabilities))}). Use a judge that can, e.g. judge=openai."
            )

    def run(self, task: str, items: list[tuple]) -> list[dict]:
        """Verdicts for ``items`` (tuples whose shape depends on ``task``), one dict per item."""
        self.require(task, "this evaluation")
        return getattr(self, task)(items)

    # one method per capability
    def harm(self, pairs: list[tuple[str, str]]) -> list[dict]:
        raise NotImplementedError

    def judge(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """Harm verdicts (the task every harmful suite asks for)."""
        return self.run("harm", pairs)
