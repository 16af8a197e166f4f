"""A piece of a streaming message's open block: at most about `PIECE_CAP` characters of it, rendered on
its own with its open structures closed (`closing`). A piece that continues a code block or a table is
reopened with its fence line (`_FENCE_CONT`) or its header (`_TABLE_CONT`); one that starts in the
middle of a line holds inline Markdown only (`_INLINE`). Its code is plain, so that it grows by appends.
"""

from __future__ import annotations

import re

from .closing import _Closer
from .markdown import _render_inline, _render_plain

_NORMAL, _FENCE_CONT, _TABLE_CONT, _INLINE = range(4)
_THEAD_RE = re.compile(r"<thead>.*?</thead>\n?", re.S)


class _Piece:
    """A piece of the open block: its text, how to render it on its own, its closing suffix."""

    __slots__ = ("parts", "size", "kind", "prefix", "midline", "closer", "cache")

    def __init__(self, kind: int, prefix: str, midline: bool) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.kind, self.prefix, self.midline = kind, prefix, midline
        self.closer = _Closer(inline_only=kind == _INLINE)
        self.closer.feed(prefix)
        self.cache: tuple[int, str] | None = None

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        self.closer.feed(text)

    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def html(self) -> str:
        if self.cache is not None and self.cache[0] == self.size:
            return self.cache[1]
        text, closing = self.text(), self.closer.closing()
        if self.kind == _INLINE:
            out = '<p class="md-inline">' + _render_inline(text + closing) + "</p>\n"
        else:
            out = _render_plain(self.prefix + text + closing)
            if self.kind == _FENCE_CONT and out.startswith("<pre>"):
                out = '<pre class="md-cont">' + out[5:]
            elif self.kind == _TABLE_CONT:
                out = _THEAD_RE.sub("", out, count=1)
            if self.closer.fence is not None and closing[:1] == "\n" and out.endswith("\n</code></pre>\n"):
                # the last code line is still being written: no newline after it yet, so it can grow by appends
                out = out[:-15] + "</code></pre>\n"
        self.cache = (self.size, out)
        return out
