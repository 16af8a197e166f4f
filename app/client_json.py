"""JSON sent by clients (WebSocket frames, HTTP API bodies): its size and nesting are checked before it is
parsed, so a hostile document gets a clear refusal instead of exhausting the stack or the memory."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class ClientJSONError(ValueError):
    """The text is not acceptable JSON; the message says why in words a user can act on."""


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count); counting
    stops once the depth passes `stop_above`."""
    depth = deepest = 0
    for ch in _NOT_BRACKETS.sub("", _STRINGS.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


def parse_client_json(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed value, or ClientJSONError for malformed or too deeply nested JSON."""
    if nesting_depth(text, stop_above=max_depth) > max_depth:
        raise ClientJSONError(f"JSON nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ClientJSONError("malformed JSON") from None
