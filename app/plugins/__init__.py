"""Plugins: what fills the menu. A plugin is a module that declares one `Plugin` value named `plugin`.

The host loads the built-in list below, then every plugin installed under the entry-point group
`quanda.plugins` (each entry point names a module with a `plugin` value, or the value itself). A malformed
plugin stops the start with a PluginError that says what is wrong: nothing is skipped silently.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Awaitable, Callable, Mapping, Sequence

from fasthtml.common import APIRouter

ENTRY_POINT_GROUP = "quanda.plugins"
BUILTIN_PLUGINS = ("app.plugins.todo", "app.plugins.simulator", "app.plugins.chat", "app.plugins.api")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


class PluginError(Exception):
    """A plugin that cannot be loaded; the message names it and what is wrong."""


@dataclass(frozen=True)
class Plugin:
    """Everything a plugin contributes. Only `name` and `label` are required."""

    name: str  # identifier: lowercase letters, digits, _
    label: str  # the menu label
    order: int = 100  # menu position, lowest first
    router: APIRouter | None = None  # its HTTP routes
    page: Callable[..., Any] | None = None  # page(ctx, sid) -> FT for the main area; None: not in the menu
    startup: Callable[[Any], Awaitable[None]] | None = None  # awaited with the app context at start
    ws_handlers: Mapping[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)  # action -> handler
    stream_views: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)  # message role -> view factory
    commands: Sequence[Any] = ()  # CommandSpecs (app/commands.py): JSON commands the LLM may emit
    system_prompt: str = ""  # what the LLM is told about this plugin
    prompt_context: Callable[[Any, str], Awaitable[str]] | None = None  # live state for the prompt (ctx, sid)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "order": self.order, "menu": self.page is not None,
                "routes": len(self.router.routes) if self.router else 0, "ws_actions": sorted(self.ws_handlers),
                "stream_roles": sorted(self.stream_views), "commands": len(self.commands)}


def validate(plugin: Any, source: str) -> Plugin:
    if not isinstance(plugin, Plugin):
        raise PluginError(f"{source}: expected a Plugin value, got {type(plugin).__name__}")
    if not isinstance(plugin.name, str) or not _NAME_RE.fullmatch(plugin.name):
        raise PluginError(f"{source}: name {plugin.name!r} must be lowercase letters, digits and _")
    if not isinstance(plugin.label, str) or not plugin.label.strip():
        raise PluginError(f"{source}: plugin {plugin.name!r} needs a non-empty label")
    if not isinstance(plugin.order, int):
        raise PluginError(f"{source}: plugin {plugin.name!r}: order must be an int")
    if plugin.router is not None and not isinstance(plugin.router, APIRouter):
        raise PluginError(f"{source}: plugin {plugin.name!r}: router must be a fasthtml APIRouter")
    for what in ("page", "startup", "prompt_context"):
        value = getattr(plugin, what)
        if value is not None and not callable(value):
            raise PluginError(f"{source}: plugin {plugin.name!r}: {what} must be callable")
    for action, handler in plugin.ws_handlers.items():
        if not isinstance(action, str) or not callable(handler):
            raise PluginError(f"{source}: plugin {plugin.name!r}: ws_handlers must map action names to callables")
    for role, view in plugin.stream_views.items():
        if not isinstance(role, str) or not callable(view):
            raise PluginError(f"{source}: plugin {plugin.name!r}: stream_views must map roles to view factories")
    from app.commands import CommandSpec
    for spec in plugin.commands:
        if not isinstance(spec, CommandSpec) or spec.run is None:
            raise PluginError(f"{source}: plugin {plugin.name!r}: commands must be CommandSpecs with a run function")
    return plugin


def load_module_plugin(module_name: str) -> Plugin:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{module_name}: cannot import: {exc}") from exc
    if not hasattr(module, "plugin"):
        raise PluginError(f"{module_name}: declares no `plugin` value")
    return validate(module.plugin, module_name)


def load_plugins(builtin: Sequence[str] = BUILTIN_PLUGINS, *, entry_point_group: str | None = ENTRY_POINT_GROUP,
                 extra: Sequence[Plugin | str] = ()) -> list[Plugin]:
    """Built-ins, then installed entry points, then `extra` (Plugin values or module names), by order."""
    plugins = [load_module_plugin(name) for name in builtin]
    if entry_point_group:
        for ep in entry_points(group=entry_point_group):
            try:
                value = ep.load()
            except Exception as exc:
                raise PluginError(f"entry point {ep.name} ({ep.value}): cannot load: {exc}") from exc
            plugins.append(validate(getattr(value, "plugin", value), f"entry point {ep.name}"))
    for item in extra:
        plugins.append(load_module_plugin(item) if isinstance(item, str) else validate(item, repr(item)))
    seen: dict[str, str] = {}
    for plugin in plugins:
        if plugin.name in seen:
            raise PluginError(f"two plugins are named {plugin.name!r}")
        seen[plugin.name] = plugin.label
    return sorted(plugins, key=lambda p: (p.order, p.name))
