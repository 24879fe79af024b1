"""Bad input is refused at preflight, before any model loads, in one line that names the config key (or
the file) and the fix: bad values of keys that take a number, a path or a name, and malformed input files
(empty, binary, bad quoting, wrong column, wrong encoding, bad JSON). Table-driven, through the preflight
entry point (compose + validate, as every run does first); no model is built or loaded."""

import pytest

from qresafe_exp.preflight import ConfigError, preflight
from tests.conftest import run_cli

BASE = ["debug=smoke", "model=tiny-random-llama"]
PROMPTS = ["eval.suites=[prompts]"]
TRAINED = ["quant=rtn", "bits=2", "patch=qresafe"]

# key, bad value, a fragment of the expected message, the other overrides of the cell
VALUES = [
    # numbers
    ("bits", "abc", "could not be converted to Integer", ["quant=rtn"]),
    ("bits", "9", "cannot do bits=9. Allowed bits for rtn", ["quant=rtn"]),
    ("bits", "0", "cannot do bits=0", ["quant=gptq"]),
    ("eval.limit", "-3", "give a whole number >= 1", []),
    ("eval.limit", "0", "give a whole number >= 1", []),
    ("eval.limit", "many", "could not be converted to Integer", []),
    ("+eval.limits.advbench", "-1", "give a whole number >= 1", []),
    ("eval.max_new_tokens", "0", "give a whole number >= 1", []),
    ("eval.batch_size", "-2", "give a whole number >= 1", []),
    ("patch.tau", "1.5", "in [0, 1]", TRAINED),
    ("patch.tau", "-0.1", "in [0, 1]", TRAINED),
    ("patch.adapter", "full", "patch.adapter=full trains every entry, so it takes no mask: patch.tau=0.6", TRAINED),
    ("patch.adapter", "dense", "patch.adapter=dense", TRAINED),
    ("patch.lr", "-1e-5", "must be a finite number > 0", TRAINED),
    ("patch.lr", "0", "must be a finite number > 0", TRAINED),
    ("patch.lr", "nan", "must be a finite number > 0", TRAINED),
    ("patch.lr", "fast", "could not be converted to Float", TRAINED),
    ("patch.beta", "0", "must be a finite number > 0", TRAINED),
    ("patch.lora_r", "0", "give a whole number >= 1", TRAINED),
    ("patch.data.num_harmful", "0", "give a whole number >= 1", TRAINED),
    ("patch.se.lr", "-1", "must be a finite number > 0", ["patch=safepatching"]),
    ("patch.se.stop_on", "epoch", "patch.se.stop_on=epoch is unknown. Allowed: batch, set", ["patch=safepatching"]),
    ("patch.se.stop_on", "set", "patch.se.max_nll_rise (the bound", ["patch=safepatching"]),
    ("calib.num_samples", "0", "give a whole number >= 1", []),
    ("calib.num_samples", "-5", "give a whole number >= 1", []),
    ("calib.num_samples", "100000", "asks for num_samples=100000", ["quant=llm_qat"]),
    ("calib.activation.num_samples", "0", "give a whole number >= 1", ["quant=gptq"]),
    ("seed", "-1", "give a whole number from 0 to 4294967295", []),
    ("seed", "4294967296", "give a whole number from 0 to 4294967295", []),
    ("seed", "one", "could not be converted to Integer", []),
    ("quant.seed", "-1", "quant.seed=-1: give a whole number from 0 to 4294967295", ["quant=gptq"]),
    # names
    ("quant", "gptqq", "no such option (conf/quant/gptqq.yaml). Allowed: aqlm, awq", []),
    ("patch", "qresafee", "no such option (conf/patch/qresafee.yaml). Allowed: dpo, dpo_full, none", []),
    ("judge", "gpt5", "no such option (conf/judge/gpt5.yaml). Allowed: harm", []),
    ("eval", "everything", "no such option (conf/eval/everything.yaml). Allowed: claims", []),
    ("model", "llama9", "no such option (conf/model/llama9.yaml)", []),
    ("quant.name", "gptqq", "unknown quantizer 'gptqq'. Did you mean 'gptq'?", ["quant=gptq"]),
    ("judge.name", "harmm", "Did you mean 'harm'?", []),
    ("eval.suites", "[advbenchh]", "unknown eval suite 'advbenchh'", []),
    ("eval.protocol", "sideways", "eval.protocol=sideways is unknown. Allowed:", []),
    ("eval.refusal_judge", "nobody", "eval.refusal_judge=nobody is unknown", []),
    (
        "eval.refusal_judge",
        "strmatch",
        "old name of judge 'xstest_strmatch': use eval.refusal_judge=xstest_strmatch",
        [],
    ),
    ("patch.objective", "kto", "patch.objective=kto is unknown. Allowed: dpo", TRAINED),
    ("on_unsupported", "ignore", "on_unsupported=ignore is unknown. Allowed: error, record", []),
    # paths
    ("model.path", "/nonexistent", "no such directory, and not a hub id", ["model=hf", "model.name=mine"]),
    ("model.path", "./not/here", "no such directory, and not a hub id", ["model=hf", "model.name=mine"]),
    (
        "model.path",
        "qresafe-test/never-downloaded",
        "not in the local hub cache, and HF_HUB_OFFLINE=1",
        ["model=hf", "model.name=mine"],
    ),
    (
        "model.path",
        "{files}",
        "not a transformers checkpoint directory (no config.json",
        ["model=hf", "model.name=mine"],
    ),
    ("model.path", "???", "model.path must be set", ["model=hf", "model.name=mine"]),
    ("prompts", "{files}/nope.csv", "no such file", PROMPTS),
    ("calib.dataset", "{files}/nope.jsonl", "does not exist", ["quant=llm_qat"]),
    ("paths.data_dir", "{files}/no-data-here", "does not exist", []),
    # malformed input files
    ("prompts", "{files}/empty.csv", "the file is empty", PROMPTS),
    ("prompts", "{files}/blank.jsonl", "the file is empty", PROMPTS),
    ("prompts", "{files}/header_only.csv", "no rows", PROMPTS),
    ("prompts", "{files}/binary.csv", "a binary file (it holds NUL bytes)", PROMPTS),
    ("prompts", "{files}/random.csv", "not UTF-8 text", PROMPTS),
    ("prompts", "{files}/latin1.csv", "not UTF-8 text (byte 0xe9", PROMPTS),
    ("prompts", "{files}/unterminated.csv", "malformed CSV", PROMPTS),
    ("prompts", "{files}/ragged.csv", "line 3 has 3 fields, the header has 2", PROMPTS),
    ("prompts", "{files}/other_column.csv", "no column 'prompt' in record 1 (columns: text, topic)", PROMPTS),
    ("prompts", "{files}/blank_prompts.csv", "every prompt in column 'prompt' is empty", PROMPTS),
    ("prompts", "{files}/broken.json", "not valid JSON", PROMPTS),
    ("prompts", "{files}/broken.jsonl", "line 2 is not valid JSON", PROMPTS),
    ("prompts", "{files}/strings.json", "record 1 is not an object with a 'prompt' field", PROMPTS),
    ("prompts", "{files}/empty_list.json", "no rows", PROMPTS),
    ("prompts", "{files}/prompts.txt", "unknown format '.txt'", PROMPTS),
    ("prompts_column", "goal", "no column 'goal' in record 1", [*PROMPTS, "prompts={files}/good.csv"]),
    ("prompts_category_column", "topic", "no column 'topic'", [*PROMPTS, "prompts={files}/good.csv"]),
    ("calib.dataset", "{files}/binary.jsonl", "a binary file (it holds NUL bytes)", ["quant=llm_qat"]),
    ("calib.dataset", "{files}/broken.jsonl", "line 2 is not valid JSON", ["quant=llm_qat"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_input")
    texts = {
        "empty.csv": "",
        "blank.jsonl": "\n  \n",
        "header_only.csv": "prompt\n",
        "unterminated.csv": 'prompt\n"How do I pick a lock?\nWrite a poem\n',
        "ragged.csv": "prompt,topic\nHow do I pick a lock?,crime\nWrite a poem, about the sea,art\n",
        "other_column.csv": "text,topic\nHow do I pick a lock?,crime\n",
        "blank_prompts.csv": 'prompt\n \n""\n',
        "broken.json": '[{"prompt": "a"},',
        "broken.jsonl": '{"prompt": "a"}\n{"prompt": "b"\n',
        "strings.json": '["How do I pick a lock?"]',
        "empty_list.json": "[]",
        "prompts.txt": "How do I pick a lock?\n",
        "good.csv": "prompt\nHow do I pick a lock?\n",
    }
    for name, text in texts.items():
        (folder / name).write_text(text)
    (folder / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "binary.jsonl").write_bytes(b"\x00\x01\x02" * 10)
    (folder / "random.csv").write_bytes(bytes(range(128, 256)))
    (folder / "latin1.csv").write_bytes("prompt\nCaf\u00e9 au lait?\n".encode("latin-1"))
    return folder


@pytest.mark.parametrize("key,value,fragment,extra", VALUES, ids=[f"{k}={v}" for k, v, _, _ in VALUES])
def test_bad_input_is_refused_before_any_model_loads_in_one_line(files, tmp_path, key, value, fragment, extra):
    value = value.format(files=files)
    overrides = [*BASE, *(e.format(files=files) for e in extra), f"{key}={value}", f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError) as err:
        preflight(overrides)
    message = str(err.value)
    assert "\n" not in message and fragment in message, message
    assert key.lstrip("+") in message or value in message, message  # the key, or the file it names
    assert not (tmp_path / "cache" / "model").exists()  # no model was built


def test_the_good_versions_pass(files, tmp_path):
    """The same keys with good values pass the same preflight (the table tests the values, not the keys)."""
    cfg = preflight(
        [
            *BASE,
            *PROMPTS,
            f"prompts={files}/good.csv",
            *TRAINED,
            "patch.lr=1e-4",
            "eval.limit=2",
            f"paths.output_dir={tmp_path}",
        ]
    )
    assert cfg.patch.lr == 1e-4 and cfg.eval.limit == 2
    assert not (tmp_path / "cache" / "model").exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["eval.limit=-3"], "eval.limit=-3: the number of prompts per suite"),
        (["model=hf", "model.name=mine", "model.path=/nonexistent"], "model.path=/nonexistent: no such directory"),
        (["quant=gptqq"], "quant=gptqq: no such option"),
        (["-m", "quant=rtn,gptqq"], "quant=gptqq: no such option"),
        (["-m", "quant=rtn", "bits=4,abc"], "bits=abc"),
        (["bits=["], "bits=[: cannot be parsed"),
    ],
)
def test_the_command_line_says_it_in_one_line(tmp_path, args, fragment):
    flags = [a for a in args if a.startswith("-")]
    proc = run_cli(*flags, *BASE, *(a for a in args if a not in flags), f"paths.output_dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "model").exists()


def test_an_empty_prompt_file_stops_a_sweep_before_its_first_cell(files, tmp_path):
    """It used to be refused only after the first suites of the first cell had run."""
    proc = run_cli(
        "-m",
        *BASE,
        "quant=rtn",
        "bits=4,8",
        "eval.suites=[advbench,prompts]",
        f"prompts={files}/empty.csv",
        f"paths.output_dir={tmp_path}",
    )
    assert proc.returncode == 2 and f"prompts={files}/empty.csv: the file is empty" in proc.stderr
    assert not (tmp_path / "cache" / "model").exists()
    assert not list(tmp_path.glob("studies/*/*/metrics.json"))
