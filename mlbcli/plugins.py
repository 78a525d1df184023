"""Named, lazily loaded components: the one registry mechanism for methods and model adapters.

A `Registry` knows components by name from three places, in this order of precedence:
1. classes registered in this process (`register`, e.g. a notebook's own method);
2. the built-ins, a table `name -> "module:attribute"` in the package;
3. installed plugins: the entry points of one group (`mlb.methods`, `mlb.models`), which a package
   declares in its `pyproject.toml`:

       [project.entry-points."mlb.methods"]
       topk-norm = "mlb_topk_norm:TopKNorm"

Names are known without importing anything (so `--method` completion, name checks and `mlb --help`
stay instant and torch-free); a component's module is imported only when it is `load`ed. Built-ins
and plugins take exactly the same path.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class PluginError(Exception):
    """A plugin's entry point could not be loaded (its message names the plugin and why)."""


class Registry(Generic[T]):
    """Components of one kind (`group`), by name: built-ins, plugins and run-time registrations."""

    def __init__(self, group: str, builtins: Mapping[str, str]):
        self.group = group
        self._builtins = dict(builtins)  # name -> "module:attribute"
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._plugins: dict[str, importlib.metadata.EntryPoint] | None = None

    # -- names (no imports) ---------------------------------------------------------------------------
    def plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        """The installed entry points of this group, by name (read once per process)."""
        if self._plugins is None:
            found = {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}
            shadowed = sorted(set(found) & set(self._builtins))
            for name in shadowed:  # a plugin never replaces a built-in silently
                log.warning(
                    "plugin %s=%s ignored: %r is a built-in %s", name, found[name].value, name, self.group
                )
                del found[name]
            self._plugins = found
        return self._plugins

    def names(self) -> list[str]:
        return sorted(set(self._registered) | set(self._builtins) | set(self.plugins()))

    def origin(self, name: str) -> str:
        """Where `name` comes from: "built-in", "registered", or the plugin's distribution name."""
        if name in self._registered:
            return "registered"
        if name in self._builtins:
            return "built-in"
        entry = self.plugins()[name]
        return f"plugin {entry.dist.name}" if entry.dist is not None else "plugin"

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    # -- loading -------------------------------------------------------------------------------------
    def register(self, name: str, component: T) -> T:
        """Make `component` available as `name` in this process (a second, different one is an error)."""
        known = self._registered.get(name) or self._loaded.get(name)
        if known is not None and known is not component:
            raise ValueError(f"a {self.group} component named {name!r} is already registered")
        self._registered[name] = component
        return component

    def load(self, name: str) -> T:
        """The component called `name`, importing its module on first use. KeyError if unknown."""
        if name in self._registered:
            return self._registered[name]
        if name not in self._loaded:
            if name in self._builtins:
                self._loaded[name] = _import(self._builtins[name])
            elif name in self.plugins():
                entry = self.plugins()[name]
                try:
                    self._loaded[name] = entry.load()
                except Exception as error:  # a broken plugin must say which one it is
                    raise PluginError(
                        f"plugin {name!r} ({entry.value}) of group {self.group} failed to load: {error}"
                    ) from error
            else:
                raise KeyError(name)
        return self._loaded[name]

    def load_all(self) -> dict[str, T]:
        return {name: self.load(name) for name in self.names()}


def _import(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)
