"""The `Plugin` value (every hook a plugin may fill, one line each) and how plugins are loaded.

A plugin is a module that declares one `Plugin` value named `plugin`. It imports what it needs from
`quanda.api` only (the public API: `Plugin`, `Handle`, `ClientError`, the command types, messages, FT
helpers) and `quanda.components` (plain FT pieces) — never the transport, the server or this module's
loader. Every page, WebSocket action, fact view, job recovery and HTTP route gets a `Handle`: the app context
seen from one owner (and one tab).

The host loads the built-in list below, then every plugin installed under the entry-point group
`quanda.plugins` (each entry point names a module with a `plugin` value, or the value itself). A malformed
plugin stops the start with a PluginError that says what is wrong: nothing is skipped silently.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from typing import Any, Awaitable, Callable, Mapping, Sequence

from fasthtml.common import APIRouter

from quanda.commands import CommandSpec
from quanda.context import AppContext, Handle
from quanda.jobs import Job

__all__ = ["BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "Plugin", "PluginError", "load_plugins", "plugin_fields",
           "validate"]

ENTRY_POINT_GROUP = "quanda.plugins"
# the app's own features (the chat, the HTTP API) and the reference app's plugins (todo, simulator: users of quanda.api)
BUILTIN_PLUGINS = ("quanda.plugins.todo", "quanda.plugins.simulator", "quanda.chat", "quanda.http_api")
ASSET_SUFFIXES = (".js", ".css")
_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
HOOKS = ("page", "startup", "prompt_context", "sidebar", "on_event", "on_navigate", "ask")


class PluginError(Exception):
    """A plugin that cannot be loaded; the message names it and what is wrong."""


@dataclass(frozen=True)
class Plugin:
    """Everything a plugin contributes. Only `name` and `label` are required; each other field is a hook."""

    name: str  # identifier: lowercase letters, digits, _
    label: str  # the menu label
    order: int = 100  # menu position, lowest first
    router: APIRouter | None = None  # its HTTP routes (a route gets its Handle with `await handle_of(request)`)
    page: Callable[[Handle], Any] | None = None  # page(h) -> FT for the main area; None: not in the menu
    startup: Callable[[AppContext], Awaitable[None]] | None = None  # awaited once the app is up
    ws_handlers: Mapping[str, Callable[[Handle, dict], Awaitable[None]]] = field(default_factory=dict)  # action -> handler(h, data)
    stream_views: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)  # message role -> view factory
    fact_views: Mapping[str, Callable[[Handle, dict], Any]] = field(default_factory=dict)  # topic -> view(h, fact) -> FT for a tab: those on its page (every tab for the sidebar's plugin)
    commands: Sequence[CommandSpec] = ()  # the commands the LLM may run (JSON in text, or tool calls)
    system_prompt: str = ""  # what the LLM is told about this plugin
    prompt_context: Callable[[Handle], Awaitable[str]] | None = None  # live state for the prompt
    recover: Mapping[str, Callable[[Handle, Job], Awaitable[None]]] = field(default_factory=dict)  # job kind -> mark a job whose server died
    sidebar: Callable[[Handle], Awaitable[Any]] | None = None  # the sidebar beside every page (the first plugin's)
    on_event: Callable[[Handle, str], Awaitable[None]] | None = None  # an ambient event happened ("You added …")
    on_navigate: Callable[[Handle, str | None], Awaitable[None]] | None = None  # a tab opened a plugin's page (its name; None: home). Not an ambient event: a plugin that wants the LLM told posts one itself
    ask: Callable[..., Awaitable[str]] | None = None  # ask(h, question, model) -> answer id (the HTTP API's /answer)
    assets: Sequence[str | Path] = ()  # its own .js/.css files: served at /static/plugins/<name>/<file>, linked in every page's head

    def asset_urls(self) -> list[tuple[str, Path]]:
        return [(f"/static/plugins/{self.name}/{Path(a).name}", Path(a)) for a in self.assets]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "order": self.order, "menu": self.page is not None,
                "routes": len(self.router.routes) if self.router else 0, "ws_actions": sorted(self.ws_handlers),
                "stream_roles": sorted(self.stream_views), "facts": sorted(self.fact_views),
                "commands": len(self.commands), "assets": [url for url, _ in self.asset_urls()],
                "hooks": sorted(h for h in HOOKS if getattr(self, h) is not None) + sorted(
                    f"recover:{kind}" for kind in self.recover)}


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
    for what in HOOKS:
        value = getattr(plugin, what)
        if value is not None and not callable(value):
            raise PluginError(f"{source}: plugin {plugin.name!r}: {what} must be callable")
    for what in ("ws_handlers", "stream_views", "fact_views", "recover"):
        for key, value in getattr(plugin, what).items():
            if not isinstance(key, str) or not callable(value):
                raise PluginError(f"{source}: plugin {plugin.name!r}: {what} must map names to callables")
    for spec in plugin.commands:
        if not isinstance(spec, CommandSpec) or spec.run is None:
            raise PluginError(f"{source}: plugin {plugin.name!r}: commands must be CommandSpecs with a run function")
    for asset in plugin.assets:
        path = Path(asset)
        if path.suffix not in ASSET_SUFFIXES or not path.is_file():
            raise PluginError(f"{source}: plugin {plugin.name!r}: asset {str(asset)!r} must be an existing .js or "
                              ".css file")
    if len({Path(a).name for a in plugin.assets}) != len(plugin.assets):
        raise PluginError(f"{source}: plugin {plugin.name!r}: two assets have the same file name")
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


def plugin_fields() -> list[str]:
    """The names of every hook a plugin may fill (the README documents each)."""
    return [f.name for f in fields(Plugin)]
