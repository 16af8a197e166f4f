"""Ollama's native chat API: ``POST /api/chat`` streaming NDJSON, models from ``GET /api/tags``."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

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

DEFAULT_URL = "http://localhost:11434"
DEFAULT_PORT = 11434


def ollama_base_url(host: str | None) -> str:
    """Base URL from an ``OLLAMA_HOST``-style value (``"host"``, ``"host:port"`` or a full URL)."""
    host = (host or "").strip().rstrip("/")
    if not host:
        return DEFAULT_URL
    if "://" in host:
        return host
    parts = urlsplit("http://" + host)
    if parts.port is None:
        return f"http://{parts.netloc}:{DEFAULT_PORT}{parts.path}"
    return "http://" + host


class OllamaDriver(HTTPDriver):
    """Chat with an Ollama server over its native streaming API."""

    chat_path = "/api/chat"

    label = "Ollama"
    url_env = "OLLAMA_HOST"

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        stall_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(ollama_base_url(base_url), stall_s=stall_s, client=client)

    async def list_models(self) -> list[str]:
        data = await self._get_json("/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise LLMUnavailable(
                f"{self.base_url}/api/tags did not list models: is {self.url_env} pointing at Ollama?"
            )
        names = (m.get("name") or m.get("model") for m in models if isinstance(m, dict))
        return [name for name in names if isinstance(name, str)]

    def _decoder(self) -> NDJSONDecoder:
        return NDJSONDecoder(self._wire_error)

    def _unreachable_hint(self, model: str) -> str:
        return (
            f"start Ollama with `ollama serve` and `ollama pull {model}`, or set OLLAMA_HOST "
            "(or QUANDA_LLM_URL for an OpenAI-compatible server)"
        )

    def _missing_model_hint(self, model: str) -> str:
        return f"Run `ollama pull {model}`, or set OLLAMA_MODEL to one of the available models."


class NDJSONDecoder:
    """Events from the lines of an Ollama ``/api/chat`` stream."""

    def __init__(self, wire_error: ErrorFactory) -> None:
        self._think = ThinkSplitter()
        self._wire_error = wire_error

    def feed(self, line: str) -> list[LLMEvent]:
        if not line.strip():
            return []
        try:
            obj = json.loads(line)
        except ValueError:
            return self._malformed(line)
        if not isinstance(obj, dict):
            return self._malformed(line)
        if "error" in obj:
            detail = error_message(obj) or json.dumps(obj["error"])
            return [*self._think.flush(), self._wire_error("stream_error", detail)]
        message = obj.get("message") or {}
        if not isinstance(message, dict):
            return self._malformed(line)
        out: list[LLMEvent] = []
        thinking = message.get("thinking")
        if isinstance(thinking, str) and thinking:
            out.append(LLMEvent(REASONING, thinking))
        content = message.get("content")
        if isinstance(content, str):
            out += self._think.feed(content)
        for call in message.get("tool_calls") or []:
            event = _tool_call(call)
            if event is None:
                return [*out, *self._malformed(line, what="tool call")]
            out.append(event)
        if obj.get("done") is True:
            out += self._think.flush()
            out.append(completed_event(obj.get("done_reason")))
        return out

    def flush(self) -> list[LLMEvent]:
        return self._think.flush()

    def finish(self, tail: str) -> list[LLMEvent]:
        try:
            json.loads(tail)
        except ValueError:
            return []
        return self.feed(tail)

    def _malformed(self, line: str, what: str = "JSON") -> list[LLMEvent]:
        return [*self._think.flush(), self._wire_error("malformed", f"{what}: {line[:120]!r}")]


def _tool_call(call: object) -> LLMEvent | None:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        return None
    arguments = parse_arguments(fn.get("arguments"))
    if arguments is None:
        return None
    data: dict = {"name": fn["name"], "arguments": arguments}
    if isinstance(call, dict) and call.get("id"):
        data["id"] = call["id"]
    return LLMEvent(TOOL_CALL, data=data)
