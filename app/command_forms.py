"""The forms a JSON command may take in an answer, brought to the one form the commands run:
`{"action": …, "target": …, "args": {…}}`.

Accepted besides that form, each because models write it (docs/app.md lists them):

- seed 001's `"operation"` for `"action"`: `{"operation": "insert", "target": "todo", "args": {…}}`;
- the fields at the top level, `"args"` missing: `{"action": "insert", "target": "todo", "name": "milk"}`;
- a trailing comma before a closing brace or bracket: `{"action": "list", "target": "todo",}`;
- a fenced block whose language tag is a JSON-ish one (`JSON`, `jsonc`, `json5`, `js`, `javascript`, or
  `json` followed by more words) — other fences (```python …) hold examples, not commands.

Refused with the reason, because what was meant cannot be told: both `"action"` and `"operation"` (with
different values), `"args"` together with other fields at the top level, `"args"` that is not an object.
"""

from __future__ import annotations

import json
import re
from typing import Any

COMMAND_TAGS = {"", "json", "jsonc", "json5", "js", "javascript"}
_KEYS = ("action", "operation")
_CLOSES = re.compile(r"\s*[}\]]")


def is_command_tag(lang: str) -> bool:
    """Whether a fence's language tag says its body may hold commands."""
    words = lang.strip().lower().split()
    return not words or words[0] in COMMAND_TAGS


def looks_like_command(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in _KEYS)


def mentions_command(text: str) -> bool:
    return any(f'"{key}"' in text for key in _KEYS)


def loads(text: str) -> Any:
    """JSON, forgiving trailing commas (outside strings); ValueError when it is not JSON even then."""
    try:
        return json.loads(text)
    except ValueError as first:
        fixed = without_trailing_commas(text)
        if fixed == text:
            raise
        try:
            return json.loads(fixed)
        except ValueError:
            raise first from None


def without_trailing_commas(text: str) -> str:
    """The text with each comma that only whitespace separates from a closing } or ] removed (not in strings)."""
    out: list[str] = []
    in_string = escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "," and _CLOSES.match(text, i + 1):
            continue
        out.append(ch)
    return "".join(out)


def canonical(value: dict) -> tuple[dict | None, str]:
    """(the command in its one form, "") or (None, why it is ambiguous)."""
    command = dict(value)
    if "operation" in command:
        operation = command.pop("operation")
        if "action" in command and command["action"] != operation:
            return None, "both \"action\" and \"operation\" are given, with different values: say one"
        command["action"] = operation
    loose = {k: v for k, v in command.items() if k not in ("action", "target", "args")}
    if loose:
        if "args" in command:
            return None, (f"fields {sorted(loose)} are both beside \"args\" and not in it: put every field in "
                          "\"args\"")
        command = {k: v for k, v in command.items() if k not in loose}
        command["args"] = loose
    if "args" in command and not isinstance(command["args"], dict):
        return None, "args must be an object"
    return command, ""
