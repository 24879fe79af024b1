"""Datasets by name: each has a public source (URL) and a file name inside a local data copy.

Resolution order: ``<data_dir>/<local_file>`` when a data directory is configured (tests and CI
point ``QRESAFE_DATA_DIR`` at ``../shared/data``), else a previously downloaded copy in
``<cache_dir>/datasets/``, else a download from the public URL (or, for hub-only sets such as
UltraChat, the first rows of a hub split through ``datasets``). The files are never committed.
Sets written for this project ship inside the package (``package_file``). A name that is a path to
a ``.json``/``.jsonl``/``.parquet`` file loads that file as prompt/response pairs (user-supplied data),
and a ``hf://owner/name[:split]`` URI the rows of a hub split (data/hub.py).

Pinned sources: each URL names a commit where one is known, and ``sha256`` is the checksum of the public
file (the byte-for-byte copies in ../shared/data); a download must match it or it is refused and not kept
(data/pinned.py). Hub-only sets carry a ``revision`` (None where unknown: the hub's main branch is read).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qresafe_exp.cache import write_text_atomic
from qresafe_exp.data import judge_prompts, loaders, pinned
from qresafe_exp.data.hub import hub_rows, is_hub_uri, parse_hub_uri

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    local_file: str  # path inside a data directory laid out like ../shared/data
    url: str | None
    parse: Callable[[Path], list[dict]]
    hub_id: str | None = None  # the hub mirror, for reference in docs/reports
    license: str = ""
    hub_split: str | None = None  # set for hub-only datasets: fetched through `datasets`
    hub_rows: int = 2000  # how many rows of the split to fetch and keep
    hub_config: str | None = None  # the hub dataset's configuration name, where it has several
    package_file: str | None = None  # inside qresafe_exp/data: written for this project
    sha256: str | None = None  # of the file at ``url`` (None: not pinned, see docs/data.md)
    revision: str | None = None  # hub-only sets: the hub commit read (None: unknown, main)


PACKAGE_DATA = Path(__file__).resolve().parent


_RAW = "https://raw.githubusercontent.com"
_QI_SRC = f"{_RAW}/LLM-Tuning-Safety/LLMs-Finetuning-Safety/8a3b38f"  # the commit shared/data/judge_prompts names
# Commits: named by ../shared/data/README.md, or a stored version of the file whose length and text match the
# local copy. ``main`` where no matching commit was found; the sha256 still pins the file there, so an
# upstream edit makes the download fail loudly instead of changing the data (docs/data.md, "Pinned sources").
_ADVBENCH = f"{_RAW}/llm-attacks/llm-attacks/098262ed"
_XSTEST = f"{_RAW}/paul-rottger/exaggerated-safety/475f10bf0a3d6a9dfb174b6de1a38afbfdff98a5"
_REFUSAL_DIR = f"{_RAW}/andyrdt/refusal_direction/0b9c8bc56a73b42f595fd173156d4aefe9a9143c"
_ALPACA_EVAL = f"{_RAW}/tatsu-lab/alpaca_eval"
_ALPACA_EVAL_AT = f"{_ALPACA_EVAL}/2a8a6f3a4d535a3d11e5c3c8e74d1841d19fe693"
_FASTCHAT = f"{_RAW}/lm-sys/FastChat"
_FASTCHAT_AT = f"{_FASTCHAT}/589532dcfa83700f950b9aa3983416c543afabc0"
_HARMBENCH = f"{_RAW}/centerforaisafety/HarmBench/main"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "advbench",
            "advbench/harmful_behaviors.csv",
            f"{_ADVBENCH}/data/advbench/harmful_behaviors.csv",
            loaders.advbench,
            hub_id="walledai/AdvBench",
            license="MIT",
            sha256="6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1",
        ),
        DatasetSpec(
            "xstest",
            "xstest/xstest_prompts.csv",
            f"{_XSTEST}/xstest_prompts.csv",
            loaders.xstest,
            hub_id="walledai/XSTest",
            license="CC-BY-4.0",
            sha256="11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a",
        ),
        DatasetSpec(
            "alpaca_en_demo",
            "alpaca_en_demo_llamafactory/alpaca_en_demo.json",
            f"{_RAW}/hiyouga/LLaMA-Factory/main/data/alpaca_en_demo.json",
            loaders.alpaca_pairs,
            license="CC-BY-NC-4.0",
            sha256="bcc37c64db1a739a0789a1b81f251146fcf4459f903474bc9e3c21bbb5628318",
        ),
        DatasetSpec(
            "alpaca_eval",
            "alpaca_eval/alpaca_eval_text_davinci_003_reference.json",
            f"{_ALPACA_EVAL_AT}/results/text_davinci_003/model_outputs.json",
            loaders.alpaca_eval_reference,
            hub_id="tatsu-lab/alpaca_eval",
            license="CC-BY-NC-4.0",
            sha256="af0bc112f08c88bf589bbfe6fc1036806d0a0f6fec9c4d5a4db860f5afe73b4b",
        ),
        DatasetSpec(
            "harmful_train",
            "refusal_direction/splits/harmful_train.json",
            f"{_REFUSAL_DIR}/dataset/splits/harmful_train.json",
            loaders.instruction_list,
            license="Apache-2.0",
            sha256="8f5c0eac0efd2a7f99084bbe8d0de2c465e31b1997184783c917969d9de9ece1",
        ),
        DatasetSpec(
            "harmful_val",
            "refusal_direction/splits/harmful_val.json",
            f"{_REFUSAL_DIR}/dataset/splits/harmful_val.json",
            loaders.instruction_list,
            license="Apache-2.0",
            sha256="305f1d1e6dfa6c50a32d24a18ef815f42b5441eb83e6d7767d242107162fd9f4",
        ),
        DatasetSpec(
            "catqa",
            "harmfulqa_redinstruct/catqa_english.json",
            None,
            loaders.categorical_qa,
            hub_id="declare-lab/CategoricalHarmfulQA",
            license="Apache-2.0",
        ),
        DatasetSpec(
            "harmbench_val",
            "harmbench/harmbench_behaviors_text_val.csv",
            f"{_HARMBENCH}/data/behavior_datasets/harmbench_behaviors_text_val.csv",
            loaders.harmbench,
            hub_id="walledai/HarmBench",
            license="MIT",
            sha256="7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534",
        ),
        DatasetSpec(
            "harmbench_test",
            "harmbench/harmbench_behaviors_text_test.csv",
            f"{_HARMBENCH}/data/behavior_datasets/harmbench_behaviors_text_test.csv",
            loaders.harmbench,
            hub_id="walledai/HarmBench",
            license="MIT",
            sha256="75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29",
        ),
        DatasetSpec(
            "hh_rlhf_harmless",
            "hh_rlhf_harmless/test.jsonl.gz",
            f"{_RAW}/anthropics/hh-rlhf/354e5c3/harmless-base/test.jsonl.gz",
            loaders.hh_rlhf_single_turn,
            hub_id="Anthropic/hh-rlhf",
            license="MIT",
            sha256="ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        ),
        DatasetSpec(
            "hh_rlhf_rejected",
            "hh_rlhf_harmless/test.jsonl.gz",
            f"{_RAW}/anthropics/hh-rlhf/354e5c3/harmless-base/test.jsonl.gz",
            loaders.hh_rlhf_rejected,
            hub_id="Anthropic/hh-rlhf",
            license="MIT",
            sha256="ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        ),
        DatasetSpec(
            "harmfulqa",
            "harmfulqa_redinstruct/harmfulqa.json",
            None,
            loaders.harmfulqa,
            hub_id="declare-lab/HarmfulQA",
            license="Apache-2.0",
        ),
        DatasetSpec(
            "dangerousqa", "harmfulqa_redinstruct/dangerousqa.json", None, loaders.question_list, license="Apache-2.0"
        ),
        DatasetSpec(
            "oktest",
            "oktest/OKTest.csv",
            None,
            loaders.prompt_column_csv,
            license="none stated (research evaluation only)",
        ),
        DatasetSpec(
            "beavertails_eval",
            "beavertails_eval/test.jsonl",
            None,
            loaders.beavertails_eval,
            hub_id="PKU-Alignment/BeaverTails-Evaluation",
            hub_split="test",
            hub_rows=700,
            license="CC-BY-NC-4.0",
            revision=None,
        ),
        DatasetSpec(
            "safetybench_zh",
            "safetybench/test_zh_subset.json",
            None,
            loaders.safetybench_questions,
            hub_id="thu-coai/SafetyBench",
            license="MIT",
        ),
        DatasetSpec(
            "safetybench_zh_answers",
            "safetybench/test_answers_zh_subset.json",
            None,
            loaders.json_document,
            license="MIT",
        ),
        DatasetSpec(
            "safetybench_en",
            "safetybench/test_en.jsonl",
            None,
            loaders.safetybench_questions,
            hub_id="thu-coai/SafetyBench",
            hub_config="test",
            hub_split="en",
            hub_rows=11435,
            license="MIT",
            revision=None,
        ),
        DatasetSpec(
            "safetybench_en_answers", "safetybench/test_answers_en.json", None, loaders.json_document, license="MIT"
        ),
        DatasetSpec(
            "mt_bench",
            "mt_bench/question.jsonl",
            f"{_FASTCHAT_AT}/fastchat/llm_judge/data/mt_bench/question.jsonl",
            loaders.mt_bench_questions,
            license="Apache-2.0",
            sha256="119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
        ),
        DatasetSpec(
            "mt_bench_references",
            "mt_bench/reference_answer_gpt-4.jsonl",
            f"{_FASTCHAT}/main/fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
            loaders.mt_bench_references,
            license="Apache-2.0",
            sha256="f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
        ),
        DatasetSpec(
            "mt_bench_judge_prompts",
            "mt_bench/judge_prompts.jsonl",
            f"{_FASTCHAT}/main/fastchat/llm_judge/data/judge_prompts.jsonl",
            loaders.jsonl_rows,
            license="Apache-2.0",
            sha256="fd283293406d024f44c174b094ef48031d0687a4682fd3a56b29b138f80281b6",
        ),
        DatasetSpec(
            "alpaca_eval2",
            "alpaca_eval/alpaca_eval_gpt4_1106_preview_reference.json",
            f"{_ALPACA_EVAL}/main/results/gpt4_1106_preview/model_outputs.json",
            loaders.alpaca_eval_reference,
            hub_id="tatsu-lab/alpaca_eval",
            license="CC-BY-NC-4.0",
            sha256="83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4",
        ),
        DatasetSpec(
            "ultrachat_200k",
            "ultrachat_200k/train_sft_head.jsonl",
            None,
            loaders.prompt_response_file,
            hub_id="HuggingFaceH4/ultrachat_200k",
            hub_split="train_sft",
            license="MIT",
            revision=None,
        ),
        # Published judge prompts (read verbatim at run time, never copied into the repository). No sha256:
        # the URLs serve whole .py files, the offline copies are the bare template (not the same bytes).
        DatasetSpec(
            "qi2023_judge_meta_policy",
            "judge_prompts/qi2023_gpt4_judge_meta_policy.txt",
            f"{_QI_SRC}/llama2/safety_evaluation/eval_utils/openai_gpt4_judge.py",
            judge_prompts.qi_judge_template,
            license="MIT",
        ),
        DatasetSpec(
            "qi2023_judge_openai_policy",
            "judge_prompts/qi2023_gpt4_judge_openai_policy.txt",
            f"{_QI_SRC}/gpt-3.5/eval_utils/openai_policy_gpt4_judge.py",
            judge_prompts.qi_judge_template,
            license="MIT",
        ),
        DatasetSpec(
            "harmbench_cls_prompt",
            "harmbench/eval_utils.py",
            f"{_HARMBENCH}/eval_utils.py",
            judge_prompts.harmbench_cls_prompts,
            license="MIT",
        ),
        DatasetSpec(
            "qos_templates",
            "",
            None,
            loaders.qos_templates,
            package_file="qos/templates.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "contrast_benign",
            "",
            None,
            loaders.contrast_benign,
            package_file="testbed/contrast_benign.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "contrast_benign_more",
            "",
            None,
            loaders.contrast_benign_more,
            package_file="testbed/contrast_benign_more.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "contrast_question_forms",
            "",
            None,
            loaders.contrast_question_forms,
            package_file="testbed/contrast_question_forms.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "contrast_alarming_contexts",
            "",
            None,
            loaders.contrast_alarming_contexts,
            package_file="testbed/contrast_alarming_contexts.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "contrast_patch_heldout",
            "",
            None,
            loaders.contrast_patch_heldout,
            package_file="testbed/contrast_patch_heldout.json",
            license="written for qresafe_exp",
        ),
        DatasetSpec(
            "aoa_identity",
            "",
            None,
            loaders.aoa_identity,
            package_file="calib/risk2_aoa.json",
            license="written for qresafe_exp",
        ),
    ]
}


FILE_SUFFIXES = (".json", ".jsonl", ".parquet")


def is_file_name(name: str) -> bool:
    return name.endswith(FILE_SUFFIXES)


def is_user_source(name: str) -> bool:
    """A file or hub URI of the user's own (not a registry name): it has no offline stand-in."""
    return is_file_name(name) or is_hub_uri(name)


def resolve_file(name: str, data_dir: str | None, cache_dir: str | None, key: str = "dataset") -> Path:
    if is_hub_uri(name):
        return hub_snapshot(name, cache_dir, key)
    if is_file_name(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(
                f"dataset file '{name}' does not exist. Give the path of a .json/.jsonl/"
                ".parquet file of prompt/response pairs, a hf://owner/name[:split] URI, or "
                f"a registry name: {', '.join(sorted(DATASETS))}"
            )
        return path
    if name not in DATASETS:
        raise DatasetNotFoundError(
            f"unknown dataset '{name}'. Allowed: {', '.join(sorted(DATASETS))}, "
            "the path of a .json/.jsonl/.parquet file of prompt/response pairs, or a "
            "hf://owner/name[:split] URI"
        )
    spec = DATASETS[name]
    if spec.package_file:
        return PACKAGE_DATA / spec.package_file
    if data_dir:
        local = Path(data_dir) / spec.local_file
        if local.exists():
            pinned.warn_if_different(name, local, spec.sha256)
            return local
        if not Path(data_dir).is_dir():
            raise DatasetNotFoundError(
                f"data directory '{data_dir}' (paths.data_dir / QRESAFE_DATA_DIR) does not exist. "
                "Point it at a local copy of the datasets (e.g. ../shared/data) or unset it to download."
            )
    downloaded = Path(cache_dir or ".") / "datasets" / spec.local_file
    # a copy cached before the pin (or edited since) is fetched again, and checked
    if downloaded.exists() and (spec.sha256 is None or pinned.matches(downloaded, spec.sha256)):
        return downloaded
    if spec.hub_split:
        return _fetch_hub_split(spec, downloaded)
    if not spec.url:
        raise DatasetNotFoundError(f"dataset '{name}': no local copy and no public URL")
    try:
        log.info("downloading dataset %s from %s", name, spec.url)
        pinned.fetch_pinned(name, spec.url, downloaded, spec.sha256)
    except pinned.ChecksumMismatchError as err:
        raise DatasetNotFoundError(str(err)) from err
    except OSError as err:
        where = f"'{Path(data_dir) / spec.local_file}'" if data_dir else "no data directory set"
        raise DatasetNotFoundError(
            f"dataset '{name}' is not available: local copy {where}; download from {spec.url} "
            f"failed ({err}). Set QRESAFE_DATA_DIR (or paths.data_dir) to a directory holding "
            f"'{spec.local_file}'."
        ) from err
    return downloaded


def hub_snapshot(uri: str, cache_dir: str | None, key: str) -> Path:
    """The rows of a hub split as JSONL in ``<cache_dir>/datasets/hf/``, rewritten on every run (the
    ``datasets`` cache is what persists): a record of what this run read, whose content keys the cache."""
    rows = hub_rows(uri, key)
    if not rows:
        raise DatasetNotFoundError(f"{key}={uri}: the split has no rows; give a split that has some")
    out = Path(cache_dir or ".") / "datasets" / "hf" / f"{parse_hub_uri(uri, key).slug}.jsonl"
    write_text_atomic(out, "".join(json.dumps(row, default=str) + "\n" for row in rows))
    return out


_UNREACHABLE: dict[str, str] = {}  # hub sets that failed in this process: fail fast the next time


def _fetch_hub_split(spec: DatasetSpec, out: Path) -> Path:
    """First ``hub_rows`` rows of a hub split, each row as one JSON line."""
    if spec.name in _UNREACHABLE:
        raise DatasetNotFoundError(_UNREACHABLE[spec.name])
    try:
        from datasets import load_dataset

        log.info("fetching %s[:%d] of %s from the hub", spec.hub_split, spec.hub_rows, spec.hub_id)
        rows = load_dataset(
            spec.hub_id, spec.hub_config, split=f"{spec.hub_split}[:{spec.hub_rows}]", revision=spec.revision
        )
    except Exception as err:  # offline, hub down, gated: all mean "not available here"
        _UNREACHABLE[spec.name] = (
            f"dataset '{spec.name}' ({spec.hub_id}) is not reachable on the hub ({type(err).__name__}: "
            f"{str(err)[:200]}). It has no offline copy; use another dataset or a local .jsonl file."
        )
        raise DatasetNotFoundError(_UNREACHABLE[spec.name]) from err
    lines = [json.dumps(dict(row)) for row in rows]
    write_text_atomic(out, "\n".join(lines) + "\n")
    return out


def load_records(name: str, data_dir: str | None = None, cache_dir: str | None = None) -> list[dict]:
    path = resolve_file(name, data_dir, cache_dir)  # raises a clear error for unknown names
    if is_user_source(name):
        return loaders.prompt_response_file(path, source=name)
    return DATASETS[name].parse(path)
