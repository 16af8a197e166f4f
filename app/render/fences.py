"""Code fence lines as CommonMark reads them (up to three spaces, then three or more backticks or
tildes): the block scanner (`stream`) and the closing suffix (`closing`) both track an open fence."""

from __future__ import annotations

import re
from typing import NamedTuple

_FENCE_RE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_FENCE_LINE_RE = re.compile(r" {0,3}(?:```|~~~)")


class _Fence(NamedTuple):
    indent: str
    char: str
    length: int
    line: str  # the opening line, re-used to reopen the code block in a piece that continues it


def _opens(line: str) -> _Fence | None:
    m = _FENCE_RE.fullmatch(line)
    if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
        return None
    return _Fence(m.group(1), m.group(2)[0], len(m.group(2)), line)


def _closes(fence: _Fence, line: str) -> bool:
    m = _FENCE_RE.fullmatch(line)
    return bool(m) and m.group(2)[0] == fence.char and len(m.group(2)) >= fence.length \
        and not m.group(3).strip(" \t\r")
