"""XSTest's string-match refusal classifier as a judge (``judge=xstest_strmatch``).

The rule itself lives in evals/overrefusal.py (it is also every over-refusal suite's default rule);
as a judge it can be audited against labels and used for harm verdicts (jailbroken = not refused).
"""

from __future__ import annotations

from qresafe_exp.evals.overrefusal import xstest_strmatch
from qresafe_exp.judges.base import Judge


class XSTestStrmatchJudge(Judge):
    name = "xstest_strmatch"
    capabilities = frozenset({"harm", "refusal"})

    def refusal(self, pairs):
        return [xstest_strmatch(response) for _prompt, response in pairs]

    def harm(self, pairs):
        return [{"jailbroken": not v["refused"], "label": v["label"]} for v in self.refusal(pairs)]
