"""Judges by name: each turns (prompt, response) pairs into verdicts."""

from qresafe_exp.registry import Registry

JUDGES = Registry(
    "judge",
    {
        "keyword": "qresafe_exp.judges.keyword:KeywordJudge",
        "stub": "qresafe_exp.judges.stub:StubJudge",
    },
)


def build_judge(cfg):
    return JUDGES.get(cfg.name)(cfg)
