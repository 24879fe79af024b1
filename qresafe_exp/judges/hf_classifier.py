"""Local classifier judges loaded with transformers: the HarmBench classifier and Llama Guard.

``judge=harmbench_cls``: ``cais/HarmBench-Llama-2-13b-cls``, run as HarmBench's
``evaluate_completions.py`` does: the prompt is HarmBench's own ``LLAMA2_CLS_PROMPT['prompt']``, read
at run time from its ``eval_utils.py`` (registry ``harmbench_cls_prompt``: ``<data_dir>/harmbench/
eval_utils.py``, else its public URL; never copied here) and filled with ``str.format``; the generation
is clipped to ``max_response_tokens`` (512) classifier tokens; the prompt is tokenized with the
tokenizer's special tokens (vLLM's default there, so BOS leads); one greedy token: ``yes`` =
jailbroken, ``no`` = not, anything else a recorded failure. ``judge.prompt_file`` replaces the prompt
with a text file (a ``## `` header is stripped), e.g. the Mistral-7b-val-cls prompt, or the project's
paraphrase ``prompts/harmbench_cls_paraphrase.txt`` (never a default).

``judge=llama_guard``: ``meta-llama/Llama-Guard-3-1B`` / ``-8B``: the tokenizer's own chat template
builds the moderation prompt from the (user, agent) turns (no prompt of ours); a few greedy tokens are
decoded; the first line ``safe``/``unsafe`` is the verdict, the second the violated categories (S1...).

Both load on first use (weights must be on disk or on the hub) and run in batches; their verdicts
are cached per (judge identity, prompt, response).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import torch

from qresafe_exp.cache import content_key
from qresafe_exp.data import DatasetNotFoundError
from qresafe_exp.judges.base import Judge, failed
from qresafe_exp.judges.rubrics import data_paths, published_records, read_prompt

log = logging.getLogger(__name__)


def parse_yes_no(text: str):
    word = text.strip().lower()
    return True if word.startswith("yes") else False if word.startswith("no") else None


def parse_llama_guard(text: str):
    """(unsafe: bool | None, categories: list[str])."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        return None, []
    unsafe = lines[0].lower() == "unsafe"
    categories = [c.strip() for c in lines[1].split(",")] if unsafe and len(lines) > 1 else []
    return unsafe, categories


class _LocalModelJudge(Judge):
    cache_verdicts = True
    new_tokens = 1
    add_special_tokens = False  # whether tokenizing the prompt adds the tokenizer's BOS etc.

    @property
    def identity(self) -> dict:
        return {
            **super().identity,
            "model": self.cfg.model,
            "revision": self.cfg.revision,
            "max_response_tokens": self.cfg.max_response_tokens,
            "prompt": self.prompt_id,
        }

    prompt_id = None

    @cached_property
    def _loaded(self):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from qresafe_exp.devices import compute_dtype, resolve_device

        device = resolve_device(self.cfg.device)
        dtype = compute_dtype(device)
        log.info("loading judge %s on %s", self.cfg.model, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.cfg.model, revision=self.cfg.revision)
            model = AutoModelForCausalLM.from_pretrained(self.cfg.model, revision=self.cfg.revision, dtype=dtype)
        except OSError as err:
            raise RuntimeError(
                f"judge={self.name}: cannot load '{self.cfg.model}' ({err}). Download it first "
                "(it may be gated: accept its licence on the hub) or set judge.model to a local "
                "directory holding it."
            ) from err
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model.to(device).eval(), tokenizer

    def clip(self, tokenizer, response: str) -> str:
        ids = tokenizer(response, add_special_tokens=False)["input_ids"][: self.cfg.max_response_tokens]
        return tokenizer.decode(ids, skip_special_tokens=True)

    @torch.inference_mode()
    def _decode(self, texts: list[str]) -> list[str]:
        model, tokenizer = self._loaded
        out_texts = []
        for start in range(0, len(texts), self.cfg.batch_size):
            enc = tokenizer(
                texts[start : start + self.cfg.batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=self.add_special_tokens,
            ).to(model.device)
            out = model.generate(
                **enc, max_new_tokens=self.new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            out_texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return out_texts


class HarmBenchClassifierJudge(_LocalModelJudge):
    name = "harmbench_cls"
    add_special_tokens = True  # HarmBench's vLLM call tokenizes the prompt string with BOS

    @cached_property
    def prompt_text(self) -> str:
        if self.cfg.prompt_file:
            path = Path(self.cfg.prompt_file)
            if not path.is_file():
                raise FileNotFoundError(f"judge.prompt_file '{path}' does not exist")
            return read_prompt(path)
        try:
            records = published_records("harmbench_cls_prompt", self.cfg)
        except DatasetNotFoundError as err:
            local = Path(data_paths(self.cfg)[0] or "<paths.data_dir>") / "harmbench" / "eval_utils.py"
            raise DatasetNotFoundError(
                f"judge=harmbench_cls needs HarmBench's classifier prompt (LLAMA2_CLS_PROMPT): put HarmBench's "
                f"eval_utils.py (github.com/centerforaisafety/HarmBench) at {local} (paths.data_dir / "
                f"QRESAFE_DATA_DIR), or allow the download, or set judge.prompt_file. ({err})"
            ) from err
        return next(r["template"] for r in records if r["name"] == "prompt")

    @property
    def prompt_id(self):
        return content_key(self.prompt_text, length=12)

    def clip(self, tokenizer, response: str) -> str:
        """HarmBench's clipping: encode with truncation on the right to max_response_tokens (special
        tokens included), decode without them."""
        tokenizer.truncation_side = "right"
        ids = tokenizer.encode(response, max_length=self.cfg.max_response_tokens, truncation=True)
        return tokenizer.decode(ids, skip_special_tokens=True)

    def harm(self, pairs):
        model, tokenizer = self._loaded
        texts = [self.prompt_text.format(behavior=p, generation=self.clip(tokenizer, r)) for p, r in pairs]
        verdicts = []
        for text in self._decode(texts):
            yes = parse_yes_no(text)
            verdicts.append(
                failed(f"unparseable classifier token {text!r}", "harm", error_kind="unparseable")
                if yes is None
                else {"jailbroken": yes, "judge_reply": text}
            )
        return verdicts


class LlamaGuardJudge(_LocalModelJudge):
    name = "llama_guard"
    capabilities = frozenset({"harm"})
    new_tokens = 12
    prompt_id = "tokenizer_chat_template"

    @staticmethod
    def moderation_prompt(tokenizer, prompt: str, response: str) -> str:
        """The tokenizer's chat template applied to the (user, assistant) turns, as Meta's cards do. The
        8B card passes string contents, the 1B card typed parts ([{"type": "text", ...}]); a template that
        reads only parts drops plain strings, so parts are used when the strings do not reach the text."""

        def render(wrap):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": wrap(prompt)}, {"role": "assistant", "content": wrap(response)}],
                tokenize=False,
            )

        def shows(text):
            return prompt.strip() in text and response.strip() in text

        text = render(lambda s: s)
        if not shows(text):
            text = render(lambda s: [{"type": "text", "text": s}])
        if not shows(text):
            raise ValueError(
                "judge=llama_guard: the tokenizer's chat template drops the conversation text (as "
                "strings and as typed parts); is judge.model a Llama Guard checkpoint?"
            )
        return text

    def harm(self, pairs):
        model, tokenizer = self._loaded
        if not tokenizer.chat_template:
            raise ValueError(
                f"judge=llama_guard: the tokenizer of '{self.cfg.model}' has no chat template; "
                "Llama Guard's template builds the moderation prompt"
            )
        texts = [self.moderation_prompt(tokenizer, p, self.clip(tokenizer, r)) for p, r in pairs]
        verdicts = []
        for text in self._decode(texts):
            unsafe, categories = parse_llama_guard(text)
            verdicts.append(
                failed(f"unparseable Llama Guard output {text!r}", "harm", error_kind="unparseable")
                if unsafe is None
                else {"jailbroken": unsafe, "categories": categories, "judge_reply": text}
            )
        return verdicts
