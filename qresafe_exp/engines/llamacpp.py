"""llama.cpp in-process (llama-cpp-python's ``Llama``) as a generation engine: GGUF cells (quant=gguf) run
their own file, full-precision checkpoints are converted once (llamacpp/convert.py, engine.gguf_dtype) and
cached as a ``gguf`` artifact of the model. A fast CPU engine for FP and GGUF cells.

Prompts go in as the token ids of the transformers tokenizer (the rendered chat text, no extra special
tokens), so llama.cpp and the transformers engine see identical inputs; generation stops on the same ids
(generation_config's eos and the tokenizer's) and is decoded by the same tokenizer. Greedy is llama.cpp's
greedy sampler; sampling draws with a seed per prompt (spec.seed + index). Prompts are run sorted, so the
shared chat prefix (system prompt) stays in llama.cpp's KV cache from one prompt to the next;
``engine.parallel`` > 1 runs that many model instances side by side (weights mmapped once), each with
``threads / parallel`` threads.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

from qresafe_exp.engines.vllm import stop_ids_of
from qresafe_exp.formats import format_of, sidecars_in
from qresafe_exp.formats.gguf import gguf_file_in

log = logging.getLogger(__name__)
GGUF_STAGE_VERSION = 1


def engine_threads(engine_cfg) -> int:
    return int(engine_cfg.get("threads") or os.cpu_count() or 1)


def servable_gguf(path: str, engine_cfg, artifacts=None, model_key: str | None = None) -> Path:
    """The GGUF file llama.cpp runs for the checkpoint at ``path``: its own (a GGUF cell), or a conversion
    of a full-precision checkpoint, cached under the model's key. Anything else is refused in one line."""
    found = gguf_file_in(path)
    if found is not None:
        return found
    fmt = format_of(path)
    extra = sidecars_in(path)
    if fmt.name != "plain" or extra:
        what = f"a {fmt.name} checkpoint" if fmt.name != "plain" else f"a checkpoint with {', '.join(extra)}"
        raise ValueError(
            f"engine=llamacpp runs GGUF cells (quant=gguf) and full-precision checkpoints; {path} is "
            f"{what}. Run this cell with engine=hf"
        )
    from qresafe_exp.llamacpp.convert import CONVERTER_VERSION, convert

    dtype = engine_cfg.get("gguf_dtype") or "f32"
    if artifacts is None or model_key is None:
        raise ValueError(
            "engine=llamacpp converts a full-precision checkpoint into the artifact cache: "
            "give EngineFactory the cache and the model key"
        )
    art = artifacts.get_or_build(
        "gguf",
        {"dtype": dtype, "converter": CONVERTER_VERSION},
        lambda out: convert(path, out / "model.gguf", dtype),
        upstream=[model_key],
        version=GGUF_STAGE_VERSION,
    )
    return art.path / "model.gguf"


class LlamaCppEngine:
    name = "llamacpp"

    @classmethod
    def check(cls, engine_cfg, device) -> None:
        from qresafe_exp.llamacpp import llama_cpp_missing
        from qresafe_exp.llamacpp.convert import DTYPES
        from qresafe_exp.preflight import check_count

        if missing := llama_cpp_missing():
            raise ValueError(f"engine=llamacpp: {missing}, or use engine=hf")
        for key, what in (
            ("threads", "CPU threads (null = all cores)"),
            ("parallel", "model instances side by side"),
            ("n_ctx", "tokens of context per instance"),
            ("n_batch", "prompt tokens per llama.cpp batch"),
        ):
            check_count(f"engine.{key}", engine_cfg.get(key), 1, what)
        if engine_cfg.gguf_dtype not in DTYPES:
            raise ValueError(
                f"engine.gguf_dtype={engine_cfg.gguf_dtype}: the GGUF a full-precision checkpoint is "
                f"converted to for llama.cpp. Allowed: {', '.join(DTYPES)}"
            )

    @classmethod
    def cache_tag(cls, engine_cfg, spec, dtype) -> str:
        # llama.cpp's kernels give other numerics than transformers': always its own outputs
        return "llamacpp" if engine_cfg.gguf_dtype == "f32" else f"llamacpp-{engine_cfg.gguf_dtype}"

    @classmethod
    def from_factory(cls, factory) -> LlamaCppEngine:
        return cls(
            factory.path,
            factory.tokenizer,
            factory.cfg,
            seed=factory.seed,
            scoring_model=lambda: factory.load_model(factory.path, factory.device),
            artifacts=factory.artifacts,
            model_key=factory.model_key,
        )

    def __init__(
        self,
        path: str,
        tokenizer,
        engine_cfg,
        seed: int = 0,
        scoring_model=None,
        artifacts=None,
        model_key: str | None = None,
    ):
        from qresafe_exp.llamacpp import INSTALL_HINT, llama_cpp_missing

        if llama_cpp_missing():
            raise ImportError(f"engine=llamacpp: {INSTALL_HINT}")
        self.path, self.tokenizer, self.cfg, self.seed = path, tokenizer, engine_cfg, seed
        self.gguf = servable_gguf(path, engine_cfg, artifacts, model_key)
        self.stop_ids = set(stop_ids_of(path, tokenizer))
        self.parallel = int(engine_cfg.get("parallel") or 1)
        self.threads = max(1, engine_threads(engine_cfg) // self.parallel)
        self._instances: list = []
        self._scoring_model, self._model = scoring_model, None
        self.stats = {"generated_tokens": 0, "generate_seconds": 0.0}

    def _llm(self, slot: int):
        from qresafe_exp.llamacpp import load_llama

        while len(self._instances) <= slot:
            self._instances.append(
                load_llama(
                    str(self.gguf),
                    n_ctx=int(self.cfg.n_ctx),
                    n_batch=int(self.cfg.n_batch),
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    seed=self.seed,
                    verbose=False,
                )
            )
        return self._instances[slot]

    @property
    def model(self):
        """The transformers model, for suites that score log-probabilities (loaded on first use)."""
        if self._model is None:
            log.info("loading the transformers model beside llama.cpp for log-probability scoring")
            self._model = self._scoring_model()
        return self._model

    def close(self) -> None:
        for llm in self._instances:
            llm.close()
        self._instances = []

    def _one(self, llm, ids: list[int], spec, index: int) -> list[int]:
        if len(ids) + spec.max_new_tokens > llm.n_ctx():
            raise ValueError(
                f"engine=llamacpp: a prompt of {len(ids)} tokens + eval.max_new_tokens="
                f"{spec.max_new_tokens} exceeds engine.n_ctx={llm.n_ctx()}; raise engine.n_ctx"
            )
        kwargs = dict(temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)
        if spec.do_sample:
            llm.set_seed(spec.seed + index)  # reproducible whatever the order or slot
            kwargs = dict(temp=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, min_p=0.0, repeat_penalty=1.0)
        out: list[int] = []
        for token in llm.generate(ids, reset=True, **kwargs):
            if token in self.stop_ids:
                break
            out.append(token)
            if len(out) == spec.max_new_tokens:
                break
        return out

    def generate(self, texts: list[str], spec, on_batch=None, desc: str = "generate") -> list[str]:
        from tqdm.auto import tqdm

        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: ids[i])  # neighbours share their longest prefix
        slices = [order[k :: self.parallel] for k in range(self.parallel)]
        outputs: list[str | None] = [None] * len(texts)
        started = time.time()
        done: queue.Queue = queue.Queue()  # (index, text) or (None, error) from the slots

        def run(slot: int) -> None:
            try:
                llm = self._llm(slot)
                for i in slices[slot]:
                    tokens = self._one(llm, ids[i], spec, i)
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                    done.put((i, text.strip(), len(tokens)))
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
                done.put((None, err, 0))

        for slot in range(self.parallel):  # built here, one at a time: llama.cpp's loader is not thread-safe
            self._llm(slot)
        threads = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in range(self.parallel)]
        for thread in threads:
            thread.start()
        # results are handed on from this thread: on_batch writes the request cache (sqlite, one thread)
        for _ in tqdm(range(len(texts)), desc=desc, unit="prompt"):
            i, text, n_tokens = done.get()
            if i is None:
                raise text
            outputs[i] = text
            self.stats["generated_tokens"] += n_tokens
            if on_batch is not None:
                on_batch([i], [text])
        for thread in threads:
            thread.join()
        self.stats["generate_seconds"] += time.time() - started
        return outputs  # type: ignore[return-value]
