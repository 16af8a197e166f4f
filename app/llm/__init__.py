"""LLM drivers: Ollama's native API and OpenAI-compatible servers, mapped to one event stream.

Native tool calling, in short (the app's round loop)::

    tools = [tool_definition("todo_insert", "Add a todo.", {"name": (str, True, 200)})]
    async with aclosing(driver.stream_chat(messages, model, tools)) as events:
        async for event in events:   # DELTA text, TOOL_CALL data {"position", "id", "name",
            ...                      # "arguments"} or {..., "error"}, TOOLS_REJECTED, COMPLETED
    messages += driver.tool_messages(calls, results, text)   # then stream_chat again
"""

from __future__ import annotations

from .base import LLMDriver, LLMUnavailable, call_data, pick_default_model
from .events import (
    COMPLETED,
    CUT_REASONS,
    DELTA,
    ERROR,
    ERROR_REASONS,
    REASONING,
    RUN_CREATED,
    TERMINAL,
    TOOL_CALL,
    TOOLS_REJECTED,
    LLMEvent,
)
from .gate import LLMBusy, LLMGate
from .http import HTTPDriver
from .ollama import OllamaDriver, ollama_base_url
from .openai import OpenAIDriver
from .tools import MAX_TOOL_CALLS, tool_definition, tool_names
from .wire import ThinkSplitter

__all__ = [
    "COMPLETED",
    "CUT_REASONS",
    "DELTA",
    "ERROR",
    "ERROR_REASONS",
    "MAX_TOOL_CALLS",
    "REASONING",
    "RUN_CREATED",
    "TERMINAL",
    "TOOLS_REJECTED",
    "TOOL_CALL",
    "HTTPDriver",
    "LLMBusy",
    "LLMDriver",
    "LLMGate",
    "LLMEvent",
    "LLMUnavailable",
    "OllamaDriver",
    "OpenAIDriver",
    "ThinkSplitter",
    "call_data",
    "make_driver",
    "ollama_base_url",
    "pick_default_model",
    "tool_definition",
    "tool_names",
]


def make_driver(
    ollama_host: str, llm_url: str | None, api_key: str | None, stall_s: float, parallel: int = 0
) -> HTTPDriver:
    """The driver the settings ask for: OpenAI-compatible when ``llm_url`` (QUANDA_LLM_URL) is set,
    otherwise Ollama at ``ollama_host`` (OLLAMA_HOST; ``"host[:port]"`` or a URL). ``parallel``
    (QUANDA_LLM_PARALLEL): 1 for a server that serves one request at a time, more for one that serves
    several, 0 to find out."""
    if llm_url and llm_url.strip():
        return OpenAIDriver(llm_url.strip(), api_key=api_key, stall_s=stall_s, parallel=parallel)
    return OllamaDriver(ollama_host, stall_s=stall_s, parallel=parallel)
