"""The door: what every HTTP request and WebSocket handshake passes before the app sees it.

- `Host` must be one header, exactly a host name or address and an optional port (`host_name`), naming this
  app (QUANDA_ALLOWED_HOSTS plus the bound address, localhost, 127.0.0.1, [::1]): a page elsewhere that
  rebinds a DNS name to 127.0.0.1 gets 400, and so do a second `Host` and `127.0.0.1:5001@evil.example`.
- A WebSocket handshake whose `Origin` is not the app's own (scheme, host and port) is refused; so is a
  state-changing HTTP request (POST, PUT, PATCH, DELETE) from another origin (`Sec-Fetch-Site` other than
  same-origin, or a foreign `Origin`), or one that carries the session cookie without saying where it
  comes from. A page on another port of 127.0.0.1 is the same *site* (SameSite cookies go with it), so
  this check is what stops it. Bearer-token calls need no Origin.
- A WebSocket handshake over its client address's rate (QUANDA_WS_HANDSHAKES_PER_S, app/ratelimit.py) is
  answered 429 before a session is read.
- The HTTP API's bodies must be `application/json` (415 otherwise); every body is read once, up to
  MAX_BODY_BYTES (413 beyond), and JSON nested deeper than the limit is refused (400) before any parser
  meets it — FastHTML parses every body it routes, so these limits must hold before it does.
- Every response carries a Content-Security-Policy without inline script, `X-Content-Type-Options`,
  `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY` — a refused WebSocket handshake's too: a
  handshake closed before it is accepted (here, by the app or by the router) is answered 403 in JSON, and a
  request whose handler failed is answered 500 here rather than by Starlette's error page.
- A body FastHTML cannot parse (400), a route that does not exist (404), a method a route does not take
  (405, with `Allow`): answered in JSON under /api/ (the API answers in JSON, errors included), in plain text
  elsewhere (`http_error`).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from typing import Any, Callable

from quanda import metrics
from quanda.client_json import MAX_DEPTH, nesting_depth
from quanda.ratelimit import Handshakes

log = logging.getLogger("quanda.door")

MAX_BODY_BYTES = 2 << 20
SESSION_COOKIE = "quanda_session"
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]


async def send_json(send: Callable, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


async def http_error(request: Any, exc: Any) -> Any:
    """400 (a body FastHTML could not parse), 404 and 405 (raised by the router): JSON for the HTTP API, plain
    text for pages."""
    from starlette.responses import JSONResponse, PlainTextResponse

    status, headers = exc.status_code, getattr(exc, "headers", None) or {}
    if status == 405:
        message = f"{request.method} is not allowed here; allowed: {headers.get('Allow', 'none')}"
    elif status == 400:
        message = f"the body is not acceptable: {str(getattr(exc, 'detail', ''))[:200]}"
    else:
        message = "no such route" if status == 404 else "the request was refused"
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return PlainTextResponse(f"{status} {message}", status_code=status, headers=headers)


LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"(?P<name>{LABEL}(?:\.{LABEL})*\.?|\[(?P<ipv6>[0-9a-f:.]+)\])(?::(?P<port>[0-9]{{1,5}}))?")


def host_name(host: str) -> str | None:
    """The name part of a Host header ("[::1]:5001" -> "[::1]", "Example.COM:80" -> "example.com"), or None
    unless the header is exactly a host name, an IPv4 address or a bracketed IPv6 address, and an optional port
    (nothing else: no user info, path, space or second colon)."""
    match = HOST_RE.fullmatch(host.lower())
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        return None
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            return None
    return match["name"]


class Door:
    def __init__(self, app: Any, host_names: set[str], max_bytes: int = MAX_BODY_BYTES,
                 handshakes_per_s: float = 20.0):
        self.app, self.host_names, self.max_bytes = app, host_names, max_bytes
        self.handshakes = Handshakes(handshakes_per_s)
        self._refused_at = 0.0

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            send = self.secured_handshake(scope, send)
        else:
            send = self.secured(send)
        raw = scope.get("headers") or []
        headers = {k.lower(): v for k, v in raw}
        hosts = [v for k, v in raw if k.lower() == b"host"]
        host = hosts[0].decode("latin-1") if len(hosts) == 1 else ""
        if len(hosts) != 1 or host_name(host) not in self.host_names:
            log.warning("refused a request for host %r", b", ".join(hosts)[:80].decode("latin-1"))
            return await self.refuse(scope, send, 400, "this server does not answer to that host name"
                                     if len(hosts) == 1 else "a request names exactly one Host")
        own_origin = ("https" if scope.get("scheme") in ("https", "wss") else "http") + "://" + host.lower()
        origin = headers.get(b"origin", b"").decode("latin-1").lower()
        if scope["type"] == "websocket":
            if origin and origin != own_origin:
                log.warning("refused a WebSocket from origin %r", origin[:80])
                return await self.refuse(scope, send, 403, "a connection from another site was refused")
            address = (scope.get("client") or ("", 0))[0]
            now = time.monotonic()
            if not self.handshakes.allow(address, now):
                if now - self._refused_at > 5:  # once in a while, not once per refused handshake
                    self._refused_at = now
                    log.warning("refusing WebSocket handshakes from %s: over %g a second", address,
                                self.handshakes.rate)
                return await self.too_many(scope, send, self.handshakes.rate)
            return await self.app(scope, receive, send)
        if scope["method"] in STATE_CHANGING and not headers.get(b"authorization", b"").startswith(b"Bearer "):
            if not self.same_origin(headers, origin, own_origin):
                log.warning("refused a %s %s from origin %r", scope["method"], scope.get("path"), origin[:80])
                return await send_json(send, 403, {"error": "a request from another site was refused"})
        return await self.answered(scope, receive, send, headers)

    async def answered(self, scope: dict, receive: Callable, send: Callable, headers: dict) -> None:
        """The request, answered by the app; an exception it raised before answering is answered 500 here (with
        the headers, and no detail), then raised on for the server to log."""
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.read_body(scope, receive, tracked, headers)
        except Exception:
            if not started:
                await send_json(send, 500, {"error": "the server failed to answer; its log says why"})
            raise

    @staticmethod
    def same_origin(headers: dict, origin: str, own_origin: str) -> bool:
        """Whether a state-changing request comes from the app's own pages. A browser says so with
        `Sec-Fetch-Site: same-origin` (its `Origin` may read "null": the pages ask for no referrer); without
        that header the `Origin` must be the app's own — and a request with the session cookie must have one."""
        if origin and origin != "null" and origin != own_origin:
            return False
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1")
        if fetch_site:
            return fetch_site == "same-origin"
        return origin == own_origin or SESSION_COOKIE.encode() + b"=" not in headers.get(b"cookie", b"")

    @staticmethod
    async def refuse(scope: dict, send: Callable, status: int, message: str) -> None:
        """A JSON refusal; for a WebSocket handshake, an HTTP answer in its place (where the server can give
        one: else a bare close, which the server answers 403)."""
        if scope["type"] == "websocket" and "websocket.http.response" not in (scope.get("extensions") or {}):
            return await send({"type": "websocket.close", "code": 1008})
        prefix = "websocket." if scope["type"] == "websocket" else ""
        body = json.dumps({"error": message}).encode()
        await send({"type": prefix + "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *SECURITY_HEADERS]})
        await send({"type": prefix + "http.response.body", "body": body})

    @staticmethod
    async def too_many(scope: dict, send: Callable, rate: float) -> None:
        """429 to a WebSocket handshake (where the server can answer one with a body; else a bare refusal)."""
        metrics.RATE_LIMITED.labels("handshakes").inc()
        if "websocket.http.response" not in (scope.get("extensions") or {}):
            return await send({"type": "websocket.close", "code": 1013})
        body = json.dumps({"error": f"too many connections at once (over {rate:g} a second): "
                                    "try again in a moment"}).encode()
        await send({"type": "websocket.http.response.start", "status": 429,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1"),
                                (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
        await send({"type": "websocket.http.response.body", "body": body})

    @staticmethod
    def secured(send: Callable) -> Callable:
        async def with_headers(message: dict) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start", "websocket.accept"):
                names = {k.lower() for k, _v in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in SECURITY_HEADERS if h[0] not in names)]}
            await send(message)
        return with_headers

    @classmethod
    def secured_handshake(cls, scope: dict, send: Callable) -> Callable:
        """A WebSocket's answers with the security headers; a handshake refused by closing before accepting
        (by the app or the router: no such route) gets a 403 carrying them, where the server can answer one."""
        secured = cls.secured(send)
        can_answer = "websocket.http.response" in (scope.get("extensions") or {})
        accepted = False

        async def answer(message: dict) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            elif message["type"] == "websocket.close" and not accepted and can_answer:
                accepted = True  # answered: nothing more goes out
                return await cls.refuse(scope, secured, 403, "the connection was refused")
            await secured(message)
        return answer

    async def read_body(self, scope: dict, receive: Callable, send: Callable, headers: dict) -> None:
        declared = headers.get(b"content-length", b"")
        too_big = f"the request body is over {self.max_bytes:,} bytes"
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await send_json(send, 413, {"error": too_big})
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await send_json(send, 413, {"error": too_big})
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if body and scope.get("path", "").startswith("/api/") and content_type != b"application/json":
            return await send_json(send, 415, {"error": "the HTTP API takes JSON bodies (Content-Type: "
                                                        "application/json)"})
        if body and b"json" in content_type:
            text = body.decode("utf-8", errors="replace")
            if nesting_depth(text, stop_above=MAX_DEPTH) > MAX_DEPTH:
                log.info("refused a JSON body nested more than %d levels deep on %s", MAX_DEPTH, scope.get("path"))
                return await send_json(send, 400, {"error": f"the body is not acceptable JSON: JSON nested "
                                                            f"more than {MAX_DEPTH} levels deep"})
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
