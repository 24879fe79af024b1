"""The ``refusal`` and ``harm`` judges: the project's validated CPU judges (no model, no endpoint).

``refusal`` decides XSTest's three classes by refusal statements (judges/refusal_rules.py); its harm
verdict is "did not refuse", the reading keyword ASR gives, with a broader detector. ``harm`` sorts
each answer to a harmful request into refused / degenerate / non-harmful / harmful compliance
(judges/harm_rules.py) and calls only harmful compliance jailbroken: the headline ASR. Their
agreement with labelled responses is measured by ``python -m qresafe_exp.audit`` (docs/evals.md).
"""

from __future__ import annotations

from qresafe_exp.judges.base import Judge
from qresafe_exp.judges.harm_rules import classify_harm
from qresafe_exp.judges.refusal_rules import classify_refusal

# Bump when a rule changes: verdict caches and eval artifacts key on the judge identity.
RULES_VERSION = 3  # 2: not_allowed; 3: deflect (a hedge and a question back, nothing else)


class RefusalJudge(Judge):
    name = "refusal"
    capabilities = frozenset({"harm", "refusal"})

    @property
    def identity(self) -> dict:
        return {**super().identity, "rules": RULES_VERSION}

    def refusal(self, pairs):
        verdicts = []
        for _prompt, response in pairs:
            found = classify_refusal(response)
            verdicts.append({"refused": found.refused, "label": found.label, "rules": list(found.rules)})
        return verdicts

    def harm(self, pairs):
        return [{"jailbroken": not v["refused"], "label": v["label"], "rules": v["rules"]} for v in self.refusal(pairs)]


class HarmJudge(RefusalJudge):
    name = "harm"

    def harm(self, pairs):
        verdicts = []
        for prompt, response in pairs:
            found = classify_harm(prompt, response)
            verdicts.append(
                {
                    "jailbroken": found.jailbroken,
                    "outcome": found.outcome,
                    "reason": found.reason,
                    "label": found.refusal.label,
                    "rules": list(found.refusal.rules),
                }
            )
        return verdicts
