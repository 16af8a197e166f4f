"""The closing suffix: the transient text that closes what a partial Markdown text leaves open (a code
fence, a code span, ``**``, ``~~``), so that it renders as its finished text will (an unfinished code
block as code, not as a paragraph).

`closing_suffix` reads a whole text (the reference definition); `_Closer` keeps the same answer up to
date as text is fed, reading each character once (`_InlineScan` carries the inline counts forward).
"""

from __future__ import annotations

import re

from .fences import _FENCE_LINE_RE, _Fence, _closes, _opens

_PARTIAL_CLOSER_RE = re.compile(r" {0,3}(`+|~+)")


def _fence_at(text: str, pos: int) -> tuple[_Fence | None, int]:
    """The code fence open at line start `pos`, and the end of the last fence line before it."""
    fence, after = None, 0
    start = 0
    while start < pos:
        end = text.find("\n", start, pos)
        end = pos - 1 if end < 0 else end
        line = text[start:end]
        if _FENCE_LINE_RE.match(line):
            if fence is None:
                fence = _opens(line)
            elif _closes(fence, line):
                fence = None
            after = end + 1
        start = end + 1
    return fence, after


def _close_inline(block: str) -> str:
    """Close an open code span, then odd ``**`` / ``~~``, in the last block of a partial text."""
    if not block or block[-1] in "`*~_\\":
        return ""  # appending would merge with the last delimiter run
    span, i, strong, strike = 0, 0, 0, 0
    while i < len(block):
        ch = block[i]
        if ch == "\\" and not span:
            i += 2
            continue
        if ch == "`":
            j = i
            while j < len(block) and block[j] == "`":
                j += 1
            if not span:
                span = j - i
            elif span == j - i:
                span = 0
            i = j
            continue
        if not span and block.startswith("**", i):
            strong, i = strong + 1, i + 2
            continue
        if not span and block.startswith("~~", i):
            strike, i = strike + 1, i + 2
            continue
        i += 1
    return "`" * span + "**" * (strong % 2) + "~~" * (strike % 2)


def closing_suffix(text: str) -> str:
    """The transient suffix that closes the open structures at the end of a partial text.

    An open code fence is closed with the same indentation, character and length ("\\n```"; just
    the missing fence characters when the last line is a partial closing fence); an opening fence
    line still being typed gets its closing fence; otherwise an open code span and unbalanced
    ``**`` / ``~~`` since the last empty line or fence line are closed. Idempotent:
    ``closing_suffix(t + closing_suffix(t)) == ""``.

    This reads the whole text (the reference definition); the stream keeps the same answer up to
    date as text arrives (`_Closer`), looking at each character once.
    """
    last_start = text.rfind("\n") + 1
    last = text[last_start:]
    fence, after_fence = _fence_at(text, last_start)
    closer = _line_closer(last, fence)
    if closer is not None:
        return closer
    return _close_inline(text[max(after_fence, text.rfind("\n\n") + 1):])


def _line_closer(last: str, fence) -> str | None:
    """What closes an open fence, or a line that opens one; "" for a blank last line (closers at the start of a
    line could read as a fence or a list marker); None when only the inline spans are left to close."""
    if fence is not None:
        m = _PARTIAL_CLOSER_RE.fullmatch(last)
        if m and m.group(1)[0] == fence.char:
            return fence.char * max(0, fence.length - len(m.group(1)))
        return ("\n" if last else "") + fence.indent + fence.char * fence.length
    opening = _opens(last)
    if opening is not None:
        return "\n" + opening.indent + opening.char * opening.length
    if not last.strip():
        return ""
    return None


_INLINE_SPECIAL_RE = re.compile(r"[\\`*~]")


class _InlineScan:
    """`_close_inline`'s counts carried forward: text is fed in any pieces and each character is read
    once (a delimiter run or a backslash at the end waits for the next character)."""

    __slots__ = ("span", "strong", "strike", "carry", "last")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.span = self.strong = self.strike = 0
        self.carry = ""
        self.last = ""

    def feed(self, text: str) -> None:
        if not text:
            return
        self.last = text[-1]
        s = self.carry + text if self.carry else text
        n, i = len(s), 0
        span, strong, strike = self.span, self.strong, self.strike
        search = _INLINE_SPECIAL_RE.search
        while True:
            m = search(s, i)
            if m is None:
                i = n
                break
            i = m.start()
            ch = s[i]
            if ch == "\\":
                if span:
                    i += 1
                elif i + 1 >= n:
                    break
                else:
                    i += 2
            elif ch == "`":
                j = i + 1
                while j < n and s[j] == "`":
                    j += 1
                if j == n:
                    break
                if not span:
                    span = j - i
                elif span == j - i:
                    span = 0
                i = j
            elif span:
                i += 1
            elif i + 1 >= n:
                break
            elif s[i + 1] == ch:
                if ch == "*":
                    strong += 1
                else:
                    strike += 1
                i += 2
            else:
                i += 1
        self.span, self.strong, self.strike = span, strong, strike
        self.carry = s[i:] if i < n else ""

    def closers(self) -> str:
        # a carried run means the text ends with "\\", "`", "*" or "~": nothing is appended then
        if not self.last or self.last in "`*~_\\":
            return ""
        return "`" * self.span + "**" * (self.strong % 2) + "~~" * (self.strike % 2)


class _Closer:
    """`closing_suffix` of a growing text, kept up to date as text is fed (`inline_only`: just the
    inline closers, for the rest of a line)."""

    __slots__ = ("fence", "line", "inline", "inline_only")

    def __init__(self, inline_only: bool = False) -> None:
        self.fence: _Fence | None = None
        self.line: list[str] = []  # the last, incomplete line
        self.inline = _InlineScan()
        self.inline_only = inline_only

    def feed(self, text: str) -> None:
        if self.inline_only:
            self.inline.feed(text)
            return
        start = 0
        while True:
            nl = text.find("\n", start)
            if nl < 0:
                if start < len(text):
                    part = text[start:] if start else text
                    self.line.append(part)
                    self.inline.feed(part)
                return
            self.inline.feed(text[start:nl + 1])
            self.line.append(text[start:nl])
            line = "".join(self.line)
            self.line.clear()
            if _FENCE_LINE_RE.match(line):
                if self.fence is None:
                    self.fence = _opens(line)
                elif _closes(self.fence, line):
                    self.fence = None
                self.inline.reset()
            elif not line:
                self.inline.reset()
            start = nl + 1

    def closing(self) -> str:
        if self.inline_only:
            return self.inline.closers()
        closer = _line_closer("".join(self.line), self.fence)
        return closer if closer is not None else self.inline.closers()
