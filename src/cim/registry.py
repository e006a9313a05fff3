"""Pluggable parts registered by name: one helper, one way to register, for every kind (encoders, parsers,
judges, captioners, benchmark formats, dataset adapters, metrics).

    TEXT_ENCODERS = Registry("text encoder", config_key="encoders.text.name", modules=("cim.encoders.text",))

    @TEXT_ENCODERS.register("sentence-transformers")      # the one way: a decorator, built-ins and plugins alike
    def build(cfg): ...

    TEXT_ENCODERS.get("sentence-transformers")(cfg)

- **Declared once.** An entry exists only where its decorator stands. A registry knows the *modules* that
  hold its built-in entries (:mod:`cim.plugins` lists them) and imports them on its first read
  (:meth:`names`, :meth:`get`, ``in``), so a stage imports the code of the kinds it uses and nothing else.
  A built-in from a floor above the code that reads the registry (the local backend's captioner, in
  ``cim.train``) is not named by the low table: CIM's pyproject.toml declares it as an entry point of the
  registry's own *group* (``Registry(..., group="cim.captioners")``), imported with the modules on the first
  read, as a built-in (an import error propagates).
- **Third-party plugins**: a pip-installed package declares an entry point in the group ``cim.plugins``
  whose value is a module (``my_plugin = "my_pkg.cim_plugin"``); every registry imports every such module on
  its first read, and the decorators in it register the plugin's entries. The ``cim`` command, the DVC stages
  and the Prefect flows then accept their names like the built-ins' (docs/extending.md). A plugin whose
  module fails to import is reported once (a warning) and named in the error of an unknown name.
- **Idempotent by qualified name**: registering the same ``module.qualname`` under a name again (a module
  imported twice, as Ray workers do) replaces the entry; a *different* object under a taken name raises
  :class:`DuplicateName`, so two plugins never silently shadow each other.
- ``register(name, **info)``: the decorated object is stored as it is (the decorator returns it unchanged)
  with its keyword ``info``: :meth:`info` reads it (a metric's columns), :meth:`build` calls the entry with
  it (a released checkpoint's ``release=``), so one class can serve several names.
- An unknown name raises :class:`UnknownName` (a ``ConfigError``: one line at the command boundary) listing
  the known names and the config key the name came from.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from cim.errors import ConfigError

T = TypeVar("T")

__all__ = ["Registry", "UnknownName", "DuplicateName", "ENTRY_POINT_GROUP", "load_plugins"]

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "cim.plugins"
_PLUGINS: dict[str, str | None] | None = None     # entry point name -> None (loaded) or its import error


class UnknownName(ConfigError):
    """A name that no entry of the registry carries."""


class DuplicateName(ValueError):
    """A second, different entry under a name that is already registered."""


def load_plugins() -> dict[str, str | None]:
    """Import every module the installed distributions declare in the ``cim.plugins`` entry-point group
    (once per process); returns ``{entry point name: None | the error that stopped its import}``."""
    global _PLUGINS
    if _PLUGINS is None:
        from importlib.metadata import entry_points

        _PLUGINS = {}
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            try:
                importlib.import_module(ep.value.split(":", 1)[0])
                _PLUGINS[ep.name] = None
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not break every command
                _PLUGINS[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("cim plugin %r (%s) failed to import: %s", ep.name, ep.value, _PLUGINS[ep.name])
    return _PLUGINS


def group_modules(group: str | None) -> tuple[str, ...]:
    """The modules the installed distributions declare in the entry-point group ``group`` (by entry name)."""
    if not group:
        return ()
    from importlib.metadata import entry_points

    return tuple(ep.value.split(":", 1)[0] for ep in sorted(entry_points(group=group), key=lambda e: e.name))


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (what makes a re-registration the same entry)."""
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


class Registry(Generic[T]):
    def __init__(self, kind: str, *, config_key: str | None = None, modules: Sequence[str] = (),
                 group: str | None = None):
        self.kind, self.config_key = kind, config_key
        self.modules = tuple(modules)
        self.group = group          # entry-point group of built-ins declared in pyproject.toml (see the module doc)
        self._loaded = False
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._owners: dict[str, str] = {}

    # -- writing ------------------------------------------------------------------------------------
    def register(self, name: str, **info: Any) -> Callable[[Any], Any]:
        """``@registry.register("name", **info)`` on a function or class (see the module doc)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")

        def add(obj: Any) -> Any:
            owner = qualified_name(obj)
            if name in self._entries and self._owners[name] != owner:
                raise DuplicateName(f"{self.kind} {name!r} is already registered ({self._owners[name]}); "
                                    f"{owner} cannot take it: choose another name")
            self._entries[name], self._info[name], self._owners[name] = obj, dict(info), owner
            return obj
        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that add a toy entry clean up with this)."""
        for table in (self._entries, self._info, self._owners):
            table.pop(name, None)

    # -- reading ------------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self.modules + group_modules(self.group):
            importlib.import_module(module)
        load_plugins()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{self.config_key}=" if self.config_key else f"{self.kind} "
            broken = [f"{k} ({err})" for k, err in (_PLUGINS or {}).items() if err]
            stale = self.group and not group_modules(self.group)
            raise UnknownName(f"{where}{name!r} is not a known {self.kind}; known: {', '.join(self.names()) or 'none'}"
                              + (f" (plugins that failed to import: {'; '.join(broken)})" if broken else "")
                              + (f" (no distribution declares the entry-point group {self.group}: CIM's installed "
                                 "metadata predates it, reinstall with `pip install --no-deps -e .`)" if stale else "")
                              ) from None

    def info(self, name: str) -> dict[str, Any]:
        """The keyword ``info`` ``name`` was registered with."""
        self.get(name)
        return dict(self._info[name])

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``entry(*args, **info, **kwargs)``: the entry called with its registration ``info``."""
        return self.get(name)(*args, **{**self._info[name], **kwargs})

    def owner(self, name: str) -> str:
        """The qualified name of what registered ``name`` (where an entry comes from)."""
        self.get(name)
        return self._owners[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
