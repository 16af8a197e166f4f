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

from fasthtml.common import FastHTML
from starlette.middleware import Middleware

from quanda import logs
from quanda.config import Settings
from quanda.door import Door, http_error
from quanda.login import add_login_routes
from quanda.mount import PluginHost, headers, wire
from quanda.pages import add_pages
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
    add_pages(app, settings, plugins, host)
    add_login_routes(app, settings, throttle)
    return app
