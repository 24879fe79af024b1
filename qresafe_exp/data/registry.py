"""Datasets by name: each has a public source (URL) and a file name inside a local data copy.

Resolution order: ``<data_dir>/<local_file>`` when a data directory is configured (tests and CI
point ``QRESAFE_DATA_DIR`` at ``../shared/data``), else a previously downloaded copy in
``<cache_dir>/datasets/``, else a download from the public URL (or, for hub-only sets such as
UltraChat, the first rows of a hub split through ``datasets``). The files are never committed.
Sets written for this project ship inside the package (``package_file``). A name that is a path to
a ``.json``/``.jsonl`` file loads that file as prompt/response pairs (user-supplied data).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from qresafe_exp.cache import write_text_atomic
from qresafe_exp.data import judge_prompts, loaders

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    local_file: str  # path inside a data directory laid out like ../shared/data
    url: Optional[str]
    parse: Callable[[Path], list[dict]]
    hub_id: Optional[str] = None  # the hub mirror, for reference in docs/reports
    license: str = ""
    hub_split: Optional[str] = None  # set for hub-only datasets: fetched through `datasets`
    hub_rows: int = 2000  # how many rows of the split to fetch and keep
    hub_config: Optional[str] = None  # the hub dataset's configuration name, where it has several
    package_file: Optional[str] = None  # inside qresafe_exp/data: written for this project


PACKAGE_DATA = Path(__file__).resolve().parent


_RAW = "https://raw.githubusercontent.com"
_QI_SRC = f"{_RAW}/LLM-Tuning-Safety/LLMs-Finetuning-Safety/8a3b38f"  # the commit shared/data/judge_prompts names

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("advbench", "advbench/harmful_behaviors.csv",
                    f"{_RAW}/llm-attacks/llm-attacks/main/data/advbench/harmful_behaviors.csv",
                    loaders.advbench, hub_id="walledai/AdvBench", license="MIT"),
        DatasetSpec("xstest", "xstest/xstest_prompts.csv",
                    f"{_RAW}/paul-rottger/exaggerated-safety/main/xstest_prompts.csv",
                    loaders.xstest, hub_id="walledai/XSTest", license="CC-BY-4.0"),
        DatasetSpec("alpaca_en_demo", "alpaca_en_demo_llamafactory/alpaca_en_demo.json",
                    f"{_RAW}/hiyouga/LLaMA-Factory/main/data/alpaca_en_demo.json",
                    loaders.alpaca_pairs, license="CC-BY-NC-4.0"),
        DatasetSpec("alpaca_eval", "alpaca_eval/alpaca_eval_text_davinci_003_reference.json",
                    f"{_RAW}/tatsu-lab/alpaca_eval/main/results/text_davinci_003/model_outputs.json",
                    loaders.alpaca_eval_reference, hub_id="tatsu-lab/alpaca_eval", license="CC-BY-NC-4.0"),
        DatasetSpec("harmful_train", "refusal_direction/splits/harmful_train.json",
                    f"{_RAW}/andyrdt/refusal_direction/main/dataset/splits/harmful_train.json",
                    loaders.instruction_list, license="Apache-2.0"),
        DatasetSpec("harmful_val", "refusal_direction/splits/harmful_val.json",
                    f"{_RAW}/andyrdt/refusal_direction/main/dataset/splits/harmful_val.json",
                    loaders.instruction_list, license="Apache-2.0"),
        DatasetSpec("catqa", "harmfulqa_redinstruct/catqa_english.json",
                    None, loaders.categorical_qa, hub_id="declare-lab/CategoricalHarmfulQA", license="Apache-2.0"),
        DatasetSpec("harmbench_val", "harmbench/harmbench_behaviors_text_val.csv",
                    f"{_RAW}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_val.csv",
                    loaders.harmbench, hub_id="walledai/HarmBench", license="MIT"),
        DatasetSpec("harmbench_test", "harmbench/harmbench_behaviors_text_test.csv",
                    f"{_RAW}/centerforaisafety/HarmBench/main/data/behavior_datasets/harmbench_behaviors_text_test.csv",
                    loaders.harmbench, hub_id="walledai/HarmBench", license="MIT"),
        DatasetSpec("hh_rlhf_harmless", "hh_rlhf_harmless/test.jsonl.gz",
                    f"{_RAW}/anthropics/hh-rlhf/main/harmless-base/test.jsonl.gz",
                    loaders.hh_rlhf_single_turn, hub_id="Anthropic/hh-rlhf", license="MIT"),
        DatasetSpec("hh_rlhf_rejected", "hh_rlhf_harmless/test.jsonl.gz",
                    f"{_RAW}/anthropics/hh-rlhf/main/harmless-base/test.jsonl.gz",
                    loaders.hh_rlhf_rejected, hub_id="Anthropic/hh-rlhf", license="MIT"),
        DatasetSpec("harmfulqa", "harmfulqa_redinstruct/harmfulqa.json", None, loaders.harmfulqa, hub_id="declare-lab/HarmfulQA", license="Apache-2.0"),
        DatasetSpec("dangerousqa", "harmfulqa_redinstruct/dangerousqa.json", None, loaders.question_list, license="Apache-2.0"),
        DatasetSpec("oktest", "oktest/OKTest.csv", None, loaders.prompt_column_csv,
                    license="none stated (research evaluation only)"),
        DatasetSpec("beavertails_eval", "beavertails_eval/test.jsonl", None, loaders.beavertails_eval,
                    hub_id="PKU-Alignment/BeaverTails-Evaluation", hub_split="test", hub_rows=700,
                    license="CC-BY-NC-4.0"),
        DatasetSpec("safetybench_zh", "safetybench/test_zh_subset.json", None, loaders.safetybench_questions,
                    hub_id="thu-coai/SafetyBench", license="MIT"),
        DatasetSpec("safetybench_zh_answers", "safetybench/test_answers_zh_subset.json", None,
                    loaders.json_document, license="MIT"),
        DatasetSpec("safetybench_en", "safetybench/test_en.jsonl", None, loaders.safetybench_questions,
                    hub_id="thu-coai/SafetyBench", hub_config="test", hub_split="en", hub_rows=11435, license="MIT"),
        DatasetSpec("safetybench_en_answers", "safetybench/test_answers_en.json", None,
                    loaders.json_document, license="MIT"),
        DatasetSpec("mt_bench", "mt_bench/question.jsonl",
                    f"{_RAW}/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench/question.jsonl",
                    loaders.mt_bench_questions, license="Apache-2.0"),
        DatasetSpec("mt_bench_references", "mt_bench/reference_answer_gpt-4.jsonl",
                    f"{_RAW}/lm-sys/FastChat/main/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
                    loaders.mt_bench_references, license="Apache-2.0"),
        DatasetSpec("mt_bench_judge_prompts", "mt_bench/judge_prompts.jsonl",
                    f"{_RAW}/lm-sys/FastChat/main/fastchat/llm_judge/data/judge_prompts.jsonl",
                    loaders.jsonl_rows, license="Apache-2.0"),
        DatasetSpec("alpaca_eval2", "alpaca_eval/alpaca_eval_gpt4_1106_preview_reference.json",
                    f"{_RAW}/tatsu-lab/alpaca_eval/main/results/gpt4_1106_preview/model_outputs.json",
                    loaders.alpaca_eval_reference, hub_id="tatsu-lab/alpaca_eval", license="CC-BY-NC-4.0"),
        DatasetSpec("ultrachat_200k", "ultrachat_200k/train_sft_head.jsonl", None, loaders.prompt_response_file,
                    hub_id="HuggingFaceH4/ultrachat_200k", hub_split="train_sft", license="MIT"),
        # Published judge prompts (read verbatim at run time, never copied into the repository)
        DatasetSpec("qi2023_judge_meta_policy", "judge_prompts/qi2023_gpt4_judge_meta_policy.txt",
                    f"{_QI_SRC}/llama2/safety_evaluation/eval_utils/openai_gpt4_judge.py",
                    judge_prompts.qi_judge_template, license="MIT"),
        DatasetSpec("qi2023_judge_openai_policy", "judge_prompts/qi2023_gpt4_judge_openai_policy.txt",
                    f"{_QI_SRC}/gpt-3.5/eval_utils/openai_policy_gpt4_judge.py",
                    judge_prompts.qi_judge_template, license="MIT"),
        DatasetSpec("harmbench_cls_prompt", "harmbench/eval_utils.py",
                    f"{_RAW}/centerforaisafety/HarmBench/main/eval_utils.py",
                    judge_prompts.harmbench_cls_prompts, license="MIT"),
        DatasetSpec("qos_templates", "", None, loaders.qos_templates, package_file="qos/templates.json",
                    license="written for qresafe_exp"),
        DatasetSpec("aoa_identity", "", None, loaders.aoa_identity, package_file="calib/risk2_aoa.json",
                    license="written for qresafe_exp"),
    ]
}


def is_file_name(name: str) -> bool:
    return name.endswith((".json", ".jsonl"))


def resolve_file(name: str, data_dir: Optional[str], cache_dir: Optional[str]) -> Path:
    if is_file_name(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"dataset file '{name}' does not exist. Give the path of a .json/.jsonl "
                                       "file of prompt/response pairs, or a registry name: "
                                       f"{', '.join(sorted(DATASETS))}")
        return path
    if name not in DATASETS:
        raise DatasetNotFoundError(f"unknown dataset '{name}'. Allowed: {', '.join(sorted(DATASETS))}, "
                                   "or the path of a .json/.jsonl file of prompt/response pairs")
    spec = DATASETS[name]
    if spec.package_file:
        return PACKAGE_DATA / spec.package_file
    if data_dir:
        local = Path(data_dir) / spec.local_file
        if local.exists():
            return local
        if not Path(data_dir).is_dir():
            raise DatasetNotFoundError(
                f"data directory '{data_dir}' (paths.data_dir / QRESAFE_DATA_DIR) does not exist. "
                "Point it at a local copy of the datasets (e.g. ../shared/data) or unset it to download."
            )
    downloaded = Path(cache_dir or ".") / "datasets" / spec.local_file
    if downloaded.exists():
        return downloaded
    if spec.hub_split:
        return _fetch_hub_split(spec, downloaded)
    if not spec.url:
        raise DatasetNotFoundError(f"dataset '{name}': no local copy and no public URL")
    try:
        log.info("downloading dataset %s from %s", name, spec.url)
        with urllib.request.urlopen(spec.url, timeout=30) as response:
            write_text_atomic(downloaded, response.read().decode())
    except OSError as err:
        where = f"'{Path(data_dir) / spec.local_file}'" if data_dir else "no data directory set"
        raise DatasetNotFoundError(
            f"dataset '{name}' is not available: local copy {where}; download from {spec.url} "
            f"failed ({err}). Set QRESAFE_DATA_DIR (or paths.data_dir) to a directory holding "
            f"'{spec.local_file}'."
        ) from err
    return downloaded


_UNREACHABLE: dict[str, str] = {}  # hub sets that failed in this process: fail fast the next time


def _fetch_hub_split(spec: DatasetSpec, out: Path) -> Path:
    """First ``hub_rows`` rows of a hub split, each row as one JSON line."""
    if spec.name in _UNREACHABLE:
        raise DatasetNotFoundError(_UNREACHABLE[spec.name])
    try:
        from datasets import load_dataset

        log.info("fetching %s[:%d] of %s from the hub", spec.hub_split, spec.hub_rows, spec.hub_id)
        rows = load_dataset(spec.hub_id, spec.hub_config, split=f"{spec.hub_split}[:{spec.hub_rows}]")
    except Exception as err:  # offline, hub down, gated: all mean "not available here"
        _UNREACHABLE[spec.name] = (
            f"dataset '{spec.name}' ({spec.hub_id}) is not reachable on the hub ({type(err).__name__}: "
            f"{str(err)[:200]}). It has no offline copy; use another dataset or a local .jsonl file.")
        raise DatasetNotFoundError(_UNREACHABLE[spec.name]) from err
    lines = [json.dumps(dict(row)) for row in rows]
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out


def load_records(name: str, data_dir: Optional[str] = None, cache_dir: Optional[str] = None) -> list[dict]:
    path = resolve_file(name, data_dir, cache_dir)  # raises a clear error for unknown names
    if is_file_name(name):
        return loaders.prompt_response_file(path)
    return DATASETS[name].parse(path)
