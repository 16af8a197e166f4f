"""A page rebuilt from WebSocket frames as htmx 2 and its ws extension would: the benchmarks and the tests check
that what a tab shows after the frames equals what a reload renders.

What is modelled (htmx 2.0 `oobSwap`, htmx-ext-ws 2.x `onmessage`): a frame is parsed as a fragment and each
top-level *element* is swapped out of band (text between elements is dropped); its `hx-swap-oob` ("true" when
absent) is "true", a swap style, or "style:selector"; the selector (default `#<id>`) is looked up with
querySelectorAll and every match is swapped; no match: htmx ignores the element (`htmx:oobErrorNoTarget`),
recorded here in `missing`. "true"/"outerHTML" put the element itself (without its hx-swap-oob) in place of
the target; every other style uses the element's *children*: innerHTML, beforeend, afterbegin, beforebegin,
afterend, delete, none. An HTML parser drops a newline right after `<pre>`, `<textarea>` or `<listing>`.
Before that, the page's "quanda" extension (static/quanda.js) expands each top-level element in the compact form
(app/components/compact.py): `q="<alias>.<n>"`, with `q-def="<id>"` defining the alias, becomes
`hx-swap-oob="beforeend:#<id>"` followed by n `>:last-child` steps, and `q="<alias>.s"` becomes
`hx-swap-oob="settle:#<id>"`, the extension's own swap style: the tail's pieces merged by the rule of
app/render/settle.py (written again here, on the model's nodes, as static/quanda.js writes it on the page's)
and moved to the end of the body (`msg-<id>-tail` -> `msg-<id>-body`); an alias used before its definition
fails the check (the browser would drop the element with a warning).

What is not (and is refused with `Unmodelled`, so a check never passes by accident): selectors other than
`#id` followed by `>:last-child` steps; nested `hx-swap-oob` attributes; a children-swap whose wrapper tag
differs from the target's (its children would be parsed in another context: a `<li>` in a `<div>`, a `<tr>`
in a `<p>`); markup that is not well formed (the server only sends well-formed HTML).
"""

from __future__ import annotations

import html
import re
from typing import Callable, Iterator

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>|<!--.*?-->|<!\w[^>]*>", re.S)
_ATTR = re.compile(r"""([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_DROPS_LEADING_NEWLINE = frozenset({"pre", "textarea", "listing"})
_SELECTOR = re.compile(r"\s*#([\w-]+)((?:\s*>\s*:last-child)*)\s*")
_OOB_ATTR = re.compile(r'\s+(?:data-)?hx-swap-oob="[^"]*"')
_COMPACT = re.compile(r"([0-9a-z]+)\.(\d+|s)")
_COMPACT_ATTRS = re.compile(r'\s+q(?:-def)?="[^"]*"')
_DEFINITION = re.compile(rb' q="([0-9a-z]+)\.\d+" q-def="([^"]*)"')
CHILDREN_STYLES = ("innerHTML", "beforeend", "afterbegin", "beforebegin", "afterend", "delete", "none")
_WS = " \t\n\r\f"
_DESCEND = frozenset(("p", "li", "ul", "ol", "blockquote"))


class Unmodelled(AssertionError):
    """A frame this simulator cannot swap faithfully (so no check may pass on it)."""


class El:
    """An element: its start tag as sent, its attributes (unescaped), its children (El or text)."""

    __slots__ = ("tag", "start", "attrs", "children", "parent")

    def __init__(self, tag: str, start: str, attrs: dict[str, str], parent: "El | None" = None):
        self.tag, self.start, self.attrs, self.parent = tag, start, attrs, parent
        self.children: list[El | str] = []

    def inner(self) -> str:
        return "".join(c if isinstance(c, str) else c.outer() for c in self.children)

    def outer(self) -> str:
        return self.start + self.inner() + ("" if self.tag in _VOID else f"</{self.tag}>")

    def elements(self) -> Iterator["El"]:
        for c in self.children:
            if isinstance(c, El):
                yield c
                yield from c.elements()

    def element_children(self) -> list["El"]:
        return [c for c in self.children if isinstance(c, El)]

    def adopt(self, nodes: list) -> list:
        for node in nodes:
            if isinstance(node, El):
                node.parent = self
        return nodes


def parse(markup: str) -> list:
    """Well-formed HTML to nodes (text and start tags kept as they were sent; comments and doctypes dropped)."""
    root = El("#root", "", {})
    stack, pos = [root], 0
    for m in _TAG.finditer(markup):
        if m.start() > pos:
            _text(stack[-1], markup[pos:m.start()])
        pos = m.end()
        if m.group(2) is None:
            continue  # a comment or a doctype
        tag = m.group(2).lower()
        if m.group(1):
            if stack[-1].tag != tag:
                raise Unmodelled(f"</{tag}> closes <{stack[-1].tag}>: not well formed: {markup[:200]!r}")
            stack.pop()
            continue
        attrs = {k.lower(): html.unescape(next((v for v in vals if v), "")) for k, *vals in _ATTR.findall(m.group(3))}
        el = El(tag, m.group(0), attrs, stack[-1])
        stack[-1].children.append(el)
        if tag not in _VOID and not m.group(0).endswith("/>"):
            stack.append(el)
    if pos < len(markup):
        _text(stack[-1], markup[pos:])
    if len(stack) != 1:
        raise Unmodelled(f"unclosed <{stack[-1].tag}>: not well formed: {markup[:200]!r}")
    return root.children


def _text(parent: El, text: str) -> None:
    if parent.tag in _DROPS_LEADING_NEWLINE and not parent.children and text.startswith("\n"):
        text = text[1:]  # what every HTML parser does right after <pre>
    if text:
        parent.children.append(text)


def normalize(markup: str) -> str:
    """`markup` as a page holds it once parsed (what a frame's HTML is compared with)."""
    root = El("#root", "", {})
    root.children = root.adopt(parse(markup))
    return root.inner()


class Page:
    """A page (or part of one) that frames are applied to, as a browser tab would."""

    def __init__(self, markup: str = ""):
        self.root = El("#root", "", {})
        self.root.children = self.root.adopt(parse(markup))
        self.bytes = 0  # payload bytes of the frames applied (UTF-8)
        self.frames = 0
        self.missing: list[str] = []  # selectors that matched nothing (htmx ignores those elements)
        self.dropped: list[str] = []  # text outside elements (the extension drops it)
        self.aliases: dict[str, str] = {}  # compact form: alias -> element id, as the page's extension holds them

    # -- lookup ------------------------------------------------------------------------------------------

    def find(self, id_: str) -> El | None:
        found = [e for e in self.root.elements() if e.attrs.get("id") == id_]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} elements with id {id_!r}")
        return found[0] if found else None

    def by_id(self, id_: str) -> El:
        el = self.find(id_)
        if el is None:
            raise AssertionError(f"no element with id {id_!r}")
        return el

    def inner(self, id_: str) -> str:
        return self.by_id(id_).inner()

    def select(self, selector: str) -> list[El]:
        """querySelectorAll for `#id` then `>:last-child` steps (ids are unique here, so at most one match)."""
        m = _SELECTOR.fullmatch(selector)
        if not m:
            raise Unmodelled(f"selector {selector!r} is not modelled")
        el = self.find(m.group(1))
        for _ in range(m.group(2).count(">")):
            if el is None:
                break
            kids = el.element_children()
            el = kids[-1] if kids else None
        return [el] if el is not None else []

    # -- frames ------------------------------------------------------------------------------------------

    def apply(self, frame: str, check: Callable[[El], None] | None = None) -> None:
        """Swap one WebSocket frame in, as the ws extension does; `check(element)` sees each top-level
        element before it is swapped."""
        self.frames += 1
        self.bytes += len(frame.encode("utf-8", "surrogatepass"))
        for node in parse(frame):
            if isinstance(node, str):
                if node.strip():
                    self.dropped.append(node)  # text outside elements: the extension swaps elements only
                continue
            if "q" in node.attrs:
                self._expand(node)
            if check is not None:
                check(node)
            if any("hx-swap-oob" in e.attrs or "data-hx-swap-oob" in e.attrs for e in node.elements()):
                raise Unmodelled(f"nested hx-swap-oob in {node.start!r}")
            self._oob_swap(node.attrs.get("hx-swap-oob") or node.attrs.get("data-hx-swap-oob") or "true", node)

    def _expand(self, node: El) -> None:
        """A compact append into htmx's markup, as static/quanda.js's `expandCompact` does."""
        value, define = node.attrs.pop("q"), node.attrs.pop("q-def", None)
        m = _COMPACT.fullmatch(value)
        if m is None:
            raise Unmodelled(f"compact form {value!r}")
        alias, op = m.group(1), m.group(2)
        if define is not None:
            self.aliases[alias] = define
        if alias not in self.aliases:
            raise AssertionError(f"alias {alias!r} used before its definition: {node.start!r}")
        target = self.aliases[alias]
        node.attrs["hx-swap-oob"] = f"settle:#{target}" if op == "s" else f"beforeend:#{target}" + ">:last-child" * int(op)
        node.start = _COMPACT_ATTRS.sub("", node.start)

    def _oob_swap(self, oob: str, node: El) -> None:
        selector, style = "#" + node.attrs.get("id", ""), "outerHTML"
        if oob != "true":
            if ":" in oob[1:]:
                style, selector = oob.split(":", 1)
            else:
                style = oob
        node.start = _OOB_ATTR.sub("", node.start)
        node.attrs.pop("hx-swap-oob", None)
        node.attrs.pop("data-hx-swap-oob", None)
        targets = self.select(selector) if selector != "#" else []
        if not targets:
            self.missing.append(selector)
            return
        if style == "settle":
            self._settle(targets[0])
            return
        if style not in ("outerHTML", *CHILDREN_STYLES):
            raise Unmodelled(f"swap style {style!r}")
        for target in targets:
            if style != "outerHTML" and style not in ("delete", "none") and node.tag != target.tag:
                raise Unmodelled(f"<{node.tag}> wrapper for a {style} into <{target.tag}>: its children "
                                 "would be parsed in another context")
            self._swap(style, target, node)

    def _settle(self, tail: El) -> None:
        """The extension's settle swap (static/quanda.js `settle`; the rule: app/render/settle.py)."""
        body = self.by_id(re.sub(r"-tail\Z", "-body", tail.attrs.get("id", "")))
        out = El("#fragment", "", {})
        for piece in tail.element_children():
            kids = piece.children
            first, last, into = kids[0] if kids and isinstance(kids[0], El) else None, _last_node(out), None
            if first is not None and isinstance(last, El):
                if first.tag == "p" and first.attrs.get("class") == "md-inline":  # inline join
                    into = last
                    if first.children and isinstance(first.children[-1], str) and first.children[-1].endswith("\n"):
                        first.children[-1] = first.children[-1].rstrip(_WS)
                    while isinstance(n := _last_node(into), El) and n.tag in _DESCEND:
                        into = n
                    if html.unescape(_text_content(into))[-1:] not in tuple(_WS):
                        into.children.append(" ")
                elif first.tag in ("ul", "ol") and first.tag == last.tag:  # list join
                    into = last
                    if first.children and isinstance(first.children[0], str) and not first.children[0].strip(_WS):
                        del first.children[0]
            if into is not None:
                while out.children[-1] is not last:
                    out.children.pop()
                into.children.extend(into.adopt(first.children))
                kids = kids[1:]
            out.children.extend(out.adopt(kids))
        tail.children = []
        body.children.extend(body.adopt(out.children))

    @staticmethod
    def _swap(style: str, target: El, node: El) -> None:
        parent = target.parent
        assert parent is not None, "the page root cannot be swapped"
        at = next(i for i, c in enumerate(parent.children) if c is target)
        kids = [c if isinstance(c, str) else _clone(c) for c in node.children]
        if style == "outerHTML":
            parent.children[at:at + 1] = parent.adopt([_clone(node)])
        elif style == "innerHTML":
            target.children = target.adopt(kids)
        elif style == "beforeend":
            target.children.extend(target.adopt(kids))
        elif style == "afterbegin":
            target.children[0:0] = target.adopt(kids)
        elif style == "beforebegin":
            parent.children[at:at] = parent.adopt(kids)
        elif style == "afterend":
            parent.children[at + 1:at + 1] = parent.adopt(kids)
        elif style == "delete":
            del parent.children[at]
        # "none": nothing


def _last_node(parent: El) -> El | str | None:
    """Its last child that is not whitespace-only text."""
    return next((c for c in reversed(parent.children) if not isinstance(c, str) or c.strip(_WS)), None)


def _text_content(el: El) -> str:
    """Its text as sent (character references not yet read)."""
    return "".join(c if isinstance(c, str) else _text_content(c) for c in el.children)


def _clone(el: El) -> El:
    copy = El(el.tag, el.start, dict(el.attrs))
    copy.children = copy.adopt([c if isinstance(c, str) else _clone(c) for c in el.children])
    return copy


class MessageFrames:
    """Tells which frames are about one message, by what they carry: its DOM ids (`msg-<id>`), or the alias a
    compact definition in an earlier frame gave its tail. For benchmarks that count an answer's frames and bytes."""

    def __init__(self, message_id: str):
        self.tail = f"msg-{message_id}-tail".encode()
        self.marks = [f"msg-{message_id}".encode()]

    def __call__(self, raw: bytes) -> bool:
        if b' q-def="' in raw:
            self.marks += [b' q="%s.' % m.group(1) for m in _DEFINITION.finditer(raw) if m.group(2) == self.tail]
        return any(mark in raw for mark in self.marks)


def body_of(document: str) -> str:
    """The markup inside <body> of a whole page (what a tab starts from)."""
    m = re.search(r"<body[^>]*>(.*)</body>", document, re.S)
    if not m:
        raise ValueError("no <body> in the page")
    return m.group(1)
