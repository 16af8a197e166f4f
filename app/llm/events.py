"""The one internal event stream every LLM driver produces (names from the seed protocol).

A run is: ``RUN_CREATED``, then any number of ``REASONING`` / ``DELTA`` / ``TOOL_CALL`` events, then
exactly one terminal event, ``COMPLETED`` or ``ERROR``.
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_CREATED = "thread.run.created"
REASONING = "thread.run.step.in_progress"
DELTA = "thread.message.delta"
TOOL_CALL = "thread.run.tool_call"
COMPLETED = "thread.run.completed"
ERROR = "error"

TERMINAL = frozenset({COMPLETED, ERROR})

ERROR_REASONS = frozenset(
    {"unreachable", "model_missing", "http_status", "stream_error", "truncated", "stall", "malformed"}
)


@dataclass(frozen=True)
class LLMEvent:
    """One event of a run.

    ``text``: the answer text for ``DELTA``, the thinking text for ``REASONING``, a human message that
    says what happened and how to fix it for ``ERROR``.
    ``data``: ``{"done_reason": ...}`` for ``COMPLETED``; ``{"name", "arguments": dict, "id"?}`` for
    ``TOOL_CALL``; ``{"reason", "status", "models"?}`` for ``ERROR`` (``models`` when the reason is
    ``model_missing``).
    """

    type: str
    text: str = ""
    data: dict | None = None

    @property
    def is_terminal(self) -> bool:
        """True for the event that ends a run (``COMPLETED`` or ``ERROR``)."""
        return self.type in TERMINAL


def error_event(
    reason: str, text: str, *, status: int | None = None, models: list[str] | None = None
) -> LLMEvent:
    """Build the terminal ``ERROR`` event; ``reason`` must be one of ``ERROR_REASONS``."""
    if reason not in ERROR_REASONS:
        raise ValueError(f"unknown LLM error reason {reason!r}")
    data: dict = {"reason": reason, "status": status}
    if models is not None:
        data["models"] = list(models)
    return LLMEvent(ERROR, text, data)


def completed_event(done_reason: str | None) -> LLMEvent:
    """Build the terminal ``COMPLETED`` event (``done_reason`` defaults to ``"stop"``)."""
    return LLMEvent(COMPLETED, data={"done_reason": done_reason or "stop"})
