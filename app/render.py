"""Safe, incremental Markdown rendering for streamed messages (mistune 3).

Safety (`render_markdown`): raw HTML is escaped, never passed through; links keep only
``http:``, ``https:``, ``mailto:``, relative URLs and ``#anchors`` (anything else, however it is
spelled — case, entities, percent-encoding, control characters — is dropped and only the link
text stays); every link gets ``rel="noopener noreferrer"``; images load only from this origin
(a remote image becomes a plain link, so an answer cannot make the browser call a tracker);
attribute values go through mistune's attribute escaping.

Streaming (`render_update`): a message's text only grows while it streams. It is cut into
*segments* at offsets that later text can never move (see `split_stable`). A finished segment
is rendered once and appended to the message's "finished blocks" container; the open last
segment (the "tail", plus the estimate and `closing_suffix`) is re-rendered and replaces the
tail element on each update. The caller keeps one int per message and connection: the
`stable_offset` of the last update.

Caveats of the block-wise rendering (each segment is rendered on its own):
- list items separated by blank lines become one list each (an ordered one keeps its numbering
  through ``start``);
- a run of column-0 lines longer than ~`SEGMENT_CAP` characters without a blank line (a long
  tight list, block quote, or paragraph wrapped over many lines) is cut into several lists,
  quotes or paragraphs;
- a fenced code block longer than ~`SEGMENT_CAP` characters is split into several ``<pre>``,
  the continuations marked ``<pre class="md-cont">`` (style them to join visually);
- a reference-style link whose definition comes in a later segment stays literal text;
- a paragraph on one line and a table are never cut: while one grows, it is re-sent whole.

Bytes: each update sends the new finished segments plus the whole tail, so a streamed answer
costs about its final HTML plus (number of updates x average tail). With updates coalesced to
~250 characters each (2,000 tokens/s, one frame per ~33 ms) that stays under 3x the final HTML
for typical answers; one update per 4-character token costs tens of times the final HTML
(linear in the answer's length, but multiplied by the block size).
"""

from __future__ import annotations

import html
import re
from typing import NamedTuple
from urllib.parse import unquote

import mistune
from mistune.renderers.html import HTMLRenderer

__all__ = [
    "SEGMENT_CAP",
    "IncrementalRender",
    "RenderUpdate",
    "closing_suffix",
    "render_blocks",
    "render_markdown",
    "render_update",
    "split_stable",
]

#: Soft size (characters) of a segment, beyond which runs of lines and code blocks are cut.
SEGMENT_CAP = 512

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


class _SafeRenderer(HTMLRenderer):
    """mistune's HTML renderer with raw HTML escaped and a strict URL policy."""

    def __init__(self) -> None:
        super().__init__(escape=True)

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


def render_markdown(text: str) -> str:
    """Render Markdown to safe HTML (CommonMark + tables + strikethrough; raw HTML escaped)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    return _MARKDOWN(text)  # type: ignore[return-value]


# --------------------------------------------------------------------------- block scanner

_FENCE_RE = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_PARTIAL_CLOSER_RE = re.compile(r" {0,3}(`+|~+)")
_HEADING_RE = re.compile(r"#{1,6}(?=[ \t]|$)")
_SETEXT_UNDERLINE_RE = re.compile(r"(?:=+|-+)[ \t]*")
_TABLE_DELIMITER_RE = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")


class _Fence(NamedTuple):
    indent: str
    char: str
    length: int
    line: str  # the opening line, re-used to open the continuation of a split code block


def _opens(line: str) -> _Fence | None:
    m = _FENCE_RE.fullmatch(line)
    if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
        return None
    return _Fence(m.group(1), m.group(2)[0], len(m.group(2)), line)


def _closes(fence: _Fence, line: str) -> bool:
    m = _FENCE_RE.fullmatch(line)
    return bool(m) and m.group(2)[0] == fence.char and len(m.group(2)) >= fence.length \
        and not m.group(3).strip(" \t\r")


def _fence_at(text: str, pos: int) -> tuple[_Fence | None, int]:
    """The code fence open at line start `pos`, and the end of the last fence line before it.

    Only lines holding ``` or ~~~ are looked at (found with `str.find`), so this is cheap.
    """
    starts = set()
    for marker in ("```", "~~~"):
        i = text.find(marker, 0, pos)
        while i >= 0:
            line_start = text.rfind("\n", 0, i) + 1
            if i - line_start <= 3 and text[line_start:i] == " " * (i - line_start):
                starts.add(line_start)
            nl = text.find("\n", i, pos)
            i = text.find(marker, nl, pos) if nl >= 0 else -1
    fence, after = None, 0
    for line_start in sorted(starts):
        end = text.find("\n", line_start)
        end = len(text) if end < 0 else end
        line = text[line_start:end]
        if fence is None:
            fence = _opens(line)
        elif _closes(fence, line):
            fence = None
        after = end + 1
    return fence, after


def _is_heading(line: str, complete: bool) -> bool:
    m = _HEADING_RE.match(line)
    return m is not None and (complete or len(line) > m.end())  # "##" may still become "##x"


def _cuts(text: str, start: int, fence: _Fence | None) -> list[tuple[int, _Fence | None]]:
    """Segment starts after `start` (itself a segment start, with code fence `fence` open there).

    Cuts are made at the start of a line that begins in column 0 outside a code fence when it
    follows a blank line or a closed fence, or is an ATX heading. Once a segment is longer than
    SEGMENT_CAP, a cut is also made before any complete column-0 line (except a setext underline
    or a row of a table) and before any complete line inside a code fence (that cut carries the
    fence, which the next segment reopens). Each cut is decided from the text before it and the
    characters of its own line already present, so appended text never removes or moves a cut:
    the cuts of a prefix are cuts of every extension of it.
    """
    cuts: list[tuple[int, _Fence | None]] = []
    seg, pos, after_block, in_table = start, start, False, False
    while pos < len(text):
        nl = text.find("\n", pos)
        complete = nl >= 0
        line = text[pos:nl] if complete else text[pos:]
        long = pos - seg >= SEGMENT_CAP
        if fence is not None:
            if complete and _closes(fence, line):
                fence, after_block = None, True
            elif complete and long:
                cuts.append((pos, fence))
                seg = pos
        elif not line.strip():
            after_block = after_block or complete
        else:
            if line[0] not in " \t" and pos > seg and (
                after_block
                or _is_heading(line, complete)
                or (long and complete and not in_table and not _SETEXT_UNDERLINE_RE.fullmatch(line))
            ):
                cuts.append((pos, None))
                seg, in_table = pos, False
            in_table = in_table or ("|" in line and _TABLE_DELIMITER_RE.fullmatch(line) is not None)
            after_block = False
            fence = _opens(line) if complete else None
        if not complete:
            break
        pos = nl + 1
    return cuts


def split_stable(text: str) -> int:
    """Offset where the finished blocks of `text` end (0 if none).

    It is the start of the last line that begins in column 0, outside a fenced code block (``` or
    ~~~, length >= 3, closed only by the same character at least as long), and follows a blank
    line or a closed fence, or is a heading (plus the SEGMENT_CAP cuts of long runs of lines and
    long code blocks). Text before it renders the same whatever is appended (segment-wise; see
    the module caveats: loose lists, reference definitions that come later, long blocks).
    """
    cuts = _cuts(text, 0, None)
    return cuts[-1][0] if cuts else 0


# --------------------------------------------------------------------------- closing suffix


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
    ``**`` / ``~~`` in the last block are closed. Show it after the content, never store it in
    the content. Idempotent: ``closing_suffix(t + closing_suffix(t)) == ""``.
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


# --------------------------------------------------------------------------- incremental rendering


class RenderUpdate(NamedTuple):
    """One streaming update of a message element."""

    stable_html: str  #: finished blocks to append to the message's finished-blocks container
    stable_offset: int  #: keep it; pass it as `since` next time
    tail_html: str  #: replaces the content of the message's tail element


def _render_source(source: str, continued: bool) -> str:
    out = render_markdown(source)
    if continued and out.startswith("<pre>"):  # the continuation of a split code block
        out = '<pre class="md-cont">' + out[len("<pre>"):]
    return out


def _segment_source(text: str, start: int, end: int, fence: _Fence | None) -> str:
    return (fence.line + "\n" if fence else "") + text[start:end]


def render_update(content: str, since: int = 0, estimate: str | None = None, *,
                  final: bool = False) -> RenderUpdate:
    """Render what changed in a streamed message since the stable offset `since`.

    `content` is the message's whole current content and `since` the `stable_offset` of the
    previous update for this message (0 at first). The segments that became finished since
    then are rendered once into `stable_html`; the open last segment plus `estimate` plus
    `closing_suffix` of both is rendered into `tail_html`. With ``final=True`` (the message is
    immutable) everything is finished: the estimate is ignored, `tail_html` is "" and the
    offset is ``len(content)``.

    Invariant: after each update, the concatenated `stable_html` pieces equal
    ``render_blocks(content[:stable_offset])``; after the final one they equal
    ``render_blocks(content)``, whatever chunks the content grew by. If the content was replaced
    (an override) rather than extended, start again from 0 with an empty container.
    Cost: scanning from `since` plus rendering the new segments and the tail; a fast search for
    fence lines before `since` is the only work on the older text.
    """
    if not isinstance(content, str):
        raise TypeError(f"content must be str, not {type(content).__name__}")
    if not (0 <= since <= len(content)) or (0 < since < len(content) and content[since - 1] != "\n"):
        raise ValueError(f"since={since} is not a stable offset of this content")
    fence = _fence_at(content, since)[0] if since else None
    starts = [(since, fence), *_cuts(content, since, fence)]
    if final:
        starts.append((len(content), None))
    stable = "".join(_render_source(_segment_source(content, s, e, f), f is not None)
                     for (s, f), (e, _) in zip(starts, starts[1:]) if s < e)
    offset, fence = starts[-1]
    if final:
        return RenderUpdate(stable, offset, "")
    tail = ""
    if offset < len(content) or estimate:
        source = _segment_source(content, offset, len(content), fence) + (estimate or "")
        tail = _render_source(source + closing_suffix(source), fence is not None)
    return RenderUpdate(stable, offset, tail)


def render_blocks(text: str) -> str:
    """The block-wise rendering of a whole text: what a fully streamed message's container holds.

    Use it to render a finished (immutable) message; it equals `render_markdown` except for the
    caveats listed in the module docstring.
    """
    return render_update(text, 0, final=True).stable_html


class IncrementalRender:
    """Holds the one int a connection keeps per streamed message (`offset`).

    Page structure: one element per message holding a finished-blocks container and a tail
    element; send `stable_html` with ``hx-swap-oob="beforeend:#<container id>"`` (wrapped in a
    ``<div>``: htmx inserts the wrapper's children) and the tail with ``hx-swap-oob="true"``.
    """

    __slots__ = ("offset",)

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def update(self, content: str, estimate: str | None = None, *, final: bool = False) -> RenderUpdate:
        """Render the change since the last update and remember the new stable offset."""
        result = render_update(content, self.offset, estimate, final=final)
        self.offset = result.stable_offset
        return result

    def reset(self) -> None:
        """Start again from the beginning (after an override replaced the content)."""
        self.offset = 0


def open_fence_line(text: str, pos: int) -> str:
    """The opening line (with its newline) of the code fence still open at line start `pos`, or "".

    A stream view that keeps only the text after a cut (`pos`) puts this line in front of it, so the rest
    of a long code block still renders as code (a `pre.md-cont`, as `render_blocks` does)."""
    fence = _fence_at(text, pos)[0]
    return fence.line + "\n" if fence else ""
