"""Named, lazy registries: one per axis (quantizers, patches, judges, datasets, eval suites).

Configs, cache keys and tables carry registry *names*; the import path behind a name can move
without changing an experiment's identity. Entries are "module:attr" strings imported on first use,
so `import qresafe_exp` never pulls in llm-compressor or a judge's client.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no entry of the registry has; the message lists the allowed names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a readable sentence
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, axis: str, entries: dict[str, str] | None = None):
        self.axis = axis
        self._targets: dict[str, str] = dict(entries or {})
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str) -> None:
        if name in self._targets:
            raise ValueError(f"{self.axis} '{name}' is already registered ({self._targets[name]})")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def check(self, name: str) -> None:
        """Raise a clear error for an unknown name, with a did-you-mean hint and the allowed names."""
        if name in self._targets:
            return
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownNameError(f"unknown {self.axis} '{name}'.{hint} Allowed: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        self.check(name)
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj
        return self._loaded[name]
