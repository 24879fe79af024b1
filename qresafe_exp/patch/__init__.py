"""Safety patches by name (the real methods, qresafe / sft / dpo / safepatching, come later)."""

from qresafe_exp.registry import Registry

PATCHES = Registry("patch", {"none": "qresafe_exp.patch.none:NoPatch"})
