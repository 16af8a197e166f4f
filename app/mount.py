"""Quanda wired into a FastHTML app: what the reference app (app/server.py) and a host's `Quanda.mount`
(app/host.py) both add to the app they are given.

- the lifespan: the store, the LLM driver, the jobs, the WebSocket hub, revocations and retention, opened
  around the app's own lifespan (a host's keeps working);
- the routes: the WebSocket `/ws`, `/static` (quanda.static) and each plugin's declared assets under
  `/static/plugins/<plugin>/<file>`, `/-/plugins`, `/-/health`, `/-/metrics`, `/api/openapi.json`, and every
  plugin's own routes (the HTTP API, the chat's);
- the head: htmx, its ws extension, quanda.js and the plugins' assets (the server lists none by name).

Who a request or socket acts for is decided in app/access.py (`connection_owner`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path
from typing import Any

from fasthtml.common import JSONResponse, Link, Meta, Script, to_xml
from starlette.middleware import Middleware
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

import quanda.static as static_assets
from quanda import metrics, openapi
from quanda.access import LOGIN_KEY, connection_owner
from quanda.accounts import Accounts
from quanda.components.chat import ChatSidebar
from quanda.components.layout import Notice
from quanda.config import Settings
from quanda.context import AppContext, ClientError, Handle
from quanda.core import open_store
from quanda.hashpool import HashPool
from quanda.health import StoreHealth
from quanda.jobs import Job, Jobs
from quanda.llm import make_driver
from quanda.migrate import migrate
from quanda.plugin import Plugin
from quanda.ratelimit import Limits
from quanda.retention import Retention
from quanda.revocation import Revocations
from quanda.ws import FrameGuard, Hub

log = logging.getLogger("quanda.server")

STATIC_DIR = Path(static_assets.__file__).resolve().parent  # static/, installed as the package quanda.static
HEADERS = (
    Meta(name="viewport", content="width=device-width, initial-scale=1"),
    # the page runs under a CSP without inline script or style: htmx must not eval nor inject styles
    Meta(name="htmx-config", content='{"includeIndicatorStyles": false, "allowEval": false, '
                                     '"allowScriptTags": false}'),
    Script(src="/static/htmx.min.js"),
    Script(src="/static/htmx-ext-ws.js"),
    Script(src="/static/quanda.js"),
    Script(src="/static/connection.js"),  # the offline banner and what waits to be sent
    Script(src="/static/code.js"),
    Script(src="/static/phone.js"),  # the chat as a drawer on a phone (the reference page's layout)
    Link(rel="icon", href="/static/favicon.svg"),
    Link(rel="stylesheet", href="/static/app.css"),
)


def asset_headers(plugins: list[Plugin]) -> tuple:
    """What each plugin declared it brings (its `assets`), in plugin order: a script or a stylesheet."""
    return tuple(Script(src=url) if path.suffix == ".js" else Link(rel="stylesheet", href=url)
                 for p in plugins for url, path in p.asset_urls())


def headers(plugins: list[Plugin]) -> tuple:
    return HEADERS + asset_headers(plugins)


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
        sidebar (which is on every page) or has no page of its own (a host's: its pages are the host's)."""
        found = self.fact_views.get(topic)
        if found is None:
            return []
        plugin, view = found
        if plugin is not self.sidebar_plugin and plugin.page is not None and h.page != plugin.name:
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


def wire(app: Any, settings: Settings, plugins: list[Plugin], store: Any = None, *, workspace: Any = None) -> PluginHost:
    """Add Quanda to `app` (see the module's docstring). `store`: an open store to use (else one is opened
    from settings.db_url, and closed with the app); `workspace`: the host's function from a request or
    socket to the workspace it acts for (None: Quanda's own sessions, local mode or accounts)."""
    host = PluginHost(plugins)
    routes_before = list(app.router.routes)  # a host's own, e.g. fast_app's catch-all for static files
    limits = Limits(settings.ws_frames_per_s, settings.ws_owner_frames_per_s, settings.ws_max_per_owner,
                    settings.ws_max_per_address)
    app.state.workspace_of = workspace

    @contextlib.asynccontextmanager
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
        try:
            async with outer(app) as state:
                yield state
        finally:
            await retention.close()
            await ctx.jobs.close()  # each job marks its message before the store closes
            await hub.close()
            await revocations.close()
            pool.close()
            await health.close()
            await llm.aclose()
            if own_store:
                await the_store.close()

    outer = app.router.lifespan_context
    app.router.lifespan_context = lifespan

    assets = {url: path for p in plugins for url, path in p.asset_urls()}

    @app.get("/static/plugins/{plugin}/{name}")
    def plugin_asset(plugin: str, name: str):
        path = assets.get(f"/static/plugins/{plugin}/{name}")
        if path is None:
            return JSONResponse({"error": "no such asset"}, status_code=404)
        return FileResponse(path)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

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
        owner = await connection_owner(ws)
        if owner is None:
            await ws.send_text(to_xml(Notice("signed out: reload the page to sign in"), indent=False))
            await ws.close(code=1008)
            return
        login = session.get(LOGIN_KEY) if isinstance(session, dict) and settings.accounts and workspace is None else None
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
    ours = [r for r in app.router.routes if not any(r is b for b in routes_before)]
    app.router.routes[:] = ours + routes_before  # Quanda's paths first: a host's catch-all must not hide them
    return host
