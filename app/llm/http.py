"""`HTTPDriver`: the streaming machinery the HTTP drivers share (Ollama, OpenAI-compatible): the request,
the body read as lines and handed to the wire's decoder, status and transport errors turned into
``ERROR`` events (worded in ``failures.py``), the stall timeout, cancellation by closing the response, the
retry without tools when a server refuses a request that carries them, turns at a server that serves one
request at a time (``gate.py``), and what the server can tell of a model (its window, token counts)."""

from __future__ import annotations

import urllib.request
from abc import abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import LLMDriver, LLMUnavailable
from .events import RUN_CREATED, TOOLS_REJECTED, LLMEvent, error_event
from .failures import FailureEvents, _body_message, _describe, _read_capped, _window_in
from .gate import LLMBusy, LLMGate
from .stream import post_stream
from .tools import tool_names
from .wire import LineSplitter, WireDecoder

TOKEN_COUNTS_KEPT = 4096  # texts whose token count is remembered (a conversation's turns are counted again each answer)

@dataclass
class _Attempt:
    """What one chat request came to, for the retry-without-tools decision."""

    ok: bool = False  # the server answered 200 and the body was streamed
    rejected: tuple[int, str] | None = None  # (status, message) when the request's tools were refused


class HTTPDriver(FailureEvents, LLMDriver):
    """Shared machinery of the streaming HTTP drivers: request, status errors, stall, cancellation,
    and the retry without tools when a server refuses a request that carries them."""

    label = "LLM server"
    url_env = "QUANDA_LLM_URL"
    lone_cr = False
    #: whether this kind of server serves several requests at once (None: find out, see `_probe`)
    serves_several: bool | None = None

    def __init__(
        self, base_url: str, *, stall_s: float = 60.0, client: httpx.AsyncClient | None = None,
        parallel: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.stall_s = stall_s
        self._client = client if client is not None else httpx.AsyncClient()
        self._owns_client = client is None
        self._timeout = httpx.Timeout(stall_s, connect=min(stall_s, 10.0))
        self._tool_support: dict[str, bool] = {}  # per model, learnt from the server's answers
        told = {1: True}.get(parallel, False if parallel > 1 else None)
        known = None if self.serves_several is None else not self.serves_several
        self.gate = LLMGate(told if told is not None else known)
        self._probed = parallel > 0 or self.serves_several is not None
        self.windows: dict[str, int] = {}  # per model: the context window the server said (or refused past)
        self._token_counts: OrderedDict[str, int] = OrderedDict()

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """An answer's turn at the server (see `LLMGate`); the first one finds out what kind it is."""
        async with self.gate.turn():
            if not self._probed:
                self._probed = True
                await self._probe()
            yield

    async def _probe(self) -> None:
        """Find out what kind of server this is (called once, inside a turn, when nothing else of ours runs)."""
        self.gate.exclusive = False

    async def context_window(self, model: str) -> int | None:
        """The model's context window in tokens, as the server tells (None when it does not)."""
        return self.windows.get(model)

    async def count_tokens(self, texts: list[str], model: str) -> list[int] | None:
        """How many tokens each text is for the model, by the server's own tokenizer; None when the
        server has none to ask (then the caller estimates). Counts are remembered by text."""
        path = self._tokenize_path()
        if path is None:
            return None
        counts: list[int] = []
        for text in texts:
            known = self._token_counts.get(text)
            if known is None:
                known = await self._tokenize(path, text, model)
                if known is None:
                    return None
                self._token_counts[text] = known
                if len(self._token_counts) > TOKEN_COUNTS_KEPT:
                    self._token_counts.popitem(last=False)
            else:
                self._token_counts.move_to_end(text)
            counts.append(known)
        return counts

    def _tokenize_path(self) -> str | None:
        return None

    async def _tokenize(self, path: str, text: str, model: str) -> int | None:
        return None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    #: the chat endpoint, relative to base_url
    chat_path: str = ""

    def _chat_request(
        self, messages: list[dict], model: str, tools: list[dict] | None, options: dict | None = None
    ) -> tuple[str, dict]:
        """URL and JSON body of a streaming chat request (the same shape on both wires); ``options``:
        ``temperature``, ``context`` (the window the prompt was fitted to), ``max_tokens`` (room left)."""
        body: dict = {"model": model, "messages": messages, "stream": True}
        if tools:
            body["tools"] = tools
        self._add_options(body, options or {})
        return self.base_url + self.chat_path, body

    def _add_options(self, body: dict, options: dict) -> None:
        """Put the request's options into the body, the wire's way."""

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

    async def _request_json(self, method: str, path: str, body: Any = None, *, root: bool = False) -> Any:
        """The decoded JSON answer of a small request (``path`` under the base URL, or under the server's
        root with ``root``); raises ``LLMUnavailable`` with a clear message, or ``LLMBusy`` when the server
        is answering and would end that answer if asked (see `LLMGate`)."""
        if not self.gate.may_send():
            raise LLMBusy(f"{self.label} at {self.base_url} is busy answering (it serves one request at a time)")
        url = (_root(self.base_url) if root else self.base_url) + path
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
        self, messages: list[dict], model: str, tools: list[dict] | None = None, options: dict | None = None
    ) -> AsyncIterator[LLMEvent]:
        """See ``LLMDriver.stream_chat``; it runs in a turn at the server (the caller's, or one taken here,
        see `LLMGate`). When ``tools`` are given and the server refuses the request in a way that may mean
        "no tools here" (a 4xx other than auth, not-found and rate limits, or a 5xx whose message mentions
        tools), the run yields ``TOOLS_REJECTED`` and asks once more without ``tools``; when that answer
        comes and the refusal mentioned tools, ``supports_tools`` says False for the model from then on. A
        consumer that would rather rebuild its prompt (for JSON commands in text) closes the run on
        ``TOOLS_REJECTED``: the retry is not sent."""
        async with self.turn():
            yield LLMEvent(RUN_CREATED)
            offered = tool_names(tools)
            first = _Attempt()
            async with aclosing(self._attempt(messages, model, tools or None, offered, first, options)) as events:
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
            async with aclosing(self._attempt(messages, model, None, frozenset(), retry, options)) as events:
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
        options: dict | None = None,
    ) -> AsyncIterator[LLMEvent]:
        """One chat request: its events up to the terminal one, or nothing but ``state.rejected``."""
        url, body = self._chat_request(messages, model, tools, options)
        decoder = self._decoder(offered)
        answered = received = False
        try:
            async with self._open_stream(url, body) as resp:
                answered = True
                if resp.status_code >= 300:
                    raw = await _read_capped(resp)
                    detail = _body_message(raw)
                    window = _window_in(raw) if resp.status_code in (400, 413, 500) else None
                    if window is None and tools and _may_refuse_tools(resp.status_code, detail):
                        state.rejected = (resp.status_code, detail)
                        return
                    yield await self._status_error(resp.status_code, detail, model, window)
                    return
                state.ok = True
                if tools:
                    self._tool_support[model] = True
                lines = LineSplitter(lone_cr=self.lone_cr)
                async for data in resp.aiter_bytes():
                    received = True
                    for line in lines.feed(data):
                        for event in decoder.feed(line):
                            yield event
                            if event.is_terminal:
                                return
                for event in decoder.finish(lines.tail()):
                    yield event
                    if event.is_terminal:
                        return
                if not received:
                    yield await self._empty_answer(body, model)
                    return
                failure = error_event(
                    "truncated",
                    f"The answer from {self.label} at {self.base_url} ended without its final line. "
                    "The partial answer is kept; Retry. If it keeps happening, check the server's log "
                    "(a crash or out of memory?).",
                )
        except httpx.HTTPError as exc:
            ended = decoder.ended()
            if ended is not None:  # the answer was whole: only what follows its end was lost
                yield ended
                return
            failure = self._transport_error(exc, answered, model)
        for event in decoder.flush():
            yield event
        yield failure


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


def _root(base_url: str) -> str:
    """The server's root: the base URL without a trailing ``/v1``."""
    return base_url[:-3] if base_url.endswith("/v1") else base_url


def _proxied(url: str) -> bool:
    """Whether the environment asks for a proxy for `url` (httpx honours it; the lean reader does not)."""
    return bool(urllib.request.getproxies()) and not urllib.request.proxy_bypass(urlsplit(url).hostname or "")
