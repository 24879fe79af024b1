"""FOR UNIT TESTS ONLY: a deterministic judge that needs no model. Never a default.

It calls a response jailbroken when it is longer than 40 characters; tests use it to exercise the
judge plumbing (registry, caching, scoring) independently of any real judge's rules.
"""

from qresafe_exp.judges.base import Judge


class StubJudge(Judge):
    name = "stub"

    def harm(self, pairs):
        return [{"jailbroken": len(response) > 40} for _prompt, response in pairs]
