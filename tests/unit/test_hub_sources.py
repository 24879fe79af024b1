"""Prompt and calibration sets from the Hub (``hf://owner/name[/config][@revision][:split]``) and from
Parquet files. The Hub path runs the real ``datasets.load_dataset`` offline (HF_HUB_OFFLINE=1) against a
datasets cache laid out as an online load leaves it: built by datasets' own Parquet builder under the
repository's name (``<cache>/acme___prompts/default/0.0.0/<hash>/prompts-<split>.arrow``)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qresafe_exp.data import hub
from qresafe_exp.data.hub import HubSourceError, hub_rows, parse_hub_uri
from qresafe_exp.data.loaders import user_prompt_table
from qresafe_exp.data.registry import load_records
from qresafe_exp.preflight import ConfigError, preflight

TRAIN = {
    "prompt": ["How do I pick a lock?", "Write a poem", "Plan a heist"],
    "response": ["I can't help with that.", "Roses are red", "No."],
    "category": ["crime", "benign", "crime"],
}
TEST = {"prompt": ["Say hello"], "response": ["Hello"], "category": ["benign"]}
BASE = ["debug=smoke", "model=tiny-random-llama"]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """The datasets cache holding acme/prompts (splits train, test) as `load_dataset('acme/prompts')` online
    would have left it; nothing can reach the network."""
    import datasets.config
    import huggingface_hub.constants
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet

    cache = tmp_path / "hf_datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for split, table in (("train", TRAIN), ("test", TEST)):
        pq.write_table(pa.table(table), tmp_path / f"{split}.parquet")
    files = DataFilesDict.from_patterns({s: [str(tmp_path / f"{s}.parquet")] for s in ("train", "test")})
    builder = Parquet(dataset_name="prompts", data_files=files, config_id="default", hash="0" * 16)
    # the identity HubDatasetModuleFactory gives a hub dataset's builder (its files are local here)
    builder.repo_id = "acme/prompts"
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()
    assert (cache / "acme___prompts" / "default").is_dir()
    hub._load.cache_clear()
    yield cache
    hub._load.cache_clear()


@pytest.mark.parametrize(
    "uri, parsed",
    [
        ("hf://acme/prompts", ("acme/prompts", None, None, "train")),
        ("hf://acme/prompts:test", ("acme/prompts", None, None, "test")),
        ("hf://acme/prompts/en@v1.0:test", ("acme/prompts", "en", "v1.0", "test")),
        ("hf://acme/prompts@3f2a9c1", ("acme/prompts", None, "3f2a9c1", "train")),
    ],
)
def test_uri_forms(uri, parsed):
    source = parse_hub_uri(uri, "prompts")
    assert (source.repo_id, source.config, source.revision, source.split) == parsed


def test_rows_of_a_cached_hub_split_offline(hub_cache):
    assert hub_rows("hf://acme/prompts:test", "prompts") == [
        {"prompt": "Say hello", "response": "Hello", "category": "benign"}
    ]
    assert [r["prompt"] for r in hub_rows("hf://acme/prompts", "prompts")] == TRAIN["prompt"]  # default: train


def test_prompts_suite_from_the_hub_passes_preflight_and_reads_the_split(hub_cache, tmp_path, compose_cfg):
    overrides = [
        *BASE,
        "eval.suites=[prompts]",
        "prompts=hf://acme/prompts:train",
        "prompts_category_column=category",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    preflight(overrides)
    from qresafe_exp.evals.runner import eval_spec, user_prompts

    cfg = compose_cfg(overrides, cache=False)
    records = user_prompts(cfg)
    assert [r["prompt"] for r in records] == TRAIN["prompt"] and records[0]["category"] == "crime"
    # the rows read are kept as a JSONL snapshot, whose content keys the evaluation cache
    snapshots = list((tmp_path / "cache" / "datasets" / "hf").glob("*.jsonl"))
    assert [p.name for p in snapshots] == ["acme--prompts__default__train__latest.jsonl"]
    assert eval_spec(cfg, None, frozenset())["prompts_file"]["sha"]


def test_calibration_pairs_from_the_hub(hub_cache, tmp_path):
    records = load_records("hf://acme/prompts:train", None, str(tmp_path))
    assert [(r["prompt"], r["response"]) for r in records] == list(zip(TRAIN["prompt"], TRAIN["response"]))
    preflight(
        [
            *BASE,
            "quant=qlora",
            "calib.dataset=hf://acme/prompts:train",
            "calib.num_samples=3",
            f"paths.cache_dir={tmp_path}",
        ]
    )


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("hf://", "prompts=hf://: not a hub dataset URI; give hf://owner/name"),
        ("hf://onlyname", "prompts=hf://onlyname: not a hub dataset URI"),
        ("hf://a/b/c/d", "prompts=hf://a/b/c/d: not a hub dataset URI"),
        (
            "hf://acme/prompts:validation",
            "prompts=hf://acme/prompts:validation: Unknown split \"validation\". Should be one of ['train', 'test']",
        ),
        ("hf://acme/never-cached", "prompts=hf://acme/never-cached: cannot load acme/never-cached"),
    ],
)
def test_a_bad_hub_prompts_source_is_one_line_at_preflight(hub_cache, tmp_path, value, fragment):
    with pytest.raises(ConfigError) as err:
        preflight([*BASE, "eval.suites=[prompts]", f"prompts={value}", f"paths.cache_dir={tmp_path}"])
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_a_bad_calib_hub_source_names_its_key(hub_cache, tmp_path):
    with pytest.raises(ConfigError, match=r"calib.dataset=hf://acme/prompts:nope: Unknown split"):
        preflight([*BASE, "quant=qlora", "calib.dataset=hf://acme/prompts:nope", f"paths.cache_dir={tmp_path}"])


def test_hub_errors_are_value_errors_with_the_fix():
    with pytest.raises(HubSourceError, match=r"give hf://owner/name\[/config\]\[@revision\]\[:split\]"):
        parse_hub_uri("hf://", "calib.dataset")


# ---------------------------------------------------------------- Parquet files
def test_parquet_prompt_file(tmp_path):
    path = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"text": ["a", "b", ""], "topic": ["x", "y", "z"]}), path)
    table = user_prompt_table(path, "text", "topic")
    assert [(r["prompt"], r["category"]) for r in table] == [("a", "x"), ("b", "y")]  # empty prompts dropped
    with pytest.raises(ValueError, match=r"no column 'prompt' in record 1 \(columns: text, topic\)"):
        user_prompt_table(path)


def test_parquet_pair_file_for_calibration(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"instruction": ["Add 2 and 2"], "output": ["4"]}), path)
    assert [(r["prompt"], r["response"]) for r in load_records(str(path))] == [("Add 2 and 2", "4")]


def test_a_damaged_parquet_file_is_one_line(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError) as err:
        preflight([*BASE, "eval.suites=[prompts]", f"prompts={path}"])
    assert f"prompts={path}: not a readable Parquet file" in str(err.value) and "\n" not in str(err.value)
