"""A piece of a streaming message's open block: at most about `PIECE_CAP` characters of it, rendered on
its own with its open structures closed (`closing`). A piece that continues a code block or a table is
reopened with its fence line (`_FENCE_CONT`) or its header (`_TABLE_CONT`); one that starts in the
middle of a line holds inline Markdown only (`_INLINE`). Its code is plain, so that it grows by appends.
"""

from __future__ import annotations

import html
import re

from .closing import _Closer
from .markdown import _render_inline, _render_plain

_NORMAL, _FENCE_CONT, _TABLE_CONT, _INLINE = range(4)
_THEAD_RE = re.compile(r"<thead>.*?</thead>\n?", re.S)
#: text that means nothing to Markdown mid-line: letters, digits (not "_"), spaces and quiet punctuation
_PLAIN_RE = re.compile(r"(?:[^\W_]|[ ,.;:?!-])*")
_CLOSING_TAGS_RE = re.compile(r"(?:</[a-z][a-z0-9]*>\n?)+\Z")


class _Piece:
    """A piece of the open block: its text, how to render it on its own, its closing suffix."""

    __slots__ = ("parts", "size", "kind", "prefix", "midline", "closer", "cache")

    def __init__(self, kind: int, prefix: str, midline: bool) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.kind, self.prefix, self.midline = kind, prefix, midline
        self.closer = _Closer(inline_only=kind == _INLINE)
        self.closer.feed(prefix)
        self.cache: tuple[int, str, str] | None = None  # (size, html, closing suffix) of the last render

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
        grown = self._grown_html(text, closing)
        if grown is not None:
            self.cache = (self.size, grown, closing)
            return grown
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
        self.cache = (self.size, out, closing)
        return out

    def _grown_html(self, text: str, closing: str) -> str | None:
        """The fast path at one token per frame: when the piece grew only by plain words on a line that
        already holds some (nothing Markdown could read as structure: no newline, no punctuation it uses),
        and its closing suffix is the same, its HTML is the old one with the new words, escaped, inserted
        before the closing tags — no parsing. None when that does not hold (then the piece is rendered)."""
        if self.cache is None or self.kind == _FENCE_CONT or self.closer.fence is not None:
            return None
        size, old_html, old_closing = self.cache
        delta = text[size:]
        if closing or old_closing or not _PLAIN_RE.fullmatch(delta):
            return None  # an open span or emphasis: what follows can change how Markdown reads it
        old = text[:size]
        line = old[old.rfind("\n") + 1:]
        if len(line) < 4 or line[0] in " \t[#" or "|" in line or not any(c.isalpha() for c in line[:4]):
            return None  # a line still short enough to become a list item or a table row; a heading (its
            # closing "#"s are dropped only at the end: "# a #" + "b"); a link reference definition ("[r]: url"
            # renders nothing, whatever follows)
        if not _PLAIN_RE.fullmatch(line[line.rfind(" ") + 1:]):
            return None  # the word being continued holds Markdown ("\", "&amp", "<http"…)
        if self.kind == _INLINE:
            visible_old, visible_new = old, text  # inline text keeps its spaces
        else:
            visible_old, visible_new = old.rstrip(" "), text.rstrip(" ")  # a paragraph drops trailing spaces
        tags = _CLOSING_TAGS_RE.search(old_html)
        if tags is None or not visible_old or not old_html[:tags.start()].endswith(html.escape(visible_old[-1])):
            return None
        added = html.escape(visible_new[len(visible_old):], quote=False)
        return old_html[:tags.start()] + added + old_html[tags.start():]
