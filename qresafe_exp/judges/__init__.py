"""Judges by name: each turns items into verdicts for the tasks it can do (judges/base.py)."""

from qresafe_exp.registry import Registry

JUDGES = Registry(
    "judge",
    {
        "harm": "qresafe_exp.judges.refusal:HarmJudge",
        "refusal": "qresafe_exp.judges.refusal:RefusalJudge",
        "keyword": "qresafe_exp.judges.keyword:KeywordJudge",
        "labels": "qresafe_exp.judges.labels:LabelsJudge",
        "xstest_strmatch": "qresafe_exp.judges.strmatch:XSTestStrmatchJudge",
        "openai": "qresafe_exp.judges.openai_api:OpenAIJudge",
        "harmbench_cls": "qresafe_exp.judges.hf_classifier:HarmBenchClassifierJudge",
        "llama_guard": "qresafe_exp.judges.hf_classifier:LlamaGuardJudge",
        "stub": "qresafe_exp.judges.stub:StubJudge",
    },
)


def build_judge(cfg):
    return JUDGES.get(cfg.name)(cfg)


def build_named_judge(name: str):
    """A judge by registry name with its schema defaults (e.g. the keyword column's GCG list)."""
    from omegaconf import OmegaConf

    from qresafe_exp.schema import JudgeConfig

    judge = JUDGES.get(name)
    return judge(OmegaConf.merge(OmegaConf.structured(judge.config_schema or JudgeConfig), {"name": name}))
