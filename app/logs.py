"""Logs a person reads (the default) or a machine searches: QUANDA_LOG_FORMAT=json writes one JSON object per line,
with the ids that let a line be followed across servers:

- `request_id`: the HTTP request or WebSocket the line came from: the client's `X-Request-ID` when it sends a
  sane one (a proxy in front of several servers passes the same one along), else a new random one; sent back
  in the response's `X-Request-ID`;
- `job_id` and `answer_id`: the background job the line came from (a job is named by the message it writes;
  for an answer, that is the answer's id, the same on every server that touches it: Stop, Retry, recovery);
  a job also carries the id of the request that started it.

Each id lives in a context variable, so it follows the code into every task started under it. Other fields:
`time` (ISO 8601, UTC), `level`, `logger`, `message`, `host`, `pid`, and `exception` (the traceback) when
there is one. uvicorn's own lines (start-up, access log) go through the same formatter.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("quanda_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("quanda_job_id", default=None)
ANSWER_ID: ContextVar[str | None] = ContextVar("quanda_answer_id", default=None)
FORMATS = ("human", "json")
HUMAN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HOST = socket.gethostname()


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "host": _HOST, "pid": record.process}
        for name, var in (("request_id", REQUEST_ID), ("job_id", JOB_ID), ("answer_id", ANSWER_ID)):
            value = var.get()
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(log_format: str, level: int = logging.INFO) -> dict:
    """Configure the root logger; returns uvicorn's logging options (its lines go through the same handler)."""
    if log_format not in FORMATS:
        raise ValueError(f"QUANDA_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(HUMAN))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers[:] = []
            logging.getLogger(name).propagate = True
        return {"log_config": None}
    return {}


def in_job(job_id: str, kind: str) -> None:
    """Name the job (and the answer) in the logs of the task that runs it (call it inside that task)."""
    JOB_ID.set(job_id)
    if kind == "assistant":
        ANSWER_ID.set(job_id)


class RequestIds:
    """ASGI middleware: every HTTP request and WebSocket gets a request id (see the module's docstring)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-request-id"), "")
        request_id = given if _SANE_ID.fullmatch(given) else secrets.token_hex(8)
        token = REQUEST_ID.set(request_id)

        async def with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)
        try:
            await self.app(scope, receive, with_id if scope["type"] == "http" else send)
        finally:
            REQUEST_ID.reset(token)
