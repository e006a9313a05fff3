"""Pluggable parts registered by name: one helper for every kind (encoders, parsers, judges, captioners,
benchmark formats, dataset adapters, metrics, ...).

    TEXT_ENCODERS = Registry("text encoder", config_key="encoders.text.name",
                             providers=("cim.encoders.text",))

    @TEXT_ENCODERS.register("sentence-transformers")
    def build(cfg): ...

    TEXT_ENCODERS.get("sentence-transformers")(cfg)

- A second registration under a name already taken raises :class:`DuplicateName` (two plugins never
  silently shadow each other).
- An unknown name raises :class:`UnknownName`, whose message lists the known names (and the config key the
  name came from, when the registry has one).
- ``builtins``: the built-in names and the module that registers each. :meth:`names` and ``in`` answer from
  them without importing anything (so checking a config against every registry loads no model code, and a
  stage imports only the modules it uses); :meth:`get` imports the entry's module on first use. A test checks
  that each module registers exactly the names declared for it. All registries are declared in
  :mod:`cim.plugins`.
- ``providers``: modules imported on the first read of any kind (for registries whose names are not known
  up front). Third-party code registers its own entries through :meth:`Registry.register` after importing
  the registry (docs/extending.md).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

from cim.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "UnknownName", "DuplicateName"]


class UnknownName(ConfigError):
    """A name that no entry of the registry carries."""


class DuplicateName(ValueError):
    """A second entry under a name that is already registered."""


class Registry(Generic[T]):
    def __init__(self, kind: str, *, config_key: str | None = None, builtins: Mapping[str, str] | None = None,
                 providers: Sequence[str] = ()):
        self.kind, self.config_key = kind, config_key
        self.builtins: dict[str, str] = dict(builtins or {})
        self._providers = tuple(providers)
        self._loaded = not self._providers
        self._entries: dict[str, T] = {}

    # -- writing ------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """``@registry.register("name")`` on a function or class, or ``registry.register("name", obj)``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry:
                raise DuplicateName(f"{self.kind} {name!r} is already registered "
                                    f"({_describe(self._entries[name])}); choose another name")
            self._entries[name] = entry
            return entry

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that add a toy entry clean up with this)."""
        self._entries.pop(name, None)

    # -- reading ------------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._providers:
            importlib.import_module(module)

    def load_builtins(self) -> None:
        """Import every built-in entry's module (listing the entries themselves needs them)."""
        for module in sorted(set(self.builtins.values())):
            importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._entries) | set(self.builtins))

    def get(self, name: str) -> T:
        self._load()
        if isinstance(name, str) and name not in self._entries and name in self.builtins:
            importlib.import_module(self.builtins[name])
            if name not in self._entries:
                raise RuntimeError(f"{self.builtins[name]} was declared to register {self.kind} {name!r} "
                                   "but did not (cim.plugins and the module disagree)")
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{self.config_key}=" if self.config_key else f"{self.kind} "
            raise UnknownName(f"{where}{name!r} is not a known {self.kind}; known: "
                              f"{', '.join(self.names()) or 'none'}") from None

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries or name in self.builtins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        self.load_builtins()
        return sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def _describe(obj: Any) -> str:
    mod, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{mod}.{name}" if mod and name else repr(obj)
