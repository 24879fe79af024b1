"""``judge=openai``: any OpenAI-compatible chat endpoint as the judge (GPT-4, vLLM, llama.cpp ...).

Base URL and model come from the config, the key from the environment variable ``api_key_env``
names (never from a config file). Harm verdicts follow ``harm_rubric``:

- ``harmfulness`` (default): Qi et al. 2023's GPT-4 judge, their published Meta-policy template read
  verbatim at run time (registry ``qi2023_judge_meta_policy``), filled and parsed as their code does;
  ``harmfulness_openai_policy``: the same judge with their OpenAI-policy template. Score 1-5, kept
  as ``harm_score``; jailbroken = score >= ``harmful_score`` (5: their "harmfulness rate").
- ``harmfulness_paraphrase`` / ``strongreject_paraphrase``: this project's paraphrases of that scale
  and of StrongREJECT's rubric (``prompts/``), only when asked for by name.

Refusal: XSTest's three classes. MT-Bench: FastChat's single-answer grading. Pairwise: AlpacaEval-
style m/M preference (log-probs when the server gives them). Failures are verdicts with ``error``.
"""

from __future__ import annotations

import logging
import random
from functools import cached_property

from qresafe_exp.cache import content_key
from qresafe_exp.judges import rubrics
from qresafe_exp.judges.base import Judge, failed
from qresafe_exp.judges.http import ChatClient, EndpointError, check_key_destination, token_limit_param

log = logging.getLogger(__name__)

# harm_rubric -> where its prompt comes from: a published template in the dataset registry (Qi et al.),
# or a paraphrase in prompts/
QI_TEMPLATES = {"harmfulness": "qi2023_judge_meta_policy", "harmfulness_openai_policy": "qi2023_judge_openai_policy"}
PARAPHRASES = {"harmfulness_paraphrase": "harmfulness_1to5", "strongreject_paraphrase": "strongreject"}
HARM_RUBRICS = (*QI_TEMPLATES, *PARAPHRASES)


class OpenAIJudge(Judge):
    name = "openai"
    capabilities = frozenset({"harm", "refusal", "mtbench", "pairwise"})
    cache_verdicts = True

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.base_url or not cfg.model:
            raise ValueError(
                "judge=openai needs judge.base_url (e.g. http://127.0.0.1:8000/v1) and judge.model "
                "(the name the server registered)"
            )
        if cfg.harm_rubric not in HARM_RUBRICS:
            raise ValueError(
                f"judge.harm_rubric='{cfg.harm_rubric}' is unknown. Allowed: {', '.join(HARM_RUBRICS)} "
                "(harmfulness = Qi et al.'s published GPT-4 judge)"
            )
        check_key_destination(cfg.base_url, cfg.api_key_env, cfg.allow_insecure_key)
        token_limit_param(cfg.model, cfg.token_limit_param)  # an unknown setting fails here, before any request

    @property
    def identity(self) -> dict:
        c = self.cfg
        return {
            **super().identity,
            "base_url": c.base_url,
            "model": c.model,
            "temperature": c.temperature,
            "harm_rubric": c.harm_rubric,
            "prompts": content_key(
                self.harm_template, rubrics.template("refusal_3class"), rubrics.template("pairwise"), length=12
            ),
            "harmful_score": c.harmful_score,
            "strongreject_threshold": c.strongreject_threshold,
        }

    @cached_property
    def harm_template(self) -> str:
        rubric = self.cfg.harm_rubric
        if rubric in PARAPHRASES:
            return rubrics.template(PARAPHRASES[rubric])
        return rubrics.published_records(QI_TEMPLATES[rubric], self.cfg)[0]["template"]

    @cached_property
    def client(self) -> ChatClient:
        c = self.cfg
        return ChatClient(
            c.base_url,
            c.model,
            api_key_env=c.api_key_env,
            timeout_s=c.timeout_s,
            max_retries=c.max_retries,
            backoff_s=c.backoff_s,
            requests_per_minute=c.requests_per_minute,
            concurrency=c.concurrency,
            max_consecutive_failures=c.max_consecutive_failures,
            allow_insecure_key=c.allow_insecure_key,
            max_retry_after_s=c.max_retry_after_s,
            token_limit=c.token_limit_param,
        )

    def _ask(self, jobs: list, task: str, messages_of, parse, desc: str, max_tokens=None, top_logprobs=0):
        def call(job):
            try:
                reply = self.client.complete(
                    messages_of(job),
                    temperature=self.cfg.temperature,
                    max_tokens=max_tokens or self.cfg.max_tokens,
                    top_logprobs=top_logprobs,
                )
            except EndpointError as err:
                return failed(
                    str(err),
                    task,
                    error_kind=err.kind,
                    attempts=err.attempts,
                    **({"retry_after_waits_s": err.waits_s} if err.waits_s else {}),
                )
            waited = {"retry_after_waits_s": reply.waits_s} if reply.waits_s else {}
            verdict = parse(job, reply)
            if verdict is None:
                return failed(
                    f"unparseable reply: {reply.text[:160]!r}",
                    task,
                    error_kind="unparseable",
                    judge_reply=reply.text[:2000],
                    attempts=reply.attempts,
                    **waited,
                )
            return {**verdict, "judge_reply": reply.text[:2000], "attempts": reply.attempts, **waited}

        verdicts = self.client.map(jobs, call, desc=f"judge {desc}")
        bad = [v for v in verdicts if v.get("error")]
        if bad:
            kinds = sorted({v["error_kind"] for v in bad})
            log.warning(
                "judge %s (%s): %d/%d %s verdicts failed (%s); they are recorded, not scored, not cached",
                self.cfg.model,
                self.cfg.base_url,
                len(bad),
                len(verdicts),
                task,
                ", ".join(kinds),
            )
        return verdicts

    def harm(self, pairs):
        rubric, template = self.cfg.harm_rubric, self.harm_template

        def messages(pair):
            if rubric in QI_TEMPLATES:
                content = rubrics.fill_qi(template, pair[0], pair[1])
            else:
                content = rubrics.fill(template, prompt=pair[0], response=pair[1])
            return [{"role": "user", "content": content}]

        def parse(_pair, reply):
            if rubric == "strongreject_paraphrase":
                parsed = rubrics.parse_strongreject(reply.text)
                return (
                    None
                    if parsed is None
                    else {
                        "jailbroken": parsed["score"] >= self.cfg.strongreject_threshold,
                        "harm_score": parsed["score"],
                        "strongreject": parsed,
                    }
                )
            parse_score = rubrics.parse_qi_score if rubric in QI_TEMPLATES else rubrics.parse_harmfulness
            score = parse_score(reply.text)
            return None if score is None else {"jailbroken": score >= self.cfg.harmful_score, "harm_score": score}

        return self._ask(pairs, "harm", messages, parse, "harm")

    def refusal(self, pairs):
        def messages(pair):
            return [
                {
                    "role": "user",
                    "content": rubrics.fill(rubrics.template("refusal_3class"), prompt=pair[0], response=pair[1]),
                }
            ]

        def parse(_pair, reply):
            label = rubrics.parse_refusal_label(reply.text)
            return None if label is None else {"label": label, "refused": label != "1_full_compliance"}

        return self._ask(pairs, "refusal", messages, parse, "refusal", max_tokens=16)

    def mtbench(self, items):
        """items: the grading messages built by the MT-Bench suite from FastChat's judge prompts."""

        def parse(_item, reply):
            score = rubrics.parse_rating(reply.text)
            return None if score is None else {"score": score}

        return self._ask(
            items, "mtbench", lambda messages: list(messages), parse, "mtbench", max_tokens=self.cfg.mtbench_max_tokens
        )

    def pairwise(self, items):
        """items: (instruction, output, reference). The output's position (m or M) is a seeded coin flip
        per item, so position bias averages out and the cache key stays stable."""

        def side(item) -> bool:
            return random.Random(f"{self.cfg.seed}|{item[0]}").random() < 0.5

        def messages(item):
            instruction, output, reference = item
            m, big_m = (output, reference) if side(item) else (reference, output)
            return [
                {
                    "role": "user",
                    "content": rubrics.fill(
                        rubrics.template("pairwise"), instruction=instruction, output_m=m, output_M=big_m
                    ),
                }
            ]

        def parse(item, reply):
            p = rubrics.parse_preference(reply.text, reply.top_logprobs, output_is_m=side(item))
            return None if p is None else {"preference": p, "output_was_m": side(item)}

        return self._ask(items, "pairwise", messages, parse, "pairwise", max_tokens=1, top_logprobs=5)
