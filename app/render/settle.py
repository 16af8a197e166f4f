"""The settle rule: how the pieces of a finished block, as a page shows them, merge into the block's HTML.

Every finished block used to reach the page twice: as the pieces it streamed in, then whole. When merging the
pieces the page already shows gives exactly the block's final HTML, a view sends a tiny instruction instead of
the block (app/components/compact.py), and the page does the same merge in place. The rule is applied to the
same markup in three places that must agree: here on the server's strings (`merge`, the check), on the page's
nodes (static/quanda.js `settle`) and in the page model (bench/page.py `Page._settle`).

The rule, for each piece in order (its child nodes), building the merged nodes:

- *inline join*: a piece whose first node is `<p class="md-inline">` (a piece cut mid-line) adds that element's
  children at the end of the *target*: the last element merged so far, followed down while its last node that
  is not whitespace-only text is a `p`, `li`, `ul`, `ol` or `blockquote` element. A text " " goes first unless
  the target's text content ends with ASCII whitespace (space, tab, LF, CR, FF): a paragraph's render drops the
  space the piece was cut after, a mid-line piece's keeps it. If the element's last child is text ending with
  a line break, that text's trailing ASCII whitespace is dropped first: a mid-line piece ends at its line's end,
  and the line break it renders there is one its block's render drops (or, if the paragraph goes on, the next
  line is a piece of its own that no rule joins);
- *list join*: a piece whose first node is a `ul` (`ol`) element, when the last element merged so far is a `ul`
  (`ol`), adds that list's children, without a leading whitespace-only text node, at the end of that last
  element (a long list is cut into pieces that are lists of their own);
- after a join, the whitespace-only text that followed the last element is dropped and the piece's nodes after
  its first are added at the end; any other piece has its nodes added at the end as they are.

`merge` answers None wherever the page could read the markup differently from these string operations (a
markup these string operations do not follow). The caller compares the result
with the block's final HTML: a block the rule does not fit (a highlighted code block, a table) costs its bytes
as before, never correctness.
"""

from __future__ import annotations

import html
import re

WHITESPACE = " \t\n\r\f"
INLINE_START = '<p class="md-inline">'
_LIST_START = re.compile(r"<(ul|ol)\b[^>]*>([ \t\n\r\f]*)")
_CLOSE_TAG = re.compile(r"</([a-z][a-z0-9]*)>")
_VOID_TAG = re.compile(r"<(?:br|img|hr|wbr|input)\b[^>]*>")
_CHAR_REF = re.compile(r"&#?[0-9a-zA-Z]+;\Z")
DESCEND = frozenset(("p", "li", "ul", "ol", "blockquote"))


def merge(pieces: list[str]) -> str | None:
    """The pieces' HTML (each piece's inner HTML, in order) merged by the rule; None where it cannot be told."""
    out = ""
    for piece in pieces:
        if piece.startswith(INLINE_START):
            end = piece.find("</p>")
            head = out.rstrip(WHITESPACE)
            close = _target(head)
            if end < 0 or close is None:
                return None
            space = _ends_with_space(head, close)
            if space is None:
                return None
            inner = piece[len(INLINE_START):end]
            if inner.endswith(("\n", "\r")):
                inner = inner.rstrip(WHITESPACE)
                last = _last_char(inner, len(inner))
                if last and last in WHITESPACE:
                    return None  # a reference to whitespace: the page, which reads it, would strip it too
            out = head[:close] + ("" if space else " ") + inner + head[close:] + piece[end + 4:]
            continue
        m = _LIST_START.match(piece)
        if m is not None and out:
            head = out.rstrip(WHITESPACE)
            last = _CLOSE_TAG.fullmatch(head, head.rfind("</"))
            if last is None:
                return None
            if last.group(1) == m.group(1):
                if not piece.startswith("<", m.end()):
                    return None  # text after the list's start tag: not the whitespace-only node the page drops
                out = head[:last.start()] + piece[m.end():]
                continue
        out += piece
    return out


def _target(head: str) -> int | None:
    """Where the target's closing tag starts in `head` (the merged markup without its trailing whitespace,
    ending with the last element's closing tag); None if it does not end with one."""
    close = head.rfind("</")
    if close < 0 or _CLOSE_TAG.fullmatch(head, close) is None:
        return None
    while True:
        j = close
        while j and head[j - 1] in WHITESPACE:
            j -= 1  # a whitespace-only text node
        inner = head.rfind("</", 0, j)
        m = _CLOSE_TAG.fullmatch(head, inner, j) if inner >= 0 else None
        if m is None or m.group(1) not in DESCEND:
            return close
        close = inner


def _ends_with_space(head: str, close: int) -> bool | None:
    """Whether the text content of the element closed at `close` ends with ASCII whitespace; None when that
    cannot be told from the markup alone (no text before an opening tag). A character reference counts as the
    character it stands for, as the page reads it."""
    j = close
    while j and head[j - 1] == ">":
        k = head.rfind("<", 0, j)
        if k < 0 or not (_CLOSE_TAG.fullmatch(head, k, j) or _VOID_TAG.fullmatch(head, k, j)):
            return None  # an opening tag: an element with no text after it, maybe the target itself
        j = k
    last = _last_char(head, j)
    return None if last == "" else last in WHITESPACE


def _last_char(markup: str, end: int) -> str:
    """The last character of the text ending at `end`, as the page reads it ("" for none, or for a tag's ">")."""
    if not end or markup[end - 1] == ">":
        return ""
    ref = _CHAR_REF.search(markup, max(0, end - 40), end)
    return html.unescape(ref.group())[-1:] if ref else markup[end - 1]
