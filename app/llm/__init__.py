"""LLM drivers: Ollama's native API and OpenAI-compatible servers, mapped to one event stream."""

from __future__ import annotations

from .base import HTTPDriver, LLMDriver, LLMUnavailable, ThinkSplitter
from .events import (
    COMPLETED,
    DELTA,
    ERROR,
    ERROR_REASONS,
    REASONING,
    RUN_CREATED,
    TERMINAL,
    TOOL_CALL,
    LLMEvent,
)
from .ollama import OllamaDriver, ollama_base_url
from .openai import OpenAIDriver

__all__ = [
    "COMPLETED",
    "DELTA",
    "ERROR",
    "ERROR_REASONS",
    "REASONING",
    "RUN_CREATED",
    "TERMINAL",
    "TOOL_CALL",
    "HTTPDriver",
    "LLMDriver",
    "LLMEvent",
    "LLMUnavailable",
    "OllamaDriver",
    "OpenAIDriver",
    "ThinkSplitter",
    "make_driver",
    "ollama_base_url",
]


def make_driver(
    ollama_host: str, llm_url: str | None, api_key: str | None, stall_s: float
) -> LLMDriver:
    """The driver the settings ask for: OpenAI-compatible when ``llm_url`` (QUANDA_LLM_URL) is set,
    otherwise Ollama at ``ollama_host`` (OLLAMA_HOST; ``"host[:port]"`` or a URL)."""
    if llm_url and llm_url.strip():
        return OpenAIDriver(llm_url.strip(), api_key=api_key, stall_s=stall_s)
    return OllamaDriver(ollama_host, stall_s=stall_s)
