"""The one internal event stream every LLM driver produces (names from the seed protocol).

A run is: ``RUN_CREATED``, then any number of ``REASONING`` / ``DELTA`` / ``TOOL_CALL`` events, then
exactly one terminal event, ``COMPLETED`` or ``ERROR``. ``TOOLS_REJECTED`` may come right after
``RUN_CREATED`` when the server refused a request carrying ``tools`` and the driver is about to ask
again without them (see ``HTTPDriver.stream_chat``).
"""

from __future__ import annotations

from dataclasses import dataclass

RUN_CREATED = "thread.run.created"
REASONING = "thread.run.step.in_progress"
DELTA = "thread.message.delta"
TOOL_CALL = "thread.run.tool_call"
TOOLS_REJECTED = "thread.run.tools_rejected"
COMPLETED = "thread.run.completed"
ERROR = "error"

TERMINAL = frozenset({COMPLETED, ERROR})

ERROR_REASONS = frozenset(
    {"unreachable", "model_missing", "http_status", "stream_error", "truncated", "cut", "too_long", "stall",
     "malformed"}
)
#: the reasons of a run that ended before the protocol's own end: the answer is **cut** (its text kept)
CUT_REASONS = frozenset({"truncated", "cut"})


@dataclass(frozen=True)
class LLMEvent:
    """One event of a run.

    ``text``: the answer text for ``DELTA``, the thinking text for ``REASONING``, a human message that
    says what happened and how to fix it for ``ERROR``.
    ``data``: ``{"done_reason": ..., "usage"?: {...}}`` for ``COMPLETED`` (``usage`` when the server said how
    many tokens it read and wrote: ``prompt_tokens``, ``completion_tokens``, and where it gives them
    ``tokens_per_s``, ``prompt_ms``); ``{"reason", "status", "models"?, "window"?}`` for ``ERROR``
    (``models`` when the reason is ``model_missing``; ``window``, the context window in tokens, when the
    reason is ``too_long`` and the server said it); ``{"status", "detail", "model"}`` for
    ``TOOLS_REJECTED`` (``text`` says what happened); for ``TOOL_CALL`` one call of the turn::

        {"position": 0,            # 0, 1, … in the order the turn made its calls
         "id": "call_abc",         # the wire's id, or "call_<position>" when it gave none
         "name": "todo_insert",
         "arguments": {...}}       # a dict: the call can be validated and run
        {"position": 1, "id": "call_1", "name": "nope", "raw_arguments": "{\"a\": ",
         "error": "unknown tool 'nope' ..."}   # a refused call: run nothing, tell the model why

    A refused call never ends the run: the rest of the answer and the other calls still come.
    """

    type: str
    text: str = ""
    data: dict | None = None

    @property
    def is_terminal(self) -> bool:
        """True for the event that ends a run (``COMPLETED`` or ``ERROR``)."""
        return self.type in TERMINAL


def error_event(
    reason: str, text: str, *, status: int | None = None, models: list[str] | None = None,
    window: int | None = None,
) -> LLMEvent:
    """Build the terminal ``ERROR`` event; ``reason`` must be one of ``ERROR_REASONS``."""
    if reason not in ERROR_REASONS:
        raise ValueError(f"unknown LLM error reason {reason!r}")
    data: dict = {"reason": reason, "status": status}
    if models is not None:
        data["models"] = list(models)
    if window is not None:
        data["window"] = window
    return LLMEvent(ERROR, text, data)


def completed_event(done_reason: str | None, usage: dict | None = None) -> LLMEvent:
    """Build the terminal ``COMPLETED`` event (``done_reason`` defaults to ``"stop"``)."""
    data: dict = {"done_reason": done_reason or "stop"}
    if usage:
        data["usage"] = usage
    return LLMEvent(COMPLETED, data=data)
