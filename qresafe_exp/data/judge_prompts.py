"""Published judge prompts read as data: the string a public source file assigns, taken verbatim.

A prompt's public source is a Python file (Qi et al.'s ``openai_gpt4_judge.py``, HarmBench's
``eval_utils.py``); the offline copy may be that file or the bare template text. The source is parsed
with ``ast`` and the literal read with ``ast.literal_eval``: nothing from it is imported or executed.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any


def assigned_literal(source: str, name: str) -> Any | None:
    """The literal value assigned to ``name`` anywhere in ``source`` (module level or inside a function,
    as in Qi et al.'s code); None when ``source`` is not Python or assigns no literal to ``name``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                continue
    return None


def qi_judge_template(path: Path) -> list[dict]:
    """Qi et al.'s ``judge_template``: from their source file (a download) or the bare text (the offline
    copy, byte for byte the string)."""
    text = path.read_text(encoding="utf-8")
    found = assigned_literal(text, "judge_template")
    template = found if isinstance(found, str) else text
    if template.count("%s") != 2:
        raise ValueError(
            f"{path}: not Qi et al.'s judge template (expected two %s slots, instruction then "
            f"response; found {template.count('%s')})"
        )
    return [{"template": template}]


def harmbench_cls_prompts(path: Path) -> list[dict]:
    """HarmBench's ``LLAMA2_CLS_PROMPT`` dict from its ``eval_utils.py``: one record per key
    (``prompt``, ``prompt_contextual``, ``description``)."""
    found = assigned_literal(path.read_text(encoding="utf-8"), "LLAMA2_CLS_PROMPT")
    if not isinstance(found, dict) or not isinstance(found.get("prompt"), str):
        raise ValueError(
            f"{path} does not define LLAMA2_CLS_PROMPT = {{'prompt': ...}}: it should be HarmBench's "
            "eval_utils.py (github.com/centerforaisafety/HarmBench)"
        )
    return [{"name": key, "template": value} for key, value in found.items()]
