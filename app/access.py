"""Who is asking: the owner (workspace) a request or a WebSocket acts for. The one place that decides it.

- Local mode (the default, loopback only): everything belongs to the one workspace of the person at this
  machine, whatever the browser or cookie; the HTTP API takes the page's session or
  `Authorization: Bearer $QUANDA_API_TOKEN`.
- Accounts mode: a browser acts for the user its login session names; the HTTP API for the user whose
  token (`qk_…`) it presents. Nobody else gets an owner: pages send them to /login, the WebSocket and
  the API refuse them.
- A host application that mounts Quanda (`Quanda(workspace=…)`, app/host.py) decides it for browsers
  itself: its function gets the request or socket and returns the workspace id, or None (not signed in).
"""

from __future__ import annotations

import hmac
import inspect
import secrets
from typing import Any

from quanda.accounts import LOCAL_WORKSPACE, Accounts

LOGIN_KEY = "login"  # the session cookie's field naming the login session (accounts mode)
MAX_WORKSPACE = 200  # characters of a workspace id a host's function may return


def ensure_session(session: dict) -> str:
    """A random id for the browser session (what ties its tabs' drafts and notices together)."""
    sid = session.get("sid")
    if not isinstance(sid, str) or len(sid) != 32:
        sid = session["sid"] = secrets.token_hex(16)
    return sid


async def session_owner(settings: Any, accounts: Accounts, session: dict) -> str | None:
    """The workspace a browser session acts for; None when it must log in first."""
    if not settings.accounts:
        return LOCAL_WORKSPACE
    user = await accounts.session_user(session.get(LOGIN_KEY))
    return user.workspace if user else None


async def connection_owner(conn: Any) -> str | None:
    """The workspace a browser's request or WebSocket acts for (the host's function decides, when it gave one);
    None when it must sign in first."""
    ctx = conn.app.state.ctx
    workspace_of = getattr(conn.app.state, "workspace_of", None)
    if workspace_of is not None:
        owner = workspace_of(conn)
        owner = await owner if inspect.isawaitable(owner) else owner
        if owner is None:
            return None
        if not isinstance(owner, str) or not 0 < len(owner) <= MAX_WORKSPACE:
            raise TypeError(f"the workspace function must return None or a str of 1 to {MAX_WORKSPACE} "
                            f"characters, not {type(owner).__name__}")
        return owner
    return await session_owner(ctx.settings, ctx.accounts, conn.scope.get("session") or {})


async def bearer_owner(settings: Any, accounts: Accounts, authorization: str) -> str | None:
    """The workspace a bearer token acts for, or None when there is no (valid) token."""
    if not authorization.startswith("Bearer "):
        return None
    token = authorization[7:].strip()
    if settings.accounts:
        user = await accounts.token_user(token)
        return user.workspace if user else None
    if settings.api_token and hmac.compare_digest(token.encode(), settings.api_token.encode()):
        return LOCAL_WORKSPACE
    return None


async def request_owner(request: Any) -> str | None:
    """The owner an HTTP request acts for (its bearer token's, else its session's), or None."""
    ctx = request.app.state.ctx
    authorization = request.headers.get("authorization", "")
    if authorization:
        return await bearer_owner(ctx.settings, ctx.accounts, authorization)
    session = request.scope.get("session") or {}
    if getattr(request.app.state, "workspace_of", None) is None and not ctx.settings.accounts \
            and not isinstance(session.get("sid"), str):
        return None  # the API without a token needs the page's session (a visitor of the app)
    return await connection_owner(request)


async def handle_of(request: Any):
    """The Handle an HTTP route acts through; PermissionError when the request has no owner."""
    owner = await request_owner(request)
    if owner is None:
        raise PermissionError("sign in: use the page's session, or Authorization: Bearer <token>")
    return request.app.state.ctx.handle(owner)
