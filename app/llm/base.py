"""The driver interface: what the app asks of a chat model, whatever its wire (`LLMDriver`).

Consume a run with ``contextlib.aclosing`` so that leaving early (Stop, an exception, a cancelled
task) closes the HTTP response at once, which is how a client cancels generation upstream::

    async with aclosing(driver.stream_chat(messages, model)) as events:
        async for event in events:
            ...

The HTTP drivers share their streaming machinery through `HTTPDriver` (``http.py``) and their decoders'
helpers through ``wire.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from .events import LLMEvent

class LLMUnavailable(Exception):
    """The LLM server cannot be reached or did not answer a listing request sensibly.
    ``status`` is the HTTP status when the server did answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LLMDriver(ABC):
    """A chat model behind some wire protocol, seen as one stream of ``LLMEvent``.

    Besides streaming, a driver owns everything wire-specific the app needs: the messages that carry
    tool calls and their results back (``tool_messages``), whether a model takes tools
    (``supports_tools``), and the words of its hints (``model_status``, ``unreachable_hint``).
    """

    @abstractmethod
    async def list_models(self) -> list[str]:
        """Names of the models the server offers; raises ``LLMUnavailable`` with a clear message."""

    @abstractmethod
    def stream_chat(
        self, messages: list[dict], model: str, tools: list[dict] | None = None
    ) -> AsyncIterator[LLMEvent]:
        """Async generator: ``RUN_CREATED``, then reasoning/answer/tool-call events, then exactly one
        terminal event (``COMPLETED`` or ``ERROR``). Wire, HTTP and network problems become the
        ``ERROR`` event, never an exception. Closing the generator early cancels the upstream request.
        """

    # -- tools ------------------------------------------------------------------------------------

    async def supports_tools(self, model: str) -> bool | None:
        """Whether ``model`` takes ``tools``: True, False, or None when unknown until tried."""
        return None

    @abstractmethod
    def assistant_tool_message(self, calls: Sequence[Any], text: str = "", thinking: str = "") -> dict:
        """The assistant message that made ``calls`` (``TOOL_CALL`` events or their ``data``), in
        this wire's format, with the answer ``text`` that came with them. Refused calls are sent
        with empty arguments (their result says why they were refused)."""

    @abstractmethod
    def tool_result_message(self, call: Any, result: str) -> dict:
        """The ``tool`` message carrying ``result`` (text) for ``call`` (an event or its data)."""

    def tool_messages(
        self, calls: Sequence[Any], results: Sequence[str], text: str = "", thinking: str = ""
    ) -> list[dict]:
        """The messages to append after a turn with tool calls: the assistant message, then one
        result per call, in the same order (``results[i]`` answers ``calls[i]``)."""
        if len(calls) != len(results):
            raise ValueError(f"{len(calls)} tool calls but {len(results)} results")
        return [
            self.assistant_tool_message(calls, text, thinking),
            *(self.tool_result_message(call, result) for call, result in zip(calls, results)),
        ]

    # -- models and hints -------------------------------------------------------------------------

    def has_model(self, model: str, models: Sequence[str]) -> bool:
        """Whether ``model`` is among ``models`` (as this server names them)."""
        return model in models

    async def default_model(self, configured: str) -> str:
        """``configured`` if set, else the server's only or first model ("" when it lists none).
        Raises ``LLMUnavailable`` when the list is needed and the server cannot be reached."""
        if configured and configured.strip():
            return configured.strip()
        return pick_default_model("", await self.list_models())

    def unreachable_hint(self, model: str = "") -> str:
        """How to get a server running (for a status line)."""
        return "check that the LLM server is running"

    def missing_model_hint(self, model: str) -> str:
        """How to get ``model``, or pick another (one sentence)."""
        return "Pick one of the available models."

    def model_status(self, model: str, models: Sequence[str]) -> tuple[bool, str]:
        """(ok, text) for a status badge, given the model in use and the server's models."""
        if model and self.has_model(model, models):
            return True, f"LLM ready: {model}"
        if not models:
            return False, "the LLM server lists no models"
        return False, f"model {model!r} is not available; pick one of {', '.join(models[:8])}"

    async def aclose(self) -> None:
        """Release what the driver owns (its HTTP client)."""

    async def __aenter__(self) -> LLMDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def pick_default_model(configured: str, models: Sequence[str]) -> str:
    """The model to use: ``configured`` if non-empty, else the only or first of ``models``, else ""."""
    configured = (configured or "").strip()
    if configured:
        return configured
    return models[0] if models else ""


def call_data(call: Any) -> dict:
    """The data dict of a ``TOOL_CALL`` event (accepts the event or the dict itself)."""
    data = call.data if isinstance(call, LLMEvent) else call
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise TypeError(f"not a tool call: {call!r}")
    return data
