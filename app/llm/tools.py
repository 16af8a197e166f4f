"""Native tool calling, the parts both wires share: tool definitions built from simple command specs,
and the checks that turn a call the model made into a ``TOOL_CALL`` event.

A call the driver cannot hand over as ``name`` + ``arguments`` (a dict) — unknown tool, arguments that
are not JSON or not an object, no name — becomes a ``TOOL_CALL`` event with an ``error`` instead of
``arguments``: the app runs nothing for it, shows why, and tells the model (``tool_result_message``).
The rest of the answer is not affected. Checking the arguments against the tool's schema (types,
lengths, required fields) is the app's job: it runs the same validation as for JSON commands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .events import TOOL_CALL, LLMEvent

MAX_TOOL_CALLS = 64  # per turn; further calls are refused (the app has its own, lower, limit)
MAX_ARGUMENTS_CHARS = 64 * 1024  # a call's arguments, as JSON text
RAW_KEPT_CHARS = 500  # how much of refused arguments the event keeps, for the record
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI accepts; Ollama takes any string

_JSON_TYPES: dict[type, str] = {int: "integer", str: "string", bool: "boolean", float: "number"}


def tool_definition(name: str, description: str, fields: Mapping[str, Any]) -> dict:
    """A ``tools`` entry (OpenAI and Ollama take the same shape) for a command with these fields.

    ``fields`` maps each argument name to ``(type, required, max_len)`` or
    ``(type, required, max_len, min_value)``, or to any object with those attributes (``type``,
    ``required``, ``max_len``, optional ``min_value`` and ``description``), e.g. the app's ``Field``.
    ``type`` is ``int``, ``str``, ``bool`` or ``float``. Strings get ``minLength: 1`` and
    ``maxLength``; integers get ``minimum`` (default 1, as ids start at 1); no other keys are allowed::

        tool_definition("todo_insert", "Add a todo.", {"name": (str, True, 200)})
    """
    if not isinstance(name, str) or not TOOL_NAME_RE.match(name):
        raise ValueError(f"tool name {name!r} must be 1-64 letters, digits, '_' or '-'")
    properties: dict[str, dict] = {}
    required: list[str] = []
    for field_name, spec in fields.items():
        kind, is_required, max_len, min_value, doc = _field_parts(field_name, spec)
        schema: dict[str, Any] = {"type": _JSON_TYPES[kind]}
        if kind is str:
            schema["minLength"] = 1
            if max_len is not None:
                schema["maxLength"] = int(max_len)
        elif kind is int:
            schema["minimum"] = 1 if min_value is None else int(min_value)
        elif kind is float and min_value is not None:
            schema["minimum"] = min_value
        if doc:
            schema["description"] = str(doc)
        properties[field_name] = schema
        if is_required:
            required.append(field_name)
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def _field_parts(field_name: str, spec: Any) -> tuple[type, bool, int | None, Any, str]:
    if isinstance(spec, tuple):
        if not 2 <= len(spec) <= 4:
            raise ValueError(f"field {field_name!r}: expected (type, required, max_len[, min_value])")
        kind, is_required, max_len, min_value = (*spec, None, None)[:4]
        doc = ""
    else:
        kind = getattr(spec, "type", None)
        is_required = getattr(spec, "required", False)
        max_len = getattr(spec, "max_len", None)
        min_value = getattr(spec, "min_value", None)
        doc = getattr(spec, "description", "") or ""
    if kind not in _JSON_TYPES:
        raise ValueError(f"field {field_name!r}: type {kind!r} is not one of int, str, bool, float")
    return kind, bool(is_required), max_len, min_value, doc


def tool_names(tools: Iterable[Any] | None) -> frozenset[str]:
    """The function names a ``tools`` list offers (entries that are not functions are skipped)."""
    names = set()
    for tool in tools or ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.add(fn["name"])
    return frozenset(names)


class ToolCallChecker:
    """Numbers the calls of one turn and turns each into a ``TOOL_CALL`` event (valid or refused)."""

    def __init__(self, offered: frozenset[str]) -> None:
        self._offered = offered
        self._position = 0
        self._ids: set[str] = set()

    @property
    def count(self) -> int:
        """How many calls the turn has made so far."""
        return self._position

    def event(self, name: Any, arguments: Any, call_id: Any = None) -> LLMEvent:
        """The event for one complete call; ``arguments`` as the wire gave it (a dict or JSON text)."""
        position = self._position
        self._position += 1
        if not isinstance(call_id, str) or not call_id or call_id in self._ids:
            call_id = f"call_{position}"
            while call_id in self._ids:
                call_id += "_"
        self._ids.add(call_id)
        data: dict[str, Any] = {
            "position": position,
            "id": call_id,
            "name": name if isinstance(name, str) else "",
        }
        parsed, problem = _parse(arguments)
        error = self._name_problem(name) or problem
        if position >= MAX_TOOL_CALLS:
            error = f"more than {MAX_TOOL_CALLS} tool calls in one answer"
        if error:
            data["raw_arguments"] = _raw_text(arguments)[:RAW_KEPT_CHARS]
            data["error"] = error
        else:
            data["arguments"] = parsed
        return LLMEvent(TOOL_CALL, data=data)

    def _name_problem(self, name: Any) -> str:
        if not isinstance(name, str) or not name:
            return "the tool call has no tool name"
        if name in self._offered:
            return ""
        if not self._offered:
            return f"unknown tool {name!r}: no tools were offered"
        return f"unknown tool {name!r}; the tools are {', '.join(sorted(self._offered))}"


def _raw_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    try:
        return json.dumps(arguments, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(arguments)


def _parse(arguments: Any) -> tuple[dict | None, str]:
    """(arguments as a dict, "") or (None, why not). Empty or missing arguments are ``{}``."""
    if isinstance(arguments, dict):
        value: Any = arguments
    elif arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}, ""
    elif isinstance(arguments, str):
        if len(arguments) > MAX_ARGUMENTS_CHARS:
            return None, f"the arguments are too long ({len(arguments)} > {MAX_ARGUMENTS_CHARS} characters)"
        try:
            value = json.loads(arguments)
        except ValueError:
            shown = arguments if len(arguments) <= 80 else arguments[:79] + "…"
            return None, f"the arguments are not valid JSON: {shown!r}"
    else:
        value = arguments
    if value is None:  # "null": some models' way of saying "no arguments"
        return {}, ""
    if not isinstance(value, dict):
        return None, f"the arguments must be a JSON object, not {_json_kind(value)}"
    return value, ""


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return type(value).__name__
