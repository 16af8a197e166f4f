"""The ``ERROR`` events an HTTP driver makes, each with what happened and how to fix it: a server that cannot be
reached, a refusal by HTTP status (a model missing, a request longer than the window), a stream that broke,
stalled or ended without its end (an answer **cut**), an empty answer. `FailureEvents` is the part of
`HTTPDriver` (``http.py``) that words them; it uses the driver's ``label``, ``base_url``, hints and gate."""

from __future__ import annotations

import json
import re

import httpx

from .base import LLMUnavailable
from .events import LLMEvent, error_event
from .wire import error_message

MAX_ERROR_BODY = 64 * 1024
#: how servers say a request is longer than the model's window, and what the window is
_WINDOW_PATTERNS = (re.compile(r"maximum context length is (\d+)"), re.compile(r"context window of (\d+)"),
                    re.compile(r"context size \((\d+)"), re.compile(r"n_ctx\D{0,4}(\d+)"))


class FailureEvents:
    """How an HTTP driver words its failures (a mixin of `HTTPDriver`)."""

    async def _empty_answer(self, body: dict, model: str) -> LLMEvent:
        """A 200 with an empty body: llama-cpp-python's answer to a streamed request longer than its
        window. `_window_probe` may find out the window (the caller fits the prompt and asks again)."""
        window = await self._window_probe(body)
        if window is not None:
            self.windows[model] = window
        return error_event(
            "too_long",
            f"{self.label} at {self.base_url} answered with an empty body: the conversation is probably "
            f"longer than the model's context window{f' ({window:,} tokens)' if window else ''}. Set "
            "QUANDA_LLM_CONTEXT (or the conversation's context size) to the server's window, then Retry.",
            window=window,
        )

    async def _window_probe(self, body: dict) -> int | None:
        """The window, from the server's refusal of the same request not streamed (None: not found)."""
        return None

    def _transport_error(self, exc: httpx.HTTPError, answered: bool, model: str) -> LLMEvent:
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol)):
            return self._unreachable(exc, model)
        if isinstance(exc, httpx.TimeoutException):
            return error_event(
                "stall",
                f"{self.label} at {self.base_url} sent nothing for {self.stall_s:g} s, so the answer "
                "was stopped. The partial answer is kept; Retry. If the model is slow to load, raise "
                "QUANDA_LLM_STALL_S.",
            )
        if isinstance(exc, httpx.TransportError):
            if not answered:
                return self._unreachable(exc, model)
            return error_event(
                "truncated",
                f"{self.label} at {self.base_url} closed the connection mid-answer ({_describe(exc)}). "
                "The partial answer is kept; Retry. If it keeps happening, check the server's log.",
            )
        return error_event(
            "stream_error", f"Talking to {self.label} at {self.base_url} failed: {_describe(exc)}. Retry."
        )

    def _wire_error(self, reason: str, detail: str) -> LLMEvent:
        """The ERROR event for a problem a decoder found in the body (``stream_error``/``malformed``, or
        ``cut``: the stream ended without the protocol's end of an answer)."""
        if reason == "cut":
            self.gate.learned_exclusive()
            return error_event(
                reason,
                f"{self.label} at {self.base_url} ended the answer before it was finished (no finish reason). "
                "The partial answer is kept; Retry. A server that serves one request at a time does this when "
                "another request reaches it while it answers (llama-cpp-python's --interrupt_requests): from "
                "now on this app asks it one thing at a time.",
            )
        if reason == "stream_error":
            return error_event(
                reason,
                f"{self.label} reported an error mid-answer: {detail}. The partial answer is kept; "
                "Retry, and check the server's log if it repeats.",
            )
        return error_event(
            reason,
            f"{self.label} at {self.base_url} sent something that is not valid {detail}. Check that "
            f"{self.url_env} points at the right kind of server, then Retry.",
        )

    def _unreachable(self, exc: Exception, model: str) -> LLMEvent:
        hint = self.unreachable_hint(model)
        return error_event(
            "unreachable", f"LLM server not reachable at {self.base_url} ({_describe(exc)}): {hint}."
        )

    async def _status_error(self, status: int, detail: str, model: str, window: int | None = None) -> LLMEvent:
        if window is not None:
            self.windows[model] = window
            return error_event(
                "too_long",
                f"The conversation is longer than the context window of {model!r} ({window:,} tokens): "
                f"{self.label} refused it (HTTP {status}: {detail}). Retry: the prompt is fitted to that window.",
                status=status, window=window,
            )
        if status == 404:
            try:
                models = await self.list_models()
            except LLMUnavailable:
                pass
            else:
                available = ", ".join(models) if models else "none"
                return error_event(
                    "model_missing",
                    f"Model {model!r} is not available at {self.base_url} (HTTP 404: {detail}). "
                    f"Available models: {available}. {self.missing_model_hint(model)}",
                    status=status,
                    models=models,
                )
        return error_event(
            "http_status",
            f"{self.label} at {self.base_url} answered HTTP {status}: {detail}. {self._status_hint(status)}",
            status=status,
        )

    def _status_hint(self, status: int) -> str:
        if status in (401, 403):
            return "Check the API key (QUANDA_LLM_API_KEY)."
        if status == 404:
            return f"Check the server URL ({self.url_env})."
        if status == 429:
            return "The server is rate-limiting or busy; wait a moment and Retry."
        if status >= 500:
            return "Check the server's log, then Retry."
        return (
            "The server rejected the request (conversation too long for the context, or a feature the "
            "model lacks?); Retry with a shorter conversation or another model."
        )


def _window_in(raw: bytes) -> int | None:
    """The context window a refusal names, when it is a refusal for length (None otherwise)."""
    text = raw.decode("utf-8", errors="replace")
    lowered = text.lower()
    if not any(word in lowered for word in ("context", "n_ctx", "too long", "exceed")):
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("n_ctx"), int):
        return error["n_ctx"]
    for pattern in _WINDOW_PATTERNS:
        found = pattern.search(text)
        if found:
            return int(found.group(1))
    return None


async def _read_capped(resp: httpx.Response) -> bytes:
    raw = bytearray()
    async for data in resp.aiter_bytes():
        raw += data
        if len(raw) >= MAX_ERROR_BODY:
            break
    return bytes(raw)


def _body_message(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        message = error_message(json.loads(text))
    except ValueError:
        message = None
    return _shorten(message or text or "(empty body)")


def _describe(exc: Exception) -> str:
    return _shorten(str(exc) or type(exc).__name__)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
