"""Tools a client brings to one answer (AG-UI's *frontend* tools): offered to the model beside the plugins'
own, never run here. A round whose calls include one of them ends the answer: the client runs the call and
sends its result in its next run, whose answer goes on from the replayed call and result.

What an answer gets is a record of kind "answer_tools" keyed by the answer's id, written before its job
starts (so a Retry sees it too): `{"tools": [tool definitions], "replay": [wire messages]}`. `replay` holds
the assistant message that made the calls and one `tool` message per call, in the driver's wire format, sent
after the conversation and before the answer (the model continues where it stopped).
"""

from __future__ import annotations

from typing import Any

from quanda.context import Handle

KIND = "answer_tools"
RESULT_KIND = "client_tool_result"  # what the client sent back for one of its calls, keyed by the call's id
MAX_TOOLS = 64
MAX_DESCRIPTION = 2000


async def options(h: Handle, answer_id: str) -> dict[str, Any]:
    """The client's tools and the replayed turns of an answer (empty for an answer asked in a tab)."""
    return await h.store.get_record(KIND, answer_id) or {}


async def attach(h: Handle, answer_id: str, tools: list[dict], replay: list[dict]) -> None:
    if tools or replay:
        await h.store.put_record(KIND, answer_id, {"tools": tools, "replay": replay})


def names(found: dict[str, Any]) -> frozenset[str]:
    return frozenset(t["function"]["name"] for t in found.get("tools", ()))


def definition(name: str, description: str, parameters: Any) -> dict:
    """A client's tool in the wire's `tools` shape (its JSON Schema passed on as the client gave it)."""
    schema = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": name, "description": description[:MAX_DESCRIPTION],
                                             "parameters": schema}}


def is_frontend(call: dict) -> bool:
    return bool(call.get("frontend"))
