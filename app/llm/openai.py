"""OpenAI-compatible chat API (llama.cpp server, vLLM, LM Studio, Ollama ``/v1``, OpenAI).

``POST {base}/chat/completions`` with ``stream: true`` answers Server-Sent Events; models come from
``GET {base}/models``. ``base`` includes ``/v1``, as OpenAI clients take it. Every request asks for the usage
(``stream_options.include_usage``) and sends the room left in the window as ``max_tokens``.

What kind of server it is, found out once (`_probe`, inside the first answer's turn): llama.cpp's
``llama-server`` answers ``GET /props`` (its window per slot, ``default_generation_settings.n_ctx``, and
``POST /tokenize``) and serves several requests at once; llama-cpp-python's server lists ``/extras/tokenize``
in its ``/openapi.json`` and serves one request at a time, ending a running answer at any other request;
any other server is taken to serve several until it cuts an answer (then it is asked one thing at a time).

Tool calls stream as ``delta.tool_calls`` fragments keyed by ``index``: the first fragment of a call
carries its ``id`` and ``function.name``, the ``function.arguments`` JSON text comes in pieces split
anywhere, calls may interleave. A result goes back as ``{"role": "tool", "tool_call_id": ..., ...}``
after the assistant message that made the calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from .base import LLMUnavailable, call_data
from .events import REASONING, LLMEvent, completed_event
from .failures import _window_in
from .http import HTTPDriver
from .tools import MAX_ARGUMENTS_CHARS, ToolCallChecker
from .usage import openai_usage
from .wire import ErrorFactory, ThinkSplitter, error_message


class OpenAIDriver(HTTPDriver):
    """Chat with an OpenAI-compatible server over streaming ``/chat/completions``."""

    chat_path = "/chat/completions"

    label = "LLM server"
    url_env = "QUANDA_LLM_URL"
    lone_cr = True

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        stall_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
        parallel: int = 0,
    ) -> None:
        super().__init__(base_url, stall_s=stall_s, client=client, parallel=parallel)
        self._api_key = api_key or None
        self.kind = "OpenAI-compatible"  # or "llama.cpp" / "llama-cpp-python", once probed
        self._tokenize_at: str | None = None
        self._props_window: int | None = None

    async def _probe(self) -> None:
        try:
            props = await self._request_json("GET", "/props", root=True)
        except LLMUnavailable:
            props = None
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        if isinstance(settings, dict):
            self.kind, self._tokenize_at = "llama.cpp", "/tokenize"
            n_ctx = settings.get("n_ctx")
            self._props_window = n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None
            self.gate.exclusive = False if self.gate.exclusive is None else self.gate.exclusive
            return
        try:
            spec = await self._request_json("GET", "/openapi.json", root=True)
        except LLMUnavailable:
            spec = None
        paths = spec.get("paths") if isinstance(spec, dict) else None
        if isinstance(paths, dict) and "/extras/tokenize" in paths:
            self.kind, self._tokenize_at = "llama-cpp-python", "/extras/tokenize"
            self.gate.exclusive = True if self.gate.exclusive is None else self.gate.exclusive
            return
        self.gate.exclusive = False if self.gate.exclusive is None else self.gate.exclusive

    async def context_window(self, model: str) -> int | None:
        return self.windows.get(model) or self._props_window

    def _tokenize_path(self) -> str | None:
        return self._tokenize_at

    async def _tokenize(self, path: str, text: str, model: str) -> int | None:
        body = {"content": text} if path == "/tokenize" else {"input": text, "model": model}
        try:
            data = await self._request_json("POST", path, body, root=True)
        except LLMUnavailable:
            return None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    def _add_options(self, body: dict, options: dict) -> None:
        body["stream_options"] = {"include_usage": True}
        if options.get("temperature") is not None:
            body["temperature"] = options["temperature"]
        if options.get("max_tokens"):
            body["max_tokens"] = options["max_tokens"]

    async def _window_probe(self, body: dict) -> int | None:
        """Ask again, not streamed and for one token: llama-cpp-python refuses that with a 400 that names the
        window (its streamed answer to a request too long was an empty body)."""
        probe = {**body, "stream": False, "max_tokens": 1}
        probe.pop("stream_options", None)
        try:
            resp = await self._client.post(self.base_url + self.chat_path, json=probe, headers=self._headers(),
                                           timeout=self._timeout)
        except httpx.HTTPError:
            return None
        return _window_in(resp.content) if resp.status_code >= 400 else None

    async def list_models(self) -> list[str]:
        data = await self._get_json("/models")
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise LLMUnavailable(
                f"{self.base_url}/models did not list models: does QUANDA_LLM_URL end in /v1?"
            )
        return [m["id"] for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def assistant_tool_message(self, calls: Sequence[Any], text: str = "", thinking: str = "") -> dict:
        tool_calls = []
        for call in calls:
            data = call_data(call)
            arguments = json.dumps(data.get("arguments") or {}, ensure_ascii=False)
            function = {"name": data["name"], "arguments": arguments}
            tool_calls.append({"id": data["id"], "type": "function", "function": function})
        return {"role": "assistant", "content": text or None, "tool_calls": tool_calls}

    def tool_result_message(self, call: Any, result: str) -> dict:
        return {"role": "tool", "tool_call_id": call_data(call)["id"], "content": result}

    def model_status(self, model: str, models: Sequence[str]) -> tuple[bool, str]:
        if model and self.has_model(model, models):
            return True, f"LLM ready: {model}"
        if not models:
            return False, f"the LLM server at {self.base_url} lists no models: check how it was started"
        choices = ", ".join(models[:8])
        if not model:
            return False, f"no model chosen: set QUANDA_LLM_MODEL to one of {choices}"
        return False, (
            f"model {model!r} is not served at {self.base_url}; set QUANDA_LLM_MODEL to one of {choices} "
            "(or leave it empty for the server's first model)"
        )

    def _decoder(self, offered: frozenset[str]) -> SSEDecoder:
        return SSEDecoder(self._wire_error, offered)

    def unreachable_hint(self, model: str = "") -> str:
        return (
            "start it (e.g. `llama-server -m model.gguf --port 8080` or `vllm serve <model>`), or fix "
            "QUANDA_LLM_URL (the base URL including /v1)"
        )

    def missing_model_hint(self, model: str) -> str:
        return (
            "Set QUANDA_LLM_MODEL to one of the available models (or leave it empty for the server's "
            "first model)."
        )

    def _tools_hint(self) -> str:
        return (
            "start llama.cpp's llama-server with --jinja, or vLLM with --enable-auto-tool-choice "
            "--tool-call-parser <parser>, or pick a model with tool support"
        )


class SSEDecoder:
    """Events from the lines of an OpenAI-style ``chat.completion.chunk`` event stream.

    Follows the SSE rules (comments, ``data:`` with or without a space, multi-line data joined by
    ``\\n``, dispatch on a blank line) and accepts llama.cpp's non-standard ``error: {...}`` field.
    Any other unknown field is taken as a sign that the server does not speak SSE (an HTML page).
    A ``finish_reason`` is the protocol's end of an answer: the tool calls (fragments merged by ``index``)
    are emitted then, in ``index`` order, and the run completes at the ``usage`` chunk that follows when
    the server sends one, else at ``[DONE]`` or the end of the body. A ``[DONE]`` (or the end of the body)
    with no ``finish_reason`` before it is an answer **cut** (llama-cpp-python's server ends a running
    stream that way when another request reaches it): an ``ERROR`` with reason ``cut``, no calls. A fragment with a new ``id``
    at an index already in use starts another call (servers that number every call 0).
    """

    def __init__(self, wire_error: ErrorFactory, offered: frozenset[str] = frozenset()) -> None:
        self._think = ThinkSplitter()
        self._wire_error = wire_error
        self._event = ""
        self._data: list[str] = []
        self._calls: list[dict] = []  # in the order they started
        self._by_index: dict[int, dict] = {}
        self._checker = ToolCallChecker(offered)
        self._finish: str | None = None  # the finish_reason, once given: the answer is whole
        self._usage: dict = {}

    def feed(self, line: str) -> list[LLMEvent]:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return []
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "error":
            self._event = "error"
            self._data.append(value)
        elif field not in ("id", "retry"):
            return self._fail("malformed", f"event stream (line {line[:120]!r})")
        return []

    def flush(self) -> list[LLMEvent]:
        return self._think.flush()

    def finish(self, tail: str) -> list[LLMEvent]:
        out = self.feed(tail) if tail else []
        if out and out[-1].is_terminal:
            return out
        out += self._dispatch(at_eof=True)
        if out and out[-1].is_terminal:
            return out
        ended = self.ended()
        return out + [ended] if ended is not None else out

    def ended(self) -> LLMEvent | None:
        """The completion, when the answer was whole (its finish_reason came) but the stream did not say
        more: the body ended, or broke, before ``[DONE]``."""
        return completed_event(self._finish, self._usage) if self._finish else None

    def _dispatch(self, at_eof: bool = False) -> list[LLMEvent]:
        if not self._data:
            self._event = ""
            return []
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if data.strip() == "[DONE]":
            if self._finish is None:
                return self._fail("cut", "")
            return [completed_event(self._finish, self._usage)]
        try:
            obj = json.loads(data)
        except ValueError:
            if at_eof:
                return []
            if event == "error":
                return self._fail("stream_error", data)
            return self._fail("malformed", f"JSON in a data: line: {data[:120]!r}")
        if event == "error" or (isinstance(obj, dict) and ("error" in obj or obj.get("object") == "error")):
            return self._fail("stream_error", error_message(obj) or data)
        if not isinstance(obj, dict):
            return self._fail("malformed", f"chunk: {data[:120]!r}")
        if "usage" in obj or "timings" in obj:
            self._usage = openai_usage(obj) or self._usage
            if self._finish is not None and isinstance(obj.get("usage"), dict):
                return [completed_event(self._finish, self._usage)]  # the last chunk: [DONE] is all that follows
        choices = obj.get("choices")
        if not choices:
            return []
        choice = choices[0] if isinstance(choices, list) else None
        delta = (choice.get("delta") or {}) if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return self._fail("malformed", f"chunk: {data[:120]!r}")
        return self._choice(choice, delta)

    def _choice(self, choice: dict, delta: dict) -> list[LLMEvent]:
        out: list[LLMEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(LLMEvent(REASONING, reasoning))
        content = delta.get("content")
        if isinstance(content, str):
            out += self._think.feed(content)
        for position, fragment in enumerate(delta.get("tool_calls") or []):
            if isinstance(fragment, dict):
                self._merge(position, fragment)
        if choice.get("finish_reason") and self._finish is None:
            out += self._complete(choice["finish_reason"])
        return out

    def _merge(self, position: int, fragment: dict) -> None:
        index = fragment.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position
        call_id = fragment.get("id") if isinstance(fragment.get("id"), str) and fragment.get("id") else None
        call = self._by_index.get(index)
        if call is None or (call_id and call["id"] and call_id != call["id"]):
            call = {"index": index, "id": None, "name": None, "arguments": ""}
            self._by_index[index] = call
            self._calls.append(call)
        if call_id and not call["id"]:
            call["id"] = call_id
        fn = fragment.get("function")
        fn = fn if isinstance(fn, dict) else {}
        if isinstance(fn.get("name"), str) and fn["name"] and not call["name"]:
            call["name"] = fn["name"]
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            if isinstance(call["arguments"], str) and len(call["arguments"]) <= MAX_ARGUMENTS_CHARS:
                call["arguments"] += arguments  # (past the limit the call is refused anyway)
        elif arguments is not None:
            call["arguments"] = arguments  # a server that sends the whole object at once

    def _complete(self, reason: str) -> list[LLMEvent]:
        """The answer's end: its calls now; the completion once the usage (or [DONE], or the end) comes."""
        out = self._think.flush()
        for call in sorted(self._calls, key=lambda c: c["index"]):  # stable: same index, arrival order
            out.append(self._checker.event(call["name"], call["arguments"], call["id"]))
        self._calls, self._by_index = [], {}
        self._finish = reason
        return out

    def _fail(self, reason: str, detail: str) -> list[LLMEvent]:
        return [*self._think.flush(), self._wire_error(reason, detail)]
