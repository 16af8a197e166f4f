"""`HTTPDriver`: the streaming machinery the HTTP drivers share (Ollama, OpenAI-compatible): the request,
the body read as lines and handed to the wire's decoder, status and transport errors turned into
``ERROR`` events with a hint, the stall timeout, cancellation by closing the response, and the retry
without tools when a server refuses a request that carries them.

A little over 300 lines, kept in one module: the request, its error events and the retry share the
driver's state and hints, and are read together."""

from __future__ import annotations

import json
import urllib.request
from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import LLMDriver, LLMUnavailable
from .events import RUN_CREATED, TOOLS_REJECTED, LLMEvent, error_event
from .stream import post_stream
from .tools import tool_names
from .wire import LineSplitter, WireDecoder, error_message

MAX_ERROR_BODY = 64 * 1024


@dataclass
class _Attempt:
    """What one chat request came to, for the retry-without-tools decision."""

    ok: bool = False  # the server answered 200 and the body was streamed
    rejected: tuple[int, str] | None = None  # (status, message) when the request's tools were refused


class HTTPDriver(LLMDriver):
    """Shared machinery of the streaming HTTP drivers: request, status errors, stall, cancellation,
    and the retry without tools when a server refuses a request that carries them."""

    label = "LLM server"
    url_env = "QUANDA_LLM_URL"
    lone_cr = False

    def __init__(
        self, base_url: str, *, stall_s: float = 60.0, client: httpx.AsyncClient | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stall_s = stall_s
        self._client = client if client is not None else httpx.AsyncClient()
        self._owns_client = client is None
        self._timeout = httpx.Timeout(stall_s, connect=min(stall_s, 10.0))
        self._tool_support: dict[str, bool] = {}  # per model, learnt from the server's answers

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    #: the chat endpoint, relative to base_url
    chat_path: str = ""

    def _chat_request(
        self, messages: list[dict], model: str, tools: list[dict] | None
    ) -> tuple[str, dict]:
        """URL and JSON body of a streaming chat request (the same shape on both wires)."""
        body: dict = {"model": model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
        return self.base_url + self.chat_path, body

    @abstractmethod
    def _decoder(self, offered: frozenset[str]) -> WireDecoder:
        """A fresh decoder for one response; ``offered``: the tool names the request offered."""

    def _tools_hint(self) -> str:
        """How to get tool calls from this kind of server (after it refused them)."""
        return "use a model (or server setting) with tool support"

    def _headers(self) -> dict[str, str]:
        return {}

    def _open_stream(self, url: str, body: dict) -> Any:
        """The chat request's streaming response: read lean (app/llm/stream.py), unless an httpx client
        was handed in or a proxy is configured, which only httpx knows how to use."""
        if self._owns_client and not _proxied(url):
            return post_stream(url, body, self._headers(), connect_s=min(self.stall_s, 10.0), stall_s=self.stall_s)
        return self._client.stream("POST", url, json=body, headers=self._headers(), timeout=self._timeout)

    async def supports_tools(self, model: str) -> bool | None:
        """What the server's answers taught: False once it refused ``tools`` for ``model`` (and
        answered without them), True once it accepted them; None before either."""
        return self._tool_support.get(model)

    async def _get_json(self, path: str) -> Any:
        return await self._request_json("GET", path)

    async def _request_json(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer of a small request; raises ``LLMUnavailable`` with a clear message."""
        url = self.base_url + path
        try:
            resp = await self._client.request(
                method, url, json=body, headers=self._headers(), timeout=min(self.stall_s, 10.0)
            )
        except httpx.HTTPError as exc:
            raise LLMUnavailable(
                f"LLM server not reachable at {self.base_url} ({_describe(exc)}): {self.unreachable_hint()}"
            ) from exc
        if resp.status_code != 200:
            raise LLMUnavailable(
                f"{self.label} at {self.base_url} answered HTTP {resp.status_code} to {method} {path}: "
                f"{_body_message(resp.content)}. Check {self.url_env}.",
                status=resp.status_code,
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise LLMUnavailable(
                f"{self.label} at {self.base_url} sent a non-JSON answer to {method} {path}. "
                f"Check {self.url_env}."
            ) from exc

    async def stream_chat(
        self, messages: list[dict], model: str, tools: list[dict] | None = None
    ) -> AsyncIterator[LLMEvent]:
        """See ``LLMDriver.stream_chat``. When ``tools`` are given and the server refuses the request
        in a way that may mean "no tools here" (a 4xx other than auth, not-found and rate limits,
        or a 5xx whose message mentions tools), the run yields ``TOOLS_REJECTED`` and asks once more
        without ``tools``; when that answer comes and the refusal mentioned tools, ``supports_tools``
        says False for the model from then on. A consumer that would rather rebuild its prompt (for
        JSON commands in text) closes the run on ``TOOLS_REJECTED``: the retry is not sent."""
        yield LLMEvent(RUN_CREATED)
        offered = tool_names(tools)
        first = _Attempt()
        async with aclosing(self._attempt(messages, model, tools or None, offered, first)) as events:
            async for event in events:
                yield event
        if first.rejected is None:
            return
        status, detail = first.rejected
        yield LLMEvent(
            TOOLS_REJECTED,
            f"{self.label} at {self.base_url} refused the request with tools (HTTP {status}: {detail}), "
            f"so it is asked again without them: no native tool calls with {model!r}. To get them, "
            f"{self._tools_hint()}.",
            {"status": status, "detail": detail, "model": model},
        )
        retry = _Attempt()
        async with aclosing(self._attempt(messages, model, None, frozenset(), retry)) as events:
            async for event in events:
                yield event
        if retry.ok and _mentions_tools(detail):
            self._tool_support[model] = False

    async def _attempt(
        self,
        messages: list[dict],
        model: str,
        tools: list[dict] | None,
        offered: frozenset[str],
        state: _Attempt,
    ) -> AsyncIterator[LLMEvent]:
        """One chat request: its events up to the terminal one, or nothing but ``state.rejected``."""
        url, body = self._chat_request(messages, model, tools)
        decoder = self._decoder(offered)
        answered = False
        try:
            async with self._open_stream(url, body) as resp:
                answered = True
                if resp.status_code >= 300:
                    raw = await _read_capped(resp)
                    detail = _body_message(raw)
                    if tools and _may_refuse_tools(resp.status_code, detail):
                        state.rejected = (resp.status_code, detail)
                        return
                    yield await self._status_error(resp.status_code, detail, model)
                    return
                state.ok = True
                if tools:
                    self._tool_support[model] = True
                lines = LineSplitter(lone_cr=self.lone_cr)
                async for data in resp.aiter_bytes():
                    for line in lines.feed(data):
                        for event in decoder.feed(line):
                            yield event
                            if event.is_terminal:
                                return
                for event in decoder.finish(lines.tail()):
                    yield event
                    if event.is_terminal:
                        return
                failure = error_event(
                    "truncated",
                    f"The answer from {self.label} at {self.base_url} ended without its final line. "
                    "The partial answer is kept; Retry. If it keeps happening, check the server's log "
                    "(a crash or out of memory?).",
                )
        except httpx.HTTPError as exc:
            failure = self._transport_error(exc, answered, model)
        for event in decoder.flush():
            yield event
        yield failure

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
        """The ERROR event for a problem a decoder found in the body (``stream_error``/``malformed``)."""
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

    async def _status_error(self, status: int, detail: str, model: str) -> LLMEvent:
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


#: statuses that never mean "this server takes no tools"
_NOT_ABOUT_TOOLS = frozenset({401, 403, 404, 407, 408, 413, 429})


def _mentions_tools(detail: str) -> bool:
    text = detail.lower()
    return any(word in text for word in ("tool", "function", "jinja"))


def _may_refuse_tools(status: int, detail: str) -> bool:
    """Whether a failed request that carried tools is worth asking again without them."""
    if status in _NOT_ABOUT_TOOLS:
        return False
    if 400 <= status < 500 or status == 501:
        return True
    return status >= 500 and _mentions_tools(detail)


def _proxied(url: str) -> bool:
    """Whether the environment asks for a proxy for `url` (httpx honours it; the lean reader does not)."""
    return bool(urllib.request.getproxies()) and not urllib.request.proxy_bypass(urlsplit(url).hostname or "")


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
