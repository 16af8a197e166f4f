"""OpenAI-compatible chat API (llama.cpp server, vLLM, LM Studio, Ollama ``/v1``, OpenAI).

``POST {base}/chat/completions`` with ``stream: true`` answers Server-Sent Events; models come from
``GET {base}/models``. ``base`` includes ``/v1``, as OpenAI clients take it.
"""

from __future__ import annotations

import json

import httpx

from .base import (
    ErrorFactory,
    HTTPDriver,
    LLMUnavailable,
    ThinkSplitter,
    error_message,
    parse_arguments,
)
from .events import REASONING, TOOL_CALL, LLMEvent, completed_event


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
    ) -> None:
        super().__init__(base_url, stall_s=stall_s, client=client)
        self._api_key = api_key or None

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

    def _decoder(self) -> SSEDecoder:
        return SSEDecoder(self._wire_error)

    def _unreachable_hint(self, model: str) -> str:
        return (
            "start it (e.g. `llama-server -m model.gguf --port 8080` or `vllm serve <model>`), or fix "
            "QUANDA_LLM_URL (the base URL including /v1), or unset it to use Ollama"
        )

    def _missing_model_hint(self, model: str) -> str:
        return "Set QUANDA_LLM_MODEL to one of the available models."


class SSEDecoder:
    """Events from the lines of an OpenAI-style ``chat.completion.chunk`` event stream.

    Follows the SSE rules (comments, ``data:`` with or without a space, multi-line data joined by
    ``\\n``, dispatch on a blank line) and accepts llama.cpp's non-standard ``error: {...}`` field.
    Any other unknown field is taken as a sign that the server does not speak SSE (an HTML page).
    The run completes at the first ``finish_reason`` (or at ``[DONE]``); tool-call fragments are
    merged by ``index`` and emitted then.
    """

    def __init__(self, wire_error: ErrorFactory) -> None:
        self._think = ThinkSplitter()
        self._wire_error = wire_error
        self._event = ""
        self._data: list[str] = []
        self._calls: dict[int, dict] = {}

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
        return out + self._dispatch(at_eof=True)

    def _dispatch(self, at_eof: bool = False) -> list[LLMEvent]:
        if not self._data:
            self._event = ""
            return []
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if data.strip() == "[DONE]":
            return self._complete("tool_calls" if self._calls else "stop")
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
        if choice.get("finish_reason"):
            out += self._complete(choice["finish_reason"])
        return out

    def _merge(self, position: int, fragment: dict) -> None:
        index = fragment.get("index")
        index = index if isinstance(index, int) else position
        call = self._calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        if fragment.get("id"):
            call["id"] = fragment["id"]
        fn = fragment.get("function")
        fn = fn if isinstance(fn, dict) else {}
        if fn.get("name") and not call["name"]:
            call["name"] = fn["name"]
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            call["arguments"] += arguments
        elif isinstance(arguments, dict):
            call["arguments"] = json.dumps(arguments)

    def _complete(self, reason: str) -> list[LLMEvent]:
        out = self._think.flush()
        for index in sorted(self._calls):
            call = self._calls[index]
            arguments = parse_arguments(call["arguments"])
            if not call["name"] or arguments is None:
                detail = f"tool call (arguments {call['arguments'][:120]!r})"
                return [*out, self._wire_error("malformed", detail)]
            data: dict = {"name": call["name"], "arguments": arguments}
            if call["id"]:
                data["id"] = call["id"]
            out.append(LLMEvent(TOOL_CALL, data=data))
        out.append(completed_event(reason))
        return out

    def _fail(self, reason: str, detail: str) -> list[LLMEvent]:
        return [*self._think.flush(), self._wire_error(reason, detail)]
