"""Who is asking: the owner a request or a WebSocket acts for.

A browser session (a random id in the signed session cookie) is its own owner; the HTTP API's bearer token
(`QUANDA_API_TOKEN`) may use every message. `owner_of` is the one place that decides it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from app.ownership import ANYONE


def session_owner(session: dict) -> str:
    """The owner of a browser session, creating the session's id on first use."""
    sid = session.get("sid")
    if not isinstance(sid, str) or len(sid) != 32:
        sid = session["sid"] = secrets.token_hex(16)
    return sid


def owner_of(request: Any) -> str | None:
    """The owner a request acts for: the bearer token's, or the browser session's; None for nobody."""
    token = request.app.state.ctx.settings.api_token
    auth = request.headers.get("authorization", "")
    if token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), token.encode()):
        return ANYONE
    sid = request.scope.get("session", {}).get("sid")
    return sid if isinstance(sid, str) and len(sid) == 32 else None


def handle_of(request: Any):
    """The Handle an HTTP route acts through; PermissionError when the request has no owner."""
    owner = owner_of(request)
    if owner is None:
        raise PermissionError("sign in with the browser session or Authorization: Bearer <QUANDA_API_TOKEN>")
    return request.app.state.ctx.handle(owner)
