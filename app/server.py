"""create_app(settings, store=None): the FastHTML app around the Quanda core.

Pages are server-rendered FT; everything live goes over one `app.ws` endpoint (see app/ws.py). Plugins
fill the menu, the sidebar and the routes (app/plugins/); this module wires them to the transport and
knows nothing of what any plugin does. Only files under static/ are served as static content.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Sequence

from fasthtml.common import H2, FastHTML, JSONResponse, Link, Meta, P, RedirectResponse, Script, Section, to_xml
from starlette.middleware import Middleware
from starlette.staticfiles import StaticFiles

from quanda.access import LOGIN_KEY, ensure_session, session_owner
from quanda.accounts import Accounts
from quanda.components.auth import AccountBar
from quanda.components.chat import ChatSidebar
from quanda.components.layout import Menu, Notice, Page, PageContent
from quanda.config import Settings
from quanda.context import AppContext, ClientError, Handle
from quanda.door import Door, http_error
from quanda.hashpool import HashPool
from quanda.health import StoreHealth
from quanda.login import add_login_routes
from quanda import logs, metrics, openapi
from quanda.migrate import migrate
from quanda.jobs import Job, Jobs
from quanda.llm import make_driver
from quanda.plugins import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, Plugin, load_plugins
from quanda.ratelimit import Limits
from quanda.retention import Retention
from quanda.revocation import Revocations
from quanda.throttle import LoginThrottle
from quanda.core import open_store
import quanda.static as static_assets
from quanda.ws import FrameGuard, Hub

log = logging.getLogger("quanda.server")

STATIC_DIR = Path(static_assets.__file__).resolve().parent  # static/, installed as the package quanda.static
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HEADERS = (
    Meta(name="viewport", content="width=device-width, initial-scale=1"),
    # the page runs under a CSP without inline script or style: htmx must not eval nor inject styles
    Meta(name="htmx-config", content='{"includeIndicatorStyles": false, "allowEval": false, '
                                     '"allowScriptTags": false}'),
    Script(src="/static/htmx.min.js"),
    Script(src="/static/htmx-ext-ws.js"),
    Script(src="/static/quanda.js"),
    Script(src="/static/connection.js"),
    Script(src="/static/code.js"),
    Script(src="/static/chat.js"), Script(src="/static/todo.js"), Script(src="/static/simulator.js"),
    Script(src="/static/phone.js"),
    Link(rel="icon", href="/static/favicon.svg"),
    Link(rel="stylesheet", href="/static/app.css"),
)


def session_secret(settings: Settings) -> str:
    """QUANDA_SECRET, or on loopback a key kept in data/.sesskey so sessions survive a restart."""
    if settings.secret:
        return settings.secret
    if settings.host not in LOOPBACK:
        raise RuntimeError(f"QUANDA_HOST={settings.host} exposes the app beyond this machine: set QUANDA_SECRET "
                           "to a long random string to sign sessions (and QUANDA_AUTH=accounts)")
    path = Path("data") / ".sesskey"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


async def call(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


def as_list(fragments: Any) -> list:
    if fragments is None:
        return []
    return [f for f in fragments if f is not None] if isinstance(fragments, (list, tuple)) else [fragments]


class PluginHost:
    """How the server asks the plugins: who renders a fact for a tab, who recovers a job, who fills the sidebar."""

    def __init__(self, plugins: list[Plugin]):
        self.plugins = plugins
        self.sidebar_plugin = next((p for p in plugins if p.sidebar is not None), None)
        self.fact_views = {topic: (p, view) for p in plugins for topic, view in p.fact_views.items()}

    async def render_fact(self, topic: str, fact: dict, h: Handle) -> list:
        """A plugin's view of a fact renders for tabs showing its page, and for every tab if it fills the
        sidebar (which is on every page)."""
        found = self.fact_views.get(topic)
        if found is None:
            return []
        plugin, view = found
        if plugin is not self.sidebar_plugin and h.page != plugin.name:
            return []
        return as_list(await call(view, h, fact))

    def recoverers(self, ctx: AppContext) -> dict:
        def recoverer(recover):
            async def run(job: Job) -> None:
                await recover(ctx.handle(job.owner), job)
            return run
        return {kind: recoverer(recover) for p in self.plugins for kind, recover in p.recover.items()}

    async def sidebar(self, h: Handle):
        if self.sidebar_plugin is None:
            return ChatSidebar([])
        return await self.sidebar_plugin.sidebar(h)


def create_app(settings: Settings | None = None, store: Any = None, *, builtin: Sequence[str] = BUILTIN_PLUGINS,
               entry_point_group: str | None = ENTRY_POINT_GROUP, extra_plugins: Sequence[Plugin | str] = ()):
    settings = settings or Settings.from_env()
    plugins = load_plugins(builtin, entry_point_group=entry_point_group, extra=extra_plugins)
    host = PluginHost(plugins)
    if settings.auth not in ("local", "accounts"):
        raise RuntimeError(f"QUANDA_AUTH must be local or accounts, not {settings.auth!r}")
    if settings.host not in LOOPBACK:
        if not settings.accounts:
            raise RuntimeError(f"QUANDA_HOST={settings.host} exposes the app beyond this machine: set "
                               "QUANDA_AUTH=accounts (users log in) — local mode is for loopback only")
        log.warning("binding to %s: anyone who can reach this address can try to log in", settings.host)
    throttle = LoginThrottle()
    limits = Limits(settings.ws_frames_per_s, settings.ws_owner_frames_per_s, settings.ws_max_per_owner,
                    settings.ws_max_per_address)

    async def lifespan(app):
        own_store = store is None
        the_store = store or await open_store(settings.db_url, **settings.store_options())
        llm = make_driver(settings.ollama_host, settings.llm_url or None, settings.llm_api_key or None,
                          settings.llm_stall_s, settings.llm_parallel)
        metrics.instrument_store(the_store)
        pool = HashPool(settings.login_workers, settings.login_queue)
        ctx = AppContext(settings, the_store, plugins, llm=llm, accounts=Accounts(the_store, pool))
        revocations = Revocations(the_store, ctx.accounts)
        await migrate(the_store, settings.accounts)
        health = StoreHealth(the_store)
        ctx.jobs = Jobs(the_store, settings.job_lease_s, host.recoverers(ctx), health)
        hub = Hub(the_store, {a: h for p in plugins for a, h in p.ws_handlers.items()},
                  {role: v for p in plugins for role, v in p.stream_views.items()}, host.render_fact, ctx.handle,
                  limits, health)
        app.state.ctx, app.state.hub, app.state.health = ctx, hub, health
        app.state.revocations = revocations
        await revocations.open()
        for plugin in plugins:
            if plugin.startup is not None:
                await plugin.startup(ctx)
        await hub.open()
        await ctx.jobs.open()
        retention = Retention(the_store, settings.retention_s)
        retention.start()
        log.info("Quanda serving with %s on %s; plugins: %s", type(the_store).__name__, settings.db_url,
                 ", ".join(p.name for p in plugins))
        yield
        await retention.close()
        await ctx.jobs.close()  # each job marks its message before the store closes
        await hub.close()
        await revocations.close()
        pool.close()
        await health.close()
        await llm.aclose()
        if own_store:
            await the_store.close()

    app = FastHTML(default_hdrs=False, hdrs=HEADERS, secret_key=session_secret(settings), lifespan=lifespan,
                   title="Quanda", canonical=False, session_cookie="quanda_session", same_site="strict",
                   exception_handlers={400: http_error, 404: http_error, 405: http_error},
                   middleware=[Middleware(logs.RequestIds), Middleware(Door, host_names=settings.host_names,
                                          handshakes_per_s=settings.ws_handshakes_per_s)])
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    menu_plugins = [p for p in plugins if p.page is not None]
    by_name = {p.name: p for p in plugins}

    async def render(request, session, plugin: Plugin | None):
        ctx: AppContext = request.app.state.ctx
        ensure_session(session)
        owner = await session_owner(settings, ctx.accounts, session)
        if owner is None:  # accounts mode, not signed in
            if request.headers.get("HX-Request"):
                return JSONResponse({"error": "sign in first"}, status_code=401, headers={"HX-Redirect": "/login"})
            return RedirectResponse("/login", status_code=303)
        h = ctx.handle(owner, page=plugin.name if plugin else None)
        content = await call(plugin.page, h) if plugin else home()
        current = plugin.name if plugin else None
        if request.headers.get("HX-Request") and request.headers.get("HX-Target") == "main":
            if request.query_params.get("refresh") != "1":  # a redraw after a reconnect is not a visit
                for each in plugins:  # navigation is not an ambient event: only plugins that ask hear of it
                    if each.on_navigate is not None:
                        await each.on_navigate(h, plugin.name if plugin else None)
            return PageContent(current, content), Menu(plugins, current, oob=True)
        account = None
        if settings.accounts:
            user = await ctx.accounts.session_user(session.get(LOGIN_KEY))
            account = AccountBar(user.name) if user else None
        return Page(plugins, content, await host.sidebar(h), current=current, account=account)

    add_login_routes(app, settings, throttle)

    def home():
        return Section(H2("Welcome to Quanda"),
                       P("Choose a plugin in the menu. The chat on the right sees what you do."), cls="home")

    @app.get("/")
    async def index(request, session):
        return await render(request, session, menu_plugins[0] if menu_plugins else None)

    @app.get("/p/{name}")
    async def plugin_page(request, session, name: str):
        plugin = by_name.get(name)
        if plugin is None or plugin.page is None:
            return JSONResponse({"error": f"no plugin page {name[:40]!r}"}, status_code=404)
        return await render(request, session, plugin)

    @app.get("/-/plugins")
    def list_plugins():
        return JSONResponse([p.describe() for p in plugins])

    app.get("/-/metrics")(metrics.metrics_endpoint)
    app.get("/api/openapi.json")(openapi.openapi_endpoint)

    @app.get("/-/health")
    async def health(request):
        """200 only when a write round trip through the store succeeds; 503 with the reason otherwise."""
        problem = await request.app.state.health.check()
        if problem:
            return JSONResponse({"ok": False, "reason": problem}, status_code=503)
        return JSONResponse({"ok": True})

    async def on_connect(ws, session):
        ctx: AppContext = ws.app.state.ctx
        owner = await session_owner(settings, ctx.accounts, session if isinstance(session, dict) else {})
        if owner is None:
            await ws.send_text(to_xml(Notice("signed out: reload the page to sign in"), indent=False))
            await ws.close(code=1008)
            return
        login = session.get(LOGIN_KEY) if isinstance(session, dict) and settings.accounts else None
        hub = ws.app.state.hub
        try:
            conn = hub.connect(ws, owner, login, ws.client.host if ws.client else "")
        except ClientError as exc:  # too many open: the tab's ws extension retries later (1013)
            await ws.send_text(to_xml(Notice(str(exc)), indent=False))
            await ws.close(code=1013)
            return
        if login is not None:  # closed, with the reason, once that login is no longer valid
            conn.unwatch = ws.app.state.revocations.watch(owner, ("login", login),
                                                          lambda reason: hub.sign_out(conn, reason))

    async def on_disconnect(ws):
        ws.app.state.hub.disconnect(ws)

    @app.ws("/ws", conn=on_connect, disconn=on_disconnect, middleware=[Middleware(FrameGuard, limits=limits)])
    async def ws_receive(ws, data: dict):
        await ws.app.state.hub.receive(ws, data)

    for plugin in plugins:
        if plugin.router is not None:
            plugin.router.to_app(app)
    return app
