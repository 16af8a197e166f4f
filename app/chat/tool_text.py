"""Text of tool calls as the answer and the records keep it: a result line as literal Markdown, values made safe
to store, arguments as JSON text."""

from __future__ import annotations

import json
import re
from typing import Any

# what could turn a one-line paragraph's text into markup: escapes, code, emphasis, links, strikethrough, an
# underscore at a word's edge, a tag or autolink, an entity
_MARKUP = re.compile(r"[\\`*\[\]~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def markdown_line(text: str) -> str:
    """A result line as literal Markdown: one line, markup characters escaped."""
    return _MARKUP.sub(lambda m: "\\" + m.group(), " ".join(text.split()))


def _clean(value: Any) -> str:
    """Text safe to store (a lone surrogate from the wire becomes U+FFFD)."""
    return str(value).encode("utf-8", "replace").decode("utf-8") if value is not None else ""


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
