"""The door: what every HTTP request passes before the app sees it.

`BodyGuard` reads a request body once, up to MAX_BODY_BYTES (413 beyond), refuses JSON nested deeper than
the limit (400) before any parser meets it, and hands the body on. FastHTML parses every body it routes
(forms and JSON) to fill handler parameters, so these limits must hold before it does.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from app.client_json import MAX_DEPTH, nesting_depth

log = logging.getLogger("quanda.door")

MAX_BODY_BYTES = 2 << 20


async def send_json(send: Callable, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyGuard:
    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
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
        if b"json" in headers.get(b"content-type", b"") and body:
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
