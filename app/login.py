"""Signing in and out (accounts mode): the routes /login and /logout.

A sign-in passes, in order: the throttle of its (name, address) pair and of its address (app/throttle.py:
growing waits after failures, answered 429 with the wait), then the password check in the worker pool
(app/hashpool.py: never on the event loop; 429 at once when too many checks wait). Every failure is logged
with the address it came from, and every attempt counted by result (`quanda_logins_total{result}`). The address is the TCP peer's, or what a proxy listed in
QUANDA_TRUSTED_PROXIES says in `X-Forwarded-For` (app/serve.py); nobody else can set it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fasthtml.common import FtResponse, RedirectResponse

from quanda import metrics
from quanda.access import LOGIN_KEY, ensure_session
from quanda.accounts import AccountError, Accounts
from quanda.components.auth import LoginPage
from quanda.hashpool import PoolBusy
from quanda.throttle import LoginThrottle

log = logging.getLogger("quanda.login")

BUSY_LOG_EVERY_S = 5.0


def client_address(request: Any) -> str:
    return request.client.host if request.client else "?"


def add_login_routes(app: Any, settings: Any, throttle: LoginThrottle) -> None:
    busy_logged = [0.0]

    @app.get("/login")
    async def login_page(request, session):
        if not settings.accounts:
            return RedirectResponse("/", status_code=303)
        return LoginPage()

    @app.post("/login")
    async def login(request, session):
        if not settings.accounts:
            return RedirectResponse("/", status_code=303)
        form = await request.form()
        name, password = str(form.get("username", ""))[:80], str(form.get("password", ""))[:1000]
        address = client_address(request)
        wait = throttle.wait_s(name, address)
        if wait > 0:
            log.info("login for %r from %s refused: throttled for %.0f s more", name[:40], address, wait)
            metrics.LOGINS.labels("throttled").inc()
            metrics.RATE_LIMITED.labels("login").inc()
            return FtResponse(LoginPage(f"Too many failed attempts: try again in {int(wait) + 1} s.", name),
                              status_code=429, headers={"Retry-After": str(int(wait) + 1)})
        accounts: Accounts = request.app.state.ctx.accounts
        try:
            user = await accounts.verify(name, password, priority=throttle.address_failures(address))
        except PoolBusy:
            metrics.LOGINS.labels("busy").inc()
            metrics.RATE_LIMITED.labels("login_queue").inc()
            if time.monotonic() - busy_logged[0] > BUSY_LOG_EVERY_S:
                busy_logged[0] = time.monotonic()
                log.warning("refusing sign-ins: %d password checks already waiting (QUANDA_LOGIN_QUEUE); "
                            "%d refused so far", accounts.pool.queue if accounts.pool else 0,
                            accounts.pool.refused if accounts.pool else 0)
            return FtResponse(LoginPage("Too many sign-ins at once: try again in a moment.", name),
                              status_code=429, headers={"Retry-After": "1"})
        except AccountError as exc:  # the right password, a disabled account
            log.info("login for %r from %s refused: %s", name[:40], address, exc)
            metrics.LOGINS.labels("disabled").inc()
            return FtResponse(LoginPage(str(exc), name), status_code=403)
        if user is None:
            pair, from_address, warning = throttle.failed(name, address)
            metrics.LOGINS.labels("wrong").inc()
            log.info("failed login for %r from %s (%d for that name from there, %d from there)", name[:40],
                     address, pair, from_address)
            if warning:
                log.warning(warning)
            return LoginPage("Wrong user name or password.", name)
        throttle.succeeded(name, address)
        metrics.LOGINS.labels("ok").inc()
        await accounts.close_session(session.get(LOGIN_KEY))
        session.clear()  # a new session id at login: one from before it is worth nothing
        ensure_session(session)
        session[LOGIN_KEY] = await accounts.open_session(user)
        log.info("%s signed in from %s", user.name, address)
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request, session):
        accounts: Accounts = request.app.state.ctx.accounts
        login_id = session.get(LOGIN_KEY)
        user = await accounts.session_user(login_id)
        session.clear()
        # its open tabs and streams, on every server, are closed
        await accounts.close_session(login_id, owner=user.workspace if user is not None else None)
        return RedirectResponse("/login" if settings.accounts else "/", status_code=303)
