"""Safe, incremental Markdown rendering for streamed messages (mistune 3).

Safety (`render_markdown`): raw HTML is escaped, never passed through; links keep only
``http:``, ``https:``, ``mailto:``, relative URLs and ``#anchors`` (anything else, however it is
spelled — case, entities, percent-encoding, control characters — is dropped and only the link
text stays); every link gets ``rel="noopener noreferrer"``; images load only from this origin
(a remote image becomes a plain link, so an answer cannot make the browser call a tracker);
attribute values go through mistune's attribute escaping. A code block is highlighted on the
server by Pygments (token classes on spans, no inline style, text escaped; plain past
`HIGHLIGHT_CAP` or for an unknown language) inside ``div.md-code`` with a language label and a
copy button (``button.md-copy``, no handler: ``static/code.js`` listens for clicks).

Streaming (`MarkdownStream`): a message's text only grows while it streams. It is cut into
*blocks* at offsets that later text can never move: the start of a line that begins in column 0
outside a fenced code block and follows a blank line or a closed fence, or is an ATX heading
(and, once a block is longer than `BLOCK_CAP`, before a column-0 line that is not a setext
underline, a list item or a table row). A finished block is rendered once, whole, and appended
to the message's body; `render_blocks` is the concatenation of those renders, so a streamed
message ends exactly as a reloaded one. Caveats of rendering block by block: list items
separated by blank lines become one list each (an ordered one keeps its numbering through
``start``); a reference-style link whose definition is in a later block stays literal; a run of
column-0 lines longer than `BLOCK_CAP` without a blank line is cut into several lists, quotes or
paragraphs. A code block or a paragraph is never cut, however long.

The open (last) block is shown in the tail as *pieces* of at most about `PIECE_CAP` characters
(cut at line starts, and inside a long line after a space), each rendered on its own with the
open structures closed (`closing_suffix`: an open fence, code span, ``**`` or ``~~``), a piece
that continues a code block or a table reopened with its fence line or header. Pieces are
transient: when the block finishes, its whole render goes to the body and the tail starts again.
Code in a piece is plain (no highlighting, label or button) so that it grows by appends; it is
highlighted once, when its block finishes. Only the last piece changes as text arrives, so the work per token is bounded by `PIECE_CAP`
whatever the length of the answer or of the block: text is scanned once, line by line, a
finished block is rendered once and the last piece once per frame (`update`), never per token.
`append_plan` tells how the last piece's new HTML extends the old by appends, so a view sends
only what it grew by.
"""

from __future__ import annotations

import functools
import html
import re
from typing import NamedTuple
from urllib.parse import unquote

import mistune
from mistune.core import BlockState
from mistune.renderers.html import HTMLRenderer
from mistune.util import escape as escape_text
from mistune.util import safe_entity
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

__all__ = [
    "BLOCK_CAP",
    "HIGHLIGHT_CAP",
    "PIECE_CAP",
    "MarkdownStream",
    "append_plan",
    "closing_suffix",
    "render_blocks",
    "render_markdown",
    "split_blocks",
]

#: Size (characters) beyond which a run of column-0 lines is cut into several blocks.
BLOCK_CAP = 16384
#: Soft size (characters) of a piece of the open block shown while it streams.
PIECE_CAP = 400

# --------------------------------------------------------------------------- safe rendering

_SCHEME_RE = re.compile(r"([a-z][a-z0-9+.\-]*):")
_INVISIBLE_RE = re.compile(r"[\x00-\x20\x7f-\x9f\u00ad\u200b-\u200f\u2028\u2029\ufeff]+")
_REMOTE_RE = re.compile(r"[/\\]{2}")


def _url_kind(url: str) -> str | None:
    """Classify a link target: "remote" (http/https or //host), "mailto", "local", or None (unsafe).

    Every plausible decoding is checked (entities, percent-encoding, both) with whitespace and
    control characters removed, as browsers do; the most dangerous reading wins.
    """
    kinds = set()
    for form in {url, html.unescape(url), unquote(url), unquote(html.unescape(url))}:
        norm = _INVISIBLE_RE.sub("", form).lower()
        m = _SCHEME_RE.match(norm)
        if m:
            scheme = m.group(1)
            if scheme not in ("http", "https", "mailto"):
                return None
            kinds.add("mailto" if scheme == "mailto" else "remote")
        elif _REMOTE_RE.match(norm):
            kinds.add("remote")
        else:
            kinds.add("local")
    if len(kinds) > 1:  # e.g. "mailto" in one decoding, relative in another: be strict
        return None if "mailto" in kinds else "remote"
    return kinds.pop()


#: Longest code block highlighted (characters); a longer one is shown plain (Pygments is ~2 µs a character).
HIGHLIGHT_CAP = 32768
_CODE_FORMATTER = HtmlFormatter(nowrap=True)  # CSS classes only: no inline style, no script
_COPY_BUTTON = '<button type="button" class="md-copy" title="Copy the code">Copy</button>'


@functools.lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer | None:
    try:  # keep the text exactly as written: no newline stripped or added
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except (ClassNotFound, ValueError):
        return None


def _highlight(code: str, language: str) -> str | None:
    """Pygments' HTML for `code` (its token classes on spans, the text escaped), or None."""
    lexer = _lexer(language.lower()) if language and len(code) <= HIGHLIGHT_CAP else None
    if lexer is None:
        return None
    try:
        return highlight(code, lexer, _CODE_FORMATTER)
    except Exception:  # a lexer failing on odd input: show the code plain
        return None


class _SafeRenderer(HTMLRenderer):
    """mistune's HTML renderer with raw HTML escaped and a strict URL policy; with `decorate`, a code
    block is highlighted on the server (Pygments, CSS classes) and gets a language label and a copy
    button (`static/code.js` listens for its clicks)."""

    def __init__(self, decorate: bool = True) -> None:
        super().__init__(escape=True)
        self.decorate = decorate

    def block_code(self, code: str, info: str | None = None) -> str:
        if not self.decorate:
            return super().block_code(code, info)
        language = ""
        if info is not None:
            info = safe_entity(info.strip())
            language = info.split(None, 1)[0] if info else ""
        attrs = {"class": "language-" + language} if language else {}
        body = _highlight(code, html.unescape(language)) or escape_text(code)
        return ('<div class="md-code"><div class="md-code-head"><span class="md-code-lang">' + (language or "text")
                + "</span>" + _COPY_BUTTON + "</div><pre><code" + self.render_attrs(attrs) + ">" + body
                + "</code></pre></div>\n")

    def link(self, text: str, url: str, title: str | None = None) -> str:
        kind = _url_kind(url)
        if kind is None:
            return text
        attrs: dict[str, object] = {"href": url, "title": title or None, "rel": "noopener noreferrer"}
        if kind == "remote":
            attrs["target"] = "_blank"
        return "<a" + self.render_attrs(attrs) + ">" + text + "</a>"

    def image(self, text: str, url: str, title: str | None = None) -> str:
        kind = _url_kind(url)
        if kind == "local":
            return super().image(text, url, title)
        if kind == "remote":
            attrs = {"href": url, "title": title or None, "rel": "noopener noreferrer",
                     "target": "_blank", "class": "md-remote-image"}
            return "<a" + self.render_attrs(attrs) + ">" + (text or self.escape_attribute(url)) + "</a>"
        return text


_MARKDOWN = mistune.create_markdown(escape=True, renderer=_SafeRenderer(), plugins=["table", "strikethrough"])
# the open block's pieces: code shown plain while it streams, so it grows by appends
_MARKDOWN_PLAIN = mistune.create_markdown(escape=True, renderer=_SafeRenderer(decorate=False),
                                          plugins=["table", "strikethrough"])


def render_markdown(text: str) -> str:
    """Render Markdown to safe HTML (CommonMark + tables + strikethrough; raw HTML escaped)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    return _MARKDOWN(text)  # type: ignore[return-value]


def _render_plain(text: str) -> str:
    """`render_markdown` with code blocks plain (no highlighting, label or button): a piece still streaming."""
    return _MARKDOWN_PLAIN(text)  # type: ignore[return-value]


def _render_inline(text: str) -> str:
    """Inline Markdown only, no block structure: the rest of a line that a piece cut in the middle."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _MARKDOWN.renderer.render_tokens(_MARKDOWN.inline(text, {}), BlockState())  # type: ignore[union-attr]


# --------------------------------------------------------------------------- line scanner helpers

_FENCE_RE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_FENCE_LINE_RE = re.compile(r" {0,3}(?:```|~~~)")
_PARTIAL_CLOSER_RE = re.compile(r" {0,3}(`+|~+)")
_HEADING_RE = re.compile(r"#{1,6}(?=[ \t]|$)")
_SETEXT_UNDERLINE_RE = re.compile(r"(?:=+|-+)[ \t]*")
_TABLE_DELIMITER_RE = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")


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


# --------------------------------------------------------------------------- closing suffix


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
    if fence is not None:
        m = _PARTIAL_CLOSER_RE.fullmatch(last)
        if m and m.group(1)[0] == fence.char:
            return fence.char * max(0, fence.length - len(m.group(1)))
        return ("\n" if last else "") + fence.indent + fence.char * fence.length
    opening = _opens(last)
    if opening is not None:
        return "\n" + opening.indent + opening.char * opening.length
    if not last.strip():
        return ""  # closers at the start of a line could read as a fence or a list marker
    return _close_inline(text[max(after_fence, text.rfind("\n\n") + 1):])


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
        last = "".join(self.line)
        fence = self.fence
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
        return self.inline.closers()


# --------------------------------------------------------------------------- the stream

_NORMAL, _FENCE_CONT, _TABLE_CONT, _INLINE = range(4)
_THEAD_RE = re.compile(r"<thead>.*?</thead>\n?", re.S)
_SOFT_CUT_RE = re.compile(r"(?<=[ \t])[^ \t\r\n]")


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


class MarkdownStream:
    """The rendering state of one streamed message: finished blocks and the open block's pieces.

    `append` text as it arrives (cheap: it is only queued); once per frame `update` reads the new
    text, line by line, and cuts it into blocks and pieces; `take_finished` returns the HTML of
    the blocks finished since it was last called (each rendered once, whole); `pieces[i].html()`
    is the HTML of a piece of the open block (a finished piece is rendered once, the last one once
    per frame in which it changed). `finish` ends the message: the open block is finished too.
    Nothing before the current line is read again, and the current line only once it is complete,
    so the work per character is constant however long the message or its blocks.
    """

    def __init__(self, *, piece_cap: int | None = None, block_cap: int | None = None) -> None:
        self.piece_cap = PIECE_CAP if piece_cap is None else piece_cap
        self.block_cap = BLOCK_CAP if block_cap is None else block_cap
        self.blocks = 0  #: how many blocks were finished (the index of the open block)
        self.pieces: list[_Piece] = []  #: the open block's pieces; only the last one still grows
        self.ended = False
        self._queue: list[str] = []
        self._done: list[str] = []  # sources of finished blocks not taken yet
        # the block scanner's state at the start of the current line
        self._fence: _Fence | None = None
        self._after_block = False
        self._in_table = False
        self._table_head = ""
        self._prev_line = ""
        self._block_size = 0
        # the current line
        self._line: list[str] = []
        self._line_len = 0
        self._head = ""
        self._blank = True
        self._placed = 0  # characters of the current line given to the pieces
        self._held: list[str] | None = []  # the line's text while it is unknown whether it starts a block
        self._next: tuple[int, str, bool] | None = (_NORMAL, "", False)  # the next piece to start, if any

    def append(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if self.ended:
            raise ValueError("the stream has ended")
        if text:
            self._queue.append(text)

    def update(self) -> None:
        """Read the text appended since the last update."""
        if not self._queue:
            return
        new = self._queue[0] if len(self._queue) == 1 else "".join(self._queue)
        self._queue.clear()
        pos, n = 0, len(new)
        while pos < n:
            nl = new.find("\n", pos)
            end = n if nl < 0 else nl + 1
            self._take(new[pos:end] if pos or end < n else new, nl >= 0)
            pos = end

    def finish(self) -> None:
        """The message is complete: its open block is finished."""
        if self.ended:
            return
        self.update()
        if self._held:
            held, self._held = "".join(self._held), None
            self._place(held)
        if self.pieces:
            self._cut()
        self.ended = True

    def take_finished(self) -> str:
        """The HTML of the blocks finished since the last call, each rendered now, once."""
        if not self._done:
            return ""
        out = "".join(render_markdown(source) for source in self._done)
        self._done.clear()
        return out

    def tail_html(self, wrap: str = '<div class="md-piece">{}</div>') -> str:
        """All the open block's pieces, each in `wrap` (what a page shows while the message streams)."""
        return "".join(wrap.format(piece.html()) for piece in self.pieces)

    # -- scanning ---------------------------------------------------------------------------------

    def _take(self, part: str, complete: bool) -> None:
        if not self._line_len:
            self._line_start()
        self._line.append(part)
        self._line_len += len(part)
        if len(self._head) < 16:
            self._head = (self._head + part)[:16]
        if self._blank and part.strip():
            self._blank = False
        if self._held is None:
            self._place(part)
        else:
            self._held.append(part)
            if self._decide(complete):
                held, self._held = "".join(self._held), None
                self._place(held)
        if complete:
            self._line_end()

    def _line_start(self) -> None:
        self._held = []
        if self.pieces and self._next is None:
            live = self.pieces[-1]
            if live.midline or live.size >= self.piece_cap:
                if self._fence is not None:
                    self._next = (_FENCE_CONT, self._fence.line + "\n", False)
                elif self._in_table and self._table_head:
                    self._next = (_TABLE_CONT, self._table_head, False)
                else:
                    self._next = (_NORMAL, "", False)

    def _decide(self, complete: bool) -> bool:
        """Whether a block starts at the current line (then cut there) can be told now; False: not yet."""
        if self._fence is not None:
            return True  # inside a code block: never cut
        if self._blank:
            return complete
        c0 = self._head[0]
        if c0 in " \t" or not self._block_size:
            return True
        if self._after_block:
            self._cut()
            return True
        m = _HEADING_RE.match(self._head)
        if m is not None:
            if complete or self._line_len > m.end():
                self._cut()
                return True
            return False  # "##" may still become "## x"
        if self._block_size >= self.block_cap and not self._in_table:
            if c0 not in "=-":
                self._cut()
            elif not complete:
                return False  # a setext underline would belong to the block
            elif not _SETEXT_UNDERLINE_RE.fullmatch("".join(self._line)[:-1]):
                self._cut()
        return True

    def _line_end(self) -> None:
        line = "".join(self._line)[:-1]
        if self._fence is not None:
            if _closes(self._fence, line):
                self._fence, self._after_block = None, True
        elif self._blank:
            self._after_block = True
        else:
            if not self._in_table and "|" in line and _TABLE_DELIMITER_RE.fullmatch(line):
                self._in_table, self._table_head = True, self._prev_line + "\n" + line + "\n"
            self._after_block = False
            self._fence = _opens(line)
        self._block_size += self._line_len
        self._prev_line = line
        self._line.clear()
        self._line_len = self._placed = 0
        self._head, self._blank = "", True

    def _cut(self) -> None:
        """The open block ends at the start of the current line."""
        self._done.append("".join(piece.text() for piece in self.pieces))
        self.blocks += 1
        self.pieces = []
        self._block_size = 0
        self._in_table, self._table_head = False, ""
        self._next = (_NORMAL, "", False)

    def _place(self, text: str) -> None:
        """Give text of the current line to the pieces, starting new ones where they are cut."""
        while text:
            if self._next is not None:
                self.pieces.append(_Piece(*self._next))
                self._next = None
            live = self.pieces[-1]
            q = self._midline_cut(live, text)
            if q is None:
                live.add(text)
                self._placed += len(text)
                return
            if q:
                live.add(text[:q])
                self._placed += q
                text = text[q:]
            if self._fence is not None:
                self._next = (_FENCE_CONT, self._fence.line + "\n", True)
            else:
                self._next = (_INLINE, "", True)

    def _midline_cut(self, live: _Piece, text: str) -> int | None:
        """Where in `text` (the current line's next characters) a line is cut, if it is: after a space
        once both the piece and the line hold PIECE_CAP characters, anywhere but before a line break
        once the piece holds twice that."""
        cap, size = self.piece_cap, live.size
        if size + len(text) <= cap or self._placed + len(text) <= cap and size + len(text) <= 2 * cap:
            return None
        q = None
        start = max(cap - size, cap - self._placed, 0)
        if start == 0 and self._placed and live.parts and live.parts[-1][-1] in " \t" and text[0] not in " \t\r\n":
            q = 0
        else:
            m = _SOFT_CUT_RE.search(text, max(start, 1))
            if m is not None:
                q = m.start()
        forced = max(2 * cap - size, 0 if self._placed else 1)
        while forced < len(text) and text[forced] in "\r\n":
            forced += 1
        if forced < len(text) and (q is None or forced < q):
            q = forced
        return q


def split_blocks(text: str) -> list[str]:
    """The sources of the blocks a message is rendered in, block by block (see the module docstring)."""
    stream = MarkdownStream()
    stream.append(text)
    stream.finish()
    return list(stream._done)


def render_blocks(text: str) -> str:
    """The block-wise rendering of a whole text: what a fully streamed message's body holds.

    Use it to render a finished (immutable) message; it equals `render_markdown` except for the
    caveats listed in the module docstring.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    stream = MarkdownStream()
    stream.append(text)
    stream.finish()
    return stream.take_finished()


# --------------------------------------------------------------------------- append plans

_TOKEN_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>|[^<]+|<")
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_NO_LEADING_NEWLINE = frozenset({"pre", "textarea", "listing"})
_HTML_SPACE = " \t\n\r\f"


_CLOSE_TAG_RE = re.compile(r"</[a-zA-Z][a-zA-Z0-9]*>")


def _trailer_start(html_: str) -> int:
    """Where the closing tags and whitespace that end `html_` start (read backwards: O(their length))."""
    end = len(html_)
    while True:
        stripped = end
        while stripped and html_[stripped - 1] in _HTML_SPACE:
            stripped -= 1
        if stripped and html_[stripped - 1] == ">":
            lt = html_.rfind("<", 0, stripped)
            if lt >= 0 and _CLOSE_TAG_RE.fullmatch(html_, lt, stripped):
                end = lt
                continue
        return stripped


class Append(NamedTuple):
    """Children to append to an element of the old HTML: the element at `depth` on its last-child path
    (0: the element holding the HTML, 1: its last top-level element, ...), whose tag is `tag` ("" for 0)."""

    depth: int
    tag: str
    html: str


def _tokens(s: str, pos: int = 0):
    """(kind, tag, start, end) for each tag and text run of well-formed HTML, from `pos`."""
    for m in _TOKEN_RE.finditer(s, pos):
        tag = m.group(2)
        if tag is None:
            yield "text", "", m.start(), m.end()
        elif m.group(1):
            yield "close", tag.lower(), m.start(), m.end()
        elif m.group(4) or tag.lower() in _VOID:
            yield "void", tag.lower(), m.start(), m.end()
        else:
            yield "open", tag.lower(), m.start(), m.end()


def append_plan(old: str, new: str) -> list[Append] | None:
    """How `new` extends `old` (both well-formed HTML, the content of one element) by appends only.

    `old` ends with the closing tags of the elements on its last-child path (and whitespace); `new`
    must be `old` with content inserted only just before some of those closing tags (and at the
    very end). Returns the appends, deepest first, so that appending each `html` to the children of
    its element turns the DOM of `old` into that of `new`; ``[]`` if they are equal; None when
    earlier markup changed (then replace). Linear in the length of `new`.
    """
    if old == new:
        return []
    a = _trailer_start(old)
    if new[:a] != old[:a]:
        return None
    trailer = list(_tokens(old, a))
    depth = sum(1 for t in trailer if t[0] == "close")
    plan: list[Append] = []
    ti, nest, x = 0, 0, a
    for kind, tag, s, e in _tokens(new, a):
        if nest:
            nest += 1 if kind == "open" else -1 if kind == "close" else 0
            continue
        expect = trailer[ti] if ti < len(trailer) else None
        if kind == "close":
            if expect is None or expect[0] != "close" or expect[1] != tag:
                return None
            if x < s:
                plan.append(Append(depth, tag, new[x:s]))
            depth, ti, x = depth - 1, ti + 1, e
        elif expect is not None and expect[0] == "text":
            space = old[expect[2]:expect[3]]
            if kind != "text" or x != s or not new.startswith(space, s):
                return None  # new content before a node the page already has
            ti, x = ti + 1, s + len(space)
        elif kind == "open":
            nest = 1
    if nest or ti < len(trailer):
        return None
    if x < len(new):
        plan.append(Append(0, "", new[x:]))
    if any(step.tag in _NO_LEADING_NEWLINE and step.html.startswith("\n") for step in plan):
        return None  # an HTML parser drops a newline just after <pre>
    return plan
