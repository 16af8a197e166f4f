"""create_app(settings, store=None): the reference app — Quanda's own pages around the plugins.

Pages are server-rendered FT; everything live goes over one `app.ws` endpoint (see app/ws.py), wired with
the store, the static files and the plugins' routes by app/mount.py (what a host's `Quanda.mount` adds too).
Plugins fill the menu, the sidebar and the routes; this module knows nothing of what any plugin does.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Any, Sequence

from fasthtml.common import H2, FastHTML, JSONResponse, P, RedirectResponse, Section
from starlette.middleware import Middleware

from quanda import logs
from quanda.access import LOGIN_KEY, connection_owner, ensure_session
from quanda.components.auth import AccountBar
from quanda.components.layout import Menu, Page, PageContent
from quanda.config import Settings
from quanda.context import AppContext
from quanda.door import Door, http_error
from quanda.login import add_login_routes
from quanda.mount import PluginHost, call, headers, wire
from quanda.plugin import BUILTIN_PLUGINS, ENTRY_POINT_GROUP, Plugin, load_plugins
from quanda.throttle import LoginThrottle

__all__ = ["LOOPBACK", "PluginHost", "create_app", "session_secret"]

log = logging.getLogger("quanda.server")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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


def create_app(settings: Settings | None = None, store: Any = None, *, builtin: Sequence[str] = BUILTIN_PLUGINS,
               entry_point_group: str | None = ENTRY_POINT_GROUP, extra_plugins: Sequence[Plugin | str] = ()):
    settings = settings or Settings.from_env()
    plugins = load_plugins(builtin, entry_point_group=entry_point_group, extra=extra_plugins)
    if settings.auth not in ("local", "accounts"):
        raise RuntimeError(f"QUANDA_AUTH must be local or accounts, not {settings.auth!r}")
    if settings.host not in LOOPBACK:
        if not settings.accounts:
            raise RuntimeError(f"QUANDA_HOST={settings.host} exposes the app beyond this machine: set "
                               "QUANDA_AUTH=accounts (users log in) — local mode is for loopback only")
        log.warning("binding to %s: anyone who can reach this address can try to log in", settings.host)
    throttle = LoginThrottle()

    app = FastHTML(default_hdrs=False, hdrs=headers(plugins), secret_key=session_secret(settings),
                   title="Quanda", canonical=False, session_cookie="quanda_session", same_site="strict",
                   exception_handlers={400: http_error, 404: http_error, 405: http_error},
                   middleware=[Middleware(logs.RequestIds), Middleware(Door, host_names=settings.host_names,
                                          handshakes_per_s=settings.ws_handshakes_per_s)])
    host = wire(app, settings, plugins, store)
    menu_plugins = [p for p in plugins if p.page is not None]
    by_name = {p.name: p for p in plugins}

    async def render(request, session, plugin: Plugin | None):
        ctx: AppContext = request.app.state.ctx
        ensure_session(session)
        owner = await connection_owner(request)
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

    return app
