"""Quanda inside any FastHTML app: the host API.

    q = Quanda(workspace=lambda request: ...)        # who the user is (None: Quanda's local mode or accounts)

    @q.action
    async def add_note(title: str, workspace: str) -> str:
        '''Add a note.'''                               # the docstring and the signature are the tool's schema
        ...

    @q.readable
    def notes(workspace: str) -> str: ...           # what the model reads in its prompt (bounded)

    @q.live
    def notes_list(workspace: str): ...             # a part of the host's page redrawn in every tab after an action

    q.mount(app)                                    # the WebSocket, the HTTP API, static assets, the head
    ... q.sidebar() ...                             # the chat, where the host's page wants it
    await q.tell(workspace, "You opened the note 3") # an ambient event

An action is offered to the model as a native tool (or as a JSON command when the model takes no tools) and
runs through the commands' exactly-once pipeline (app/commands.py): its call is claimed in the store before
the function runs, and its result recorded after. A crash between the two is reported as interrupted and the
function is not called again — unless it is declared `idempotent`: then it is called again with the same
`key` (take a parameter named `key` to make its effect idempotent, e.g. as a unique column). Parameters
named `workspace` and `key` are handed in by Quanda and are not part of the schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import types
import typing
from typing import Annotated, Any, Callable, Sequence

from fasthtml.common import Div, JSONResponse, Span

from quanda.commands import Change, CommandResult, CommandSpec, Field
from quanda.components import ids
from quanda.config import Settings
from quanda.context import AppContext, ClientError, Handle

log = logging.getLogger("quanda.host")

INJECTED = ("workspace", "key")  # parameters Quanda hands an action, not the model
TYPES = (str, int, float, bool)
MAX_TEXT = 2000  # default longest text argument
READABLE_CHARS = 4000  # default share of the prompt of one readable function
HOST_BUILTINS = ("quanda.chat", "quanda.http_api")


@dataclasses.dataclass(frozen=True)
class Action:
    """A function the model may call: its name, its description and its fields come from the function."""

    fn: Callable[..., Any]
    name: str
    description: str
    fields: dict[str, Field]
    injected: tuple[str, ...]
    idempotent: bool = False
    approval: Any = False  # True, or a predicate of the call's arguments: the call waits for the user's Approve
    result: Any = None  # fn(result) -> FT: how a run shows in the answer (result: text, args, before, after)
    undo: Any = None  # fn(the call's args, workspace?, key?, result?) -> text: takes a run back (Undo); None: none

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # the host may still call its function itself
        return self.fn(*args, **kwargs)

    async def run(self, workspace: str, args: dict, key: str) -> CommandResult:
        """Call the function once; what it returns (text) is what the chat and the model are told."""
        extra = {"workspace": workspace, "key": key}
        try:
            out = self.fn(**args, **{name: extra[name] for name in self.injected})
            if inspect.isawaitable(out):
                out = await out
        except ClientError as exc:
            return CommandResult(False, f"{self.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - the host's bug is logged; the model is told it failed
            log.exception("action %s failed", self.name)
            return CommandResult(False, f"{self.name} failed ({type(exc).__name__})")
        return CommandResult(True, out if isinstance(out, str) and out.strip() else f"{self.name} done")


    async def take_back(self, h: Handle, args: dict, key: str, result: str) -> str:
        """Call the action's `undo` with the call's arguments (and what it asks for by name); its text, or
        ClientError saying why not (the host's bug: that it failed)."""
        wants = inspect.signature(self.undo).parameters
        extra = {"workspace": h.owner, "key": key, "result": result}
        try:
            out = self.undo(**args, **{name: value for name, value in extra.items() if name in wants})
            if inspect.isawaitable(out):
                out = await out
        except ClientError:
            raise
        except Exception as exc:  # noqa: BLE001 - the host's bug is logged; the user is told it failed
            log.exception("undo of action %s failed", self.name)
            raise ClientError(f"the undo of {self.name} failed ({type(exc).__name__})") from None
        return out if isinstance(out, str) and out.strip() else f"Undid {self.name}."


def _field(name: str, hint: Any, required: bool) -> Field:
    description, given = "", None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        description = " ".join(e for e in extras if isinstance(e, str))
        given = next((e for e in extras if isinstance(e, Field)), None)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else hint
    if hint not in TYPES:
        raise TypeError(f"parameter {name!r}: an action takes str, int, float or bool (optionally Annotated), "
                        f"not {hint!r}")
    if given is not None:
        return dataclasses.replace(given, type=hint, required=required, description=given.description or description)
    return Field(hint, required=required, max_len=MAX_TEXT if hint is str else 200, description=description)


def action(fn: Callable[..., Any] | None = None, *, name: str | None = None, idempotent: bool = False,
           approval: bool | Callable[[dict], bool] = False, result: Callable[[dict], Any] | None = None,
           undo: Callable[..., Any] | None = None) -> Any:
    """Make `fn` an Action: `@action`, or `@action(name=…, idempotent=True, approval=True)` (`approval`: the
    user approves each call first; or a predicate of the call's arguments saying which calls need it; `result`:
    the FT component a run shows as in the answer, given {"text", "args", "before", "after", "undone"}; `undo`:
    how to take a run back — called once with the call's arguments (and `workspace`, `key`, `result`: the text
    the run returned, when it names them), it says what it undid or raises ClientError("why not"))."""
    def make(fn: Callable[..., Any]) -> Action:
        if isinstance(fn, Action):
            return fn
        hints = typing.get_type_hints(fn, include_extras=True)
        fields: dict[str, Field] = {}
        injected = []
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise TypeError(f"action {fn.__name__}: parameter {pname!r} must be an ordinary named one")
            if pname in INJECTED:
                injected.append(pname)
                continue
            if pname not in hints:
                raise TypeError(f"action {fn.__name__}: parameter {pname!r} needs a type hint")
            fields[pname] = _field(pname, hints[pname], param.default is param.empty)
        doc = inspect.getdoc(fn) or ""
        return Action(fn, name or fn.__name__, doc.split("\n\n")[0].replace("\n", " ").strip() or fn.__name__,
                      fields, tuple(injected), idempotent, approval, result, undo)
    return make(fn) if fn is not None else make


def readable(fn: Callable[..., Any] | None = None, *, limit: int = READABLE_CHARS) -> Any:
    """Mark `fn(workspace) -> str` as state the model reads (its text cut at `limit` characters)."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__quanda_readable__ = limit  # type: ignore[attr-defined]
        return fn
    return mark(fn) if fn is not None else mark


async def _value(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out


class Quanda:
    """Quanda for a host application. `workspace(request_or_socket) -> str | None` says who the user is
    (None: sign in first); without it, Quanda's own local mode or accounts decide (QUANDA_AUTH). `store_url`
    overrides QUANDA_DB_URL; every other setting comes from the environment (the README's table)."""

    def __init__(self, workspace: Callable[[Any], Any] | None = None, store_url: str | None = None, *,
                 name: str = "app", label: str = "App", about: str = "", settings: Settings | None = None,
                 plugins: Sequence[Any] = ()):
        settings = settings or Settings.from_env()
        self.settings = dataclasses.replace(settings, db_url=store_url) if store_url else settings
        self.workspace, self.name, self.label, self.about = workspace, name, label, about
        self.extra_plugins = list(plugins)
        self.actions: list[Action] = []
        self.readables: list[Callable[..., Any]] = []
        self.lives: list[Callable[..., Any]] = []
        self.ctx: AppContext | None = None

    # -- what the host declares ---------------------------------------------------------------------------

    def action(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
               idempotent: bool = False, approval: bool | Callable[[dict], bool] = False,
               result: Callable[[dict], Any] | None = None, undo: Callable[..., Any] | None = None) -> Any:
        def add(fn: Callable[..., Any]) -> Action:
            made = action(fn, name=name, idempotent=idempotent, approval=approval, result=result, undo=undo)
            self.actions.append(made)
            return made
        return add(fn) if fn is not None else add

    def readable(self, fn: Callable[..., Any] | None = None, *, limit: int = READABLE_CHARS) -> Any:
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.readables.append(readable(fn, limit=limit))
            return fn
        return add(fn) if fn is not None else add

    def live(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn(workspace) -> FT` with an id: sent to every tab of the workspace after an action ran (or
        `changed`), replacing the element with that id."""
        self.lives.append(fn)
        return fn

    # -- what the host calls ------------------------------------------------------------------------------

    async def tell(self, workspace: str, text: str) -> None:
        """An ambient event ("You added the note 'milk'"): the assistant sees it, the sidebar shows it."""
        await self._context().post_event(workspace, text)

    async def speak_up(self, workspace: str, reason: str) -> bool:
        """Ask the assistant to speak now, `reason` shown in the conversation (False: not now — an answer is
        being written, the user types, or the LLM is unreachable)."""
        from quanda.api import speak_up
        return await speak_up(self._context().handle(workspace), reason)

    async def workspace_of(self, request: Any) -> str | None:
        """The workspace a request of the host's own routes acts for (what Quanda's routes see too)."""
        from quanda.access import connection_owner
        return await connection_owner(request)

    async def changed(self, workspace: str) -> None:
        """Redraw the `live` parts in every tab of `workspace`, on every server (after a change by hand)."""
        await self._context().publish(workspace, self.changed_topic)

    def sidebar(self, **kwargs: Any):
        """The chat, as an FT component for the host's page: it loads its conversation once the page is up, and
        holds the live connection (keep the host's `live` elements where it is rendered, or beside it)."""
        return Div(Div(Span("Loading the chat…", cls="muted"), id="sidebar", hx_get="/-/quanda/sidebar",
                       hx_trigger="load", hx_swap="outerHTML"),
                   Div(id="connection", cls="connection", hidden=True),  # lost, retrying (static/connection.js)
                   Div(id=ids.NOTICE),
                   Span(id="ws-state", cls="ws-state", data_state="connecting", title="Live connection"),
                   id="quanda", hx_ext="ws,quanda", ws_connect="/ws", **kwargs)

    def mount(self, app: Any, *, door: bool = True) -> Any:
        """Add Quanda to the host's FastHTML `app`: the store's lifespan, `/ws`, the HTTP API, `/static`,
        the head's scripts, the sidebar's route; with `door`, Quanda's checks on every request (Host, Origin,
        body limits, security headers: a CSP without inline script)."""
        from quanda import logs
        from quanda.access import connection_owner
        from quanda.door import Door
        from quanda.login import add_login_routes
        from quanda.mount import headers, wire
        from quanda.plugin import load_plugins
        from quanda.throttle import LoginThrottle

        plugins = load_plugins(HOST_BUILTINS, entry_point_group=None, extra=[self.plugin(), *self.extra_plugins])
        app.hdrs.extend(headers(plugins))
        if door:
            app.add_middleware(Door, host_names=self.settings.host_names,
                               handshakes_per_s=self.settings.ws_handshakes_per_s)
            app.add_middleware(logs.RequestIds)
        host = wire(app, self.settings, plugins, workspace=self.workspace)
        if self.workspace is None and self.settings.accounts:
            add_login_routes(app, self.settings, LoginThrottle())

        @app.get("/-/quanda/sidebar")
        async def quanda_sidebar(request):
            owner = await connection_owner(request)
            if owner is None:
                return JSONResponse({"error": "sign in first"}, status_code=401)
            return await host.sidebar(request.app.state.ctx.handle(owner))
        return app

    # -- the plugin the host's declarations make ----------------------------------------------------------

    @property
    def changed_topic(self) -> str:
        return f"{self.name}.changed"

    def _context(self) -> AppContext:
        if self.ctx is None:
            raise RuntimeError("Quanda is not running yet: mount it, and call this once the app has started")
        return self.ctx

    def command_spec(self, act: Action) -> CommandSpec:
        async def plan(h: Handle, args: dict) -> Change:
            async def effect(key: str) -> CommandResult:
                return await act.run(h.owner, args, key)
            return Change(CommandResult(True, ""), facts=((self.changed_topic, {"action": act.name}),),
                          effect=effect, rerun=act.idempotent)
        return CommandSpec(self.name, act.name, act.fields, "", plan, act.description, name=act.name,
                           approval=act.approval, result_view=act.result,
                           undo=act.take_back if act.undo is not None else None)

    def plugin(self):
        from quanda.plugin import Plugin

        async def startup(ctx: AppContext) -> None:
            self.ctx = ctx

        async def prompt_context(h: Handle) -> str:
            parts = []
            for fn in self.readables:
                limit = fn.__quanda_readable__
                try:
                    text = str(await _value(fn, h.owner))
                except Exception:  # noqa: BLE001 - the host's bug must not stop the answer
                    log.exception("readable %s failed", fn.__name__)
                    text = "(unavailable)"
                if len(text) > limit:
                    text = text[:limit] + f"\n(cut at {limit} characters)"
                title = (inspect.getdoc(fn) or fn.__name__).split("\n")[0]
                parts.append(f"{title}:\n{text}")
            return "\n\n".join(parts)

        async def redraw(h: Handle, fact: dict) -> list:
            drawn = []
            for fn in self.lives:
                part = await _value(fn, h.owner)
                if part is not None:
                    part.attrs["hx-swap-oob"] = "true"
                    drawn.append(part)
            return drawn

        return Plugin(name=self.name, label=self.label, order=50, startup=startup,
                      commands=[self.command_spec(a) for a in self.actions],
                      system_prompt=self.about, prompt_context=prompt_context if self.readables else None,
                      fact_views={self.changed_topic: redraw} if self.lives else {})
