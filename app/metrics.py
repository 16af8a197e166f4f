"""What an operator scrapes: `GET /-/metrics`, Prometheus text exposition (prometheus-client).

One server process counts what it does itself, and its `/-/metrics` shows its own figures: several servers
on one database are several scrape targets, and no figure counts what another process did (Prometheus adds
them up, e.g. `sum(rate(quanda_tokens_streamed_total[1m]))`). Several worker processes behind one port (a
scrape reaches one of them) use prometheus-client's multiprocess mode: set `PROMETHEUS_MULTIPROC_DIR` to an
empty folder for all of them before they start, and each one's `/-/metrics` then shows the sum over the
workers (gauges: over the live ones). No metric has a per-workspace or per-message label (cardinality).

Access: loopback clients only, unless QUANDA_METRICS_TOKEN is set (then `Authorization: Bearer <it>` from
anywhere) or QUANDA_METRICS_PUBLIC=1 (anyone who can reach the server).

The hot paths pay little: tokens are counted by the batch (one increment per ~64 LLM tokens and at the end
of each request), frames by the frame, store calls by the call (a store call writes a batch of tokens).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from functools import wraps
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest,
                               multiprocess)
from starlette.responses import JSONResponse, Response

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1.0, 2.5, 5.0, 10.0)
TOKEN_BATCH = 64  # LLM tokens counted per increment while a request streams

TOKENS = Counter("quanda_tokens_streamed", "LLM tokens streamed into answers", ["kind"])  # text, reasoning
ANSWERS = Counter("quanda_answers", "Answers ended, by outcome", ["outcome"])
FIRST_TOKEN = Histogram("quanda_time_to_first_token_seconds", "From a request to the LLM to its first token",
                        buckets=(.05, .1, .25, .5, 1, 2, 5, 10, 30, 60))
TOKEN_TO_FRAME = Histogram("quanda_token_to_frame_seconds",
                           "From a token reaching a stream's follower to the WebSocket frame carrying it",
                           buckets=(.001, .0025, .005, .01, .016, .025, .033, .05, .1, .25, 1.0))
OPEN_TABS = Gauge("quanda_open_tabs", "WebSocket connections (tabs) open", multiprocess_mode="livesum")
WS_FRAMES = Counter("quanda_ws_frames", "WebSocket frames, by direction", ["direction"])  # in, out
STORE_SECONDS = Histogram("quanda_store_operation_seconds", "Store calls, by operation", ["operation"],
                          buckets=LATENCY_BUCKETS)
STORE_ERRORS = Counter("quanda_store_errors", "Store calls that failed, by operation and kind of error",
                       ["operation", "kind"])
LLM_REQUESTS = Counter("quanda_llm_requests", "Chat requests to the LLM server, by how they ended", ["result"])
LEASES_HELD = Gauge("quanda_leases_held", "Jobs (answers, simulator runs) this server holds a lease on",
                    multiprocess_mode="livesum")
LEASES_TAKEN_OVER = Counter("quanda_leases_taken_over", "Expired leases of a dead server's jobs claimed here")
FRAMES_IN, FRAMES_OUT = WS_FRAMES.labels("in"), WS_FRAMES.labels("out")
RATE_LIMITED = Counter("quanda_rate_limit_refusals", "Requests refused or slowed by a limit, by limit", ["limit"])
LOGINS = Counter("quanda_logins", "Sign-in attempts, by result", ["result"])  # ok, wrong, throttled, busy, disabled
REVOKED = Counter("quanda_connections_revoked", "Open WebSockets and event streams closed because what let them "
                  "in was revoked (a password changed, a token revoked, a user disabled or removed, a logout)")

for _outcome in ("done", "stopped", "failed", "cut", "interrupted"):  # shown at 0 before the first of each
    ANSWERS.labels(_outcome)
for _kind in ("text", "reasoning"):
    TOKENS.labels(_kind)
for _result in ("ok", "wrong", "throttled", "busy", "disabled"):
    LOGINS.labels(_result)

STORE_OPERATIONS = ("create_message", "get_message", "append", "select_tokens", "select_messages",
                    "insert_record", "put_record", "get_record", "delete_record", "list_records",
                    "commit_records", "bump_counter", "publish", "acquire_lease", "renew_lease", "release_lease",
                    "get_lease", "expired_leases")
LLM_RESULTS = frozenset({"completed", "cancelled", "tools_rejected", "error", "unreachable", "model_missing",
                         "http_status", "stream_error", "truncated", "stall", "malformed"})
ERROR_KINDS = frozenset({"QuandaStoreError", "QuandaNotFoundError", "QuandaImmutableError", "QuandaLimitError",
                         "QuandaTimeoutError", "QuandaFencedError", "QuandaError", "TypeError", "ValueError"})


def instrument_store(store: Any) -> Any:
    """Time every call of the store's interface (on this instance; once however often asked)."""
    if getattr(store, "_quanda_metrics", False):
        return store
    for name in STORE_OPERATIONS:
        method = getattr(store, name, None)
        if method is not None:
            setattr(store, name, _timed(name, method))
    store._quanda_metrics = True
    return store


def _timed(name: str, method: Any) -> Any:
    observe = STORE_SECONDS.labels(name).observe

    @wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            kind = type(exc).__name__
            STORE_ERRORS.labels(name, kind if kind in ERROR_KINDS else "other").inc()
            raise
        finally:
            observe(time.perf_counter() - started)
    return timed


class LLMRequest:
    """One request to the LLM: its tokens (counted by the batch), its first token's delay, how it ended
    (`result`: the run's terminal event, None when it was left early — a Stop)."""

    __slots__ = ("pending", "asked", "result")

    async def __aenter__(self) -> "LLMRequest":
        self.pending = {"text": 0, "reasoning": 0}
        self.asked: float | None = time.perf_counter()
        self.result: Any = None
        return self

    def token(self, kind: str = "text") -> None:
        if self.asked is not None:
            FIRST_TOKEN.observe(time.perf_counter() - self.asked)
            self.asked = None
        self.pending[kind] += 1
        if self.pending[kind] >= TOKEN_BATCH:
            TOKENS.labels(kind).inc(self.pending[kind])
            self.pending[kind] = 0

    async def __aexit__(self, *exc_info: Any) -> None:
        for kind, count in self.pending.items():
            if count:
                TOKENS.labels(kind).inc(count)
        event = self.result
        if event is None:
            result = "cancelled"
        elif event.type == "error":
            result = str((event.data or {}).get("reason") or "error")
        else:
            result = {"thread.run.completed": "completed"}.get(event.type, "tools_rejected")
        LLM_REQUESTS.labels(result if result in LLM_RESULTS else "other").inc()


def registry() -> CollectorRegistry | None:
    """What a scrape reads: this process's metrics, or every worker's in multiprocess mode."""
    if not MULTIPROCESS:
        return None  # prometheus-client's default registry: this process (and its process_* figures)
    collected = CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)
    return collected


def exposition() -> bytes:
    found = registry()
    return generate_latest(found) if found is not None else generate_latest()


def allowed(settings: Any, client_host: str | None, authorization: str) -> bool:
    """Loopback clients; with QUANDA_METRICS_TOKEN, a bearer of it; with QUANDA_METRICS_PUBLIC=1, anyone."""
    if settings.metrics_public:
        return True
    if settings.metrics_token and authorization.startswith("Bearer "):
        return hmac.compare_digest(authorization[7:].strip().encode(), settings.metrics_token.encode())
    try:
        return client_host is not None and ipaddress.ip_address(client_host).is_loopback
    except ValueError:
        return False


async def metrics_endpoint(request):  # (no annotation: FastHTML passes `request` by its name)
    settings = request.app.state.ctx.settings
    client = request.client.host if request.client else None
    if not allowed(settings, client, request.headers.get("authorization", "")):
        return JSONResponse({"error": "metrics are for this machine: set QUANDA_METRICS_TOKEN to scrape from "
                                      "elsewhere"}, status_code=403)
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
