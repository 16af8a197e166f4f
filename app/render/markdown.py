"""Safe Markdown rendering (mistune 3): what a message's HTML may hold.

Raw HTML is escaped, never passed through; bare ``http://`` and ``https://`` URLs become links; links keep only ``http:``, ``https:``, ``mailto:``, relative
URLs and ``#anchors`` (anything else, however it is spelled — case, entities, percent-encoding, control
characters — is dropped and only the link text stays); every link gets ``rel="noopener noreferrer"``;
images load only from this origin (a remote image becomes a plain link, so an answer cannot make the
browser call a tracker); attribute values go through mistune's attribute escaping. A code block is
highlighted on the server (`highlight`) inside ``div.md-code`` with a language label and a copy button
(``button.md-copy``, no handler: ``static/code.js`` listens for clicks).

`render_markdown` renders a whole text (or a finished block); `_render_plain` and `_render_inline`
render what a streaming piece shows (`piece`): code plain, or inline Markdown only.
"""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

import mistune
from mistune.core import BlockState
from mistune.renderers.html import HTMLRenderer
from mistune.util import escape as escape_text
from mistune.util import safe_entity

from .highlight import _highlight

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


_COPY_BUTTON = '<button type="button" class="md-copy" title="Copy the code">Copy</button>'


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


# "url": bare http:// and https:// URLs become links, through `_SafeRenderer.link` like any other
_MARKDOWN = mistune.create_markdown(escape=True, renderer=_SafeRenderer(),
                                    plugins=["table", "strikethrough", "url"])
# the open block's pieces: code shown plain while it streams, so it grows by appends
_MARKDOWN_PLAIN = mistune.create_markdown(escape=True, renderer=_SafeRenderer(decorate=False),
                                          plugins=["table", "strikethrough", "url"])


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
