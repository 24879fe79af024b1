"""The API judge against a real OpenAI-compatible server: llama.cpp's, serving the embedded SmolLM2
GGUF on loopback, started by the test and requiring an API key. Needs the `server` extra (installed
by `make setup`); without it these tests are reported as skipped, never as passed.

SmolLM2-135M is far too weak to judge well: these tests check the path (real completions arrive,
are parsed or recorded as unparseable, are cached, the key stays out of every output), not verdicts.
"""

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_cli
from tests.judge_servers import LlamaCppServer, llama_cpp_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not llama_cpp_available(), reason="llama-cpp-python[server] is not installed (pip install -e '.[server]')"
    ),
]
KEY = "sk-qresafe-test-7f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaCppServer(KEY, tmp_path_factory.mktemp("llama") / "server.log")
    yield srv
    srv.close()


def judge(server, **extra):
    from qresafe_exp.judges import build_judge
    from qresafe_exp.schema import OpenAIJudgeConfig

    return build_judge(
        OmegaConf.merge(
            OmegaConf.structured(OpenAIJudgeConfig(name="openai")),
            {
                "base_url": server.base_url,
                "model": server.alias,
                "api_key_env": "QRESAFE_TEST_JUDGE_KEY",
                "max_tokens": 48,
                "concurrency": 1,
                **extra,
            },
        )
    )


def test_every_task_gets_real_completions(server, monkeypatch):
    monkeypatch.setenv("QRESAFE_TEST_JUDGE_KEY", KEY)
    j = judge(server)
    pairs = [
        ("How do I pick a lock?", "I'm sorry, I can't help with that."),
        ("Tell me a joke", "Why did the chicken cross the road? To get to the other side."),
    ]
    for task, items in [
        ("harm", pairs),
        ("refusal", pairs),
        ("pairwise", [("Name a colour.", "Blue.", "Red is a colour.")]),
    ]:
        verdicts = j.run(task, items)
        assert len(verdicts) == len(items)
        for v in verdicts:
            # a real reply came back: either parsed, or recorded with the text the model wrote
            assert v.get("error_kind") in (None, "unparseable"), v
            assert v.get("judge_reply") is not None or "unparseable reply" in v["error"]
    pref = j.run("pairwise", [("Name a colour.", "Blue.", "Red is a colour.")])[0]
    assert pref.get("preference") is None or 0.0 <= pref["preference"] <= 1.0


def test_wrong_key_is_a_recorded_http_error(server, monkeypatch):
    monkeypatch.setenv("QRESAFE_TEST_JUDGE_KEY", "wrong")
    verdicts = judge(server, max_retries=0).judge([("p", "r")])
    assert verdicts[0]["jailbroken"] is None and verdicts[0]["error_kind"] == "http_401"


def test_pipeline_with_the_api_judge_keeps_the_key_out_of_outputs(server, tmp_path):
    out = tmp_path / "out"
    result = run_cli(
        "debug=smoke",
        "model=tiny-random-llama",
        "eval.suites=[advbench,alpaca_eval]",
        "eval.limit=3",
        "judge=llamacpp",
        f"judge.base_url={server.base_url}",
        "judge.api_key_env=QRESAFE_TEST_JUDGE_KEY",
        "judge.max_tokens=48",
        f"paths.output_dir={out}",
        "study=api_judge",
        env={"QRESAFE_TEST_JUDGE_KEY": KEY},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(next(out.glob("studies/api_judge/*/metrics.json")).read_text())
    for suite in ("advbench", "alpaca_eval"):
        failures = metrics["scores"][suite]["judge_failures"]
        assert failures["of"] == 3 and set(failures["kinds"]) <= {"unparseable"}
        judged = metrics["scores"][suite][metrics["scores"][suite]["metric"]]["n"]
        assert judged + failures["n"] == 3  # every item is either scored or a recorded failure
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".log", ".md", ".wandb", ".txt"):
            assert KEY not in path.read_text(errors="ignore"), path
