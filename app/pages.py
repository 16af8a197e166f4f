"""The reference app's pages: `/` (the first plugin's page), `/p/<name>` (a plugin's page), each drawn whole or,
for htmx navigation, as the main area and the menu (the sidebar and its socket stay). In accounts mode a
visitor not signed in is sent to /login (app/login.py)."""

from __future__ import annotations

from typing import Any

from fasthtml.common import H2, JSONResponse, P, RedirectResponse, Section

from quanda.access import LOGIN_KEY, connection_owner, ensure_session
from quanda.components.auth import AccountBar
from quanda.components.layout import Menu, Page, PageContent
from quanda.config import Settings
from quanda.context import AppContext
from quanda.mount import PluginHost, call
from quanda.plugin import Plugin


def add_pages(app: Any, settings: Settings, plugins: list[Plugin], host: PluginHost) -> None:
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
