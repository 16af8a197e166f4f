"""Append plans: how new HTML extends old HTML by appends only (`append_plan`). A view compares the HTML
of the open block's last piece on the page with its new HTML and sends only what it grew by (or replaces
it when earlier markup changed)."""

from __future__ import annotations

import re
from typing import NamedTuple

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
