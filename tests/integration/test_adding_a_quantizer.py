"""docs/pipeline.md, "Adding a quantizer", done as written: one module, one YAML, one registry line, and
nothing else in the package, then a cell with that quantizer runs end to end (quantize, patch-ready format,
evaluate) on tiny-random-llama. The module and the YAML are the doc's own code blocks, read from the doc."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from qresafe_exp.formats import format_of
from qresafe_exp.pipeline import run_cell, validate
from qresafe_exp.quant import QUANTIZERS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "pipeline.md"


def _doc_blocks() -> tuple[str, str, str]:
    """(module, YAML, registry line) from the doc's "Adding a quantizer" section."""
    text = DOC.read_text().split("### Adding a quantizer", 1)[1].split("\n## ", 1)[0]
    blocks = [re.sub(r"(?m)^   ", "", b) for b in re.findall(r"```(?:python|yaml)\n(.*?)   ```", text, re.S)]
    assert len(blocks) == 3, "the section has three code blocks: module, YAML, registry line"
    return blocks[0], blocks[1], blocks[2].strip()


@pytest.fixture
def rtn_channel(tmp_path, monkeypatch):
    module, yaml, line = _doc_blocks()
    name, target = re.fullmatch(r'"(\w+)": "([\w.]+:\w+)",', line).groups()
    assert name == "rtn_channel" and target == "qresafe_exp.quant.rtn_channel:RtnChannelQuantizer"
    # the module beside the package's own quantizers, without writing into the source tree
    package = tmp_path / "qresafe_exp" / "quant"
    package.mkdir(parents=True)
    (package / "rtn_channel.py").write_text(module)
    import qresafe_exp.quant

    monkeypatch.setattr(qresafe_exp.quant, "__path__", [*qresafe_exp.quant.__path__, str(package)])
    monkeypatch.delitem(sys.modules, "qresafe_exp.quant.rtn_channel", raising=False)
    conf = tmp_path / "conf" / "quant"
    conf.mkdir(parents=True)
    (conf / "rtn_channel.yaml").write_text(yaml)
    monkeypatch.setitem(QUANTIZERS._targets, name, target)  # the registry line (undone after the test)
    return tmp_path / "conf"


def test_a_quantizer_added_as_the_doc_says_runs_a_cell(compose_cfg, rtn_channel):
    cfg = compose_cfg(
        [
            "debug=smoke",
            "model=tiny-random-llama",
            "eval.limit=2",
            "eval.max_new_tokens=4",
            "quant=rtn_channel",
            "bits=8",
            f"hydra.searchpath=[file://{rtn_channel}]",
        ]
    )
    assert cfg.cell == "tiny-random-llama.rtn-w8c.none"
    validate(cfg)
    metrics = run_cell(cfg)
    assert metrics["axes"]["quant"] == "rtn_channel" and metrics["scores"]["advbench"]["asr"]["n"] == 2
    checkpoint = Path(cfg.paths.cache_dir) / "quantize" / metrics["artifacts"]["quantize"]
    scheme = json.loads((checkpoint / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"]
    assert scheme["weights"]["strategy"] == "channel" and scheme["weights"]["num_bits"] == 8
    assert format_of(str(checkpoint)).name == "compressed-tensors"  # the merge and the trainable view come free
