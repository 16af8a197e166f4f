"""Ollama's native chat API: ``POST /api/chat`` streaming NDJSON, models from ``GET /api/tags``,
capabilities (``"tools"``) and the trained context length (``model_info["<arch>.context_length"]``) from
``POST /api/show``. Ollama's own window is small unless the request says ``options.num_ctx`` (a longer prompt
is cut from the front, silently): the window the prompt was fitted to is sent as ``num_ctx``, the room left
for the answer as ``num_predict``. Ollama queues requests and never ends one for another.

Tool calls come whole (``message.tool_calls``, arguments as an object), possibly on the same line as
text; a result goes back as ``{"role": "tool", "content": ..., "tool_name": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import LLMUnavailable, call_data
from .events import REASONING, LLMEvent, completed_event
from .http import HTTPDriver
from .tools import ToolCallChecker
from .usage import ollama_usage
from .wire import ErrorFactory, ThinkSplitter, error_message

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
    serves_several = True
    window_by_request = True  # the window is the num_ctx a request sends (capped by the trained length)

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        stall_s: float = 60.0,
        client: httpx.AsyncClient | None = None,
        parallel: int = 0,
    ) -> None:
        super().__init__(ollama_base_url(base_url), stall_s=stall_s, client=client, parallel=parallel)
        self._shown: dict[str, dict] = {}  # per model: what /api/show said

    def _add_options(self, body: dict, options: dict) -> None:
        wire = {"temperature": options.get("temperature"), "num_ctx": options.get("context"),
                "num_predict": options.get("max_tokens")}
        wire = {key: value for key, value in wire.items() if value is not None}
        if wire:
            body["options"] = wire

    async def _show(self, model: str) -> dict | None:
        """``POST /api/show`` for the model (remembered); None when the server cannot say."""
        if model in self._shown:
            return self._shown[model]
        try:
            data = await self._request_json("POST", "/api/show", {"model": model})
        except LLMUnavailable:
            return None
        if isinstance(data, dict):
            self._shown[model] = data
            return data
        return None

    async def context_window(self, model: str) -> int | None:
        """What the server refused past, else the model's trained length (``model_info``)."""
        if model in self.windows:
            return self.windows[model]
        info = (await self._show(model) or {}).get("model_info")
        if not isinstance(info, dict):
            return None
        arch = info.get("general.architecture")
        length = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
        if not isinstance(length, int):
            length = next((v for k, v in info.items() if k.endswith(".context_length") and isinstance(v, int)), None)
        return length if isinstance(length, int) and length > 0 else None

    async def list_models(self) -> list[str]:
        data = await self._get_json("/api/tags")
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise LLMUnavailable(
                f"{self.base_url}/api/tags did not list models: is {self.url_env} pointing at Ollama?"
            )
        names = (m.get("name") or m.get("model") for m in models if isinstance(m, dict))
        return [name for name in names if isinstance(name, str)]

    async def supports_tools(self, model: str) -> bool | None:
        """From ``POST /api/show``: whether the model's ``capabilities`` list ``"tools"`` (None when
        the server cannot say: unreachable, unknown model, or an Ollama too old to list them).
        Remembered per model, as is a refusal seen while chatting."""
        known = self._tool_support.get(model)
        if known is not None:
            return known
        data = await self._show(model)
        capabilities = data.get("capabilities") if isinstance(data, dict) else None
        if not isinstance(capabilities, list):
            return None
        self._tool_support[model] = "tools" in capabilities
        return self._tool_support[model]

    def assistant_tool_message(self, calls: Sequence[Any], text: str = "", thinking: str = "") -> dict:
        tool_calls = []
        for call in calls:
            data = call_data(call)
            arguments = data.get("arguments") or {}
            function = {"index": data["position"], "name": data["name"], "arguments": arguments}
            tool_calls.append({"id": data["id"], "function": function})
        message: dict = {"role": "assistant", "content": text or "", "tool_calls": tool_calls}
        if thinking:
            message["thinking"] = thinking
        return message

    def tool_result_message(self, call: Any, result: str) -> dict:
        data = call_data(call)
        return {"role": "tool", "content": result, "tool_name": data["name"], "tool_call_id": data["id"]}

    def has_model(self, model: str, models: Sequence[str]) -> bool:
        return model in models or (":" not in model and f"{model}:latest" in models)

    def model_status(self, model: str, models: Sequence[str]) -> tuple[bool, str]:
        if model and self.has_model(model, models):
            return True, f"LLM ready: {model}"
        if not models:
            return False, f"Ollama at {self.base_url} has no models: run `ollama pull {model or 'llama3.2'}`"
        choices = ", ".join(models[:8])
        if not model:
            return False, f"no model chosen: set OLLAMA_MODEL to one of {choices}"
        return False, f"model {model!r} is not installed; pick one of {choices} or run `ollama pull {model}`"

    def _decoder(self, offered: frozenset[str]) -> NDJSONDecoder:
        return NDJSONDecoder(self._wire_error, offered)

    def unreachable_hint(self, model: str = "") -> str:
        return (
            f"start Ollama with `ollama serve` and `ollama pull {model or '<model>'}`, or set OLLAMA_HOST "
            "(or QUANDA_LLM_URL for an OpenAI-compatible server)"
        )

    def missing_model_hint(self, model: str) -> str:
        return f"Run `ollama pull {model}`, or set OLLAMA_MODEL to one of the available models."

    def _tools_hint(self) -> str:
        return "pick a model whose `ollama show <model>` lists the tools capability"


class NDJSONDecoder:
    """Events from the lines of an Ollama ``/api/chat`` stream."""

    def __init__(self, wire_error: ErrorFactory, offered: frozenset[str] = frozenset()) -> None:
        self._think = ThinkSplitter()
        self._wire_error = wire_error
        self._calls = ToolCallChecker(offered)

    def feed(self, line: str) -> list[LLMEvent]:
        if not line or line.isspace():
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
        calls = message.get("tool_calls") or []
        for call in calls if isinstance(calls, list) else [calls]:
            out.append(self._tool_call(call))
        if obj.get("done") is True:
            out += self._think.flush()
            out.append(completed_event(obj.get("done_reason"), ollama_usage(obj)))
        return out

    def flush(self) -> list[LLMEvent]:
        return self._think.flush()

    def ended(self) -> LLMEvent | None:
        return None  # the final line is the end: a run that read it has completed already

    def finish(self, tail: str) -> list[LLMEvent]:
        try:
            json.loads(tail)
        except ValueError:
            return []
        return self.feed(tail)

    def _malformed(self, line: str, what: str = "JSON") -> list[LLMEvent]:
        return [*self._think.flush(), self._wire_error("malformed", f"{what}: {line[:120]!r}")]

    def _tool_call(self, call: object) -> LLMEvent:
        """A whole call: ``{"id"?, "function": {"index"?, "name", "arguments": {...}}}``."""
        call = call if isinstance(call, dict) else {}
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        return self._calls.event(fn.get("name"), fn.get("arguments"), call.get("id"))
