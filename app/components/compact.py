"""The compact form of a stream's appends, which the page expands into htmx's own markup before htmx swaps.

At 50 tokens/s every token is a frame of its own, and an htmx append such as
`<p hx-swap-oob="beforeend:#msg-<24 hex>-tail>:last-child>:last-child"> token</p>` spends ~90 bytes of wrapper
on ~20 of content. The compact form of that append is `<p q="a3.2"> token</p>`:

- `q="<alias>.<n>"` on a top-level element of a frame: append the element's children (beforeend) to the
  element the alias names, followed down `n` `>:last-child` steps (0: to that element itself);
- `q="<alias>.s"` (an empty `<div>`): *settle* the aliased tail into its message's body: the page merges the
  pieces the tail holds by the rule of app/render/settle.py, appends the result to the body and empties the
  tail. The body's id is the tail's with its `-tail` suffix replaced by `-body` (`msg-<id>-tail`,
  `msg-<id>-body`: app/components/ids.py). A view sends it only when that merge gives exactly the block's
  final HTML, so a finished block the page already shows is not sent a second time;
- `q-def="<id>"` next to it defines the alias as the element with that DOM id. An `Alias` puts it on the
  first compact element it writes, and only there.

static/quanda.js (`expandCompact`) turns each such element back into `hx-swap-oob="beforeend:#<id>…"`, or
`hx-swap-oob="settle:#<id>"` (a swap style of the page's "quanda" htmx extension), before htmx sees the frame,
so every swap goes through htmx in the frame's order; bench/page.py mirrors that expansion.

Aliases come from one counter per process, in base 36: two views on one page (an answer and its thinking)
never share one. A use never comes before its definition: a view's frames go, in order, to every tab that
follows it from the view's first frame (app/follow.py), and each view defines its alias in the first compact
element it sends."""

from __future__ import annotations

import itertools

_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_counter = itertools.count(1)


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if not n:
            return out


class Alias:
    """A short name for one element id, for one view's compact appends; taken from the counter when first used."""

    __slots__ = ("element_id", "name")

    def __init__(self, element_id: str):
        self.element_id = element_id
        self.name: str | None = None

    def append(self, tag: str, steps: int, html: str) -> str:
        """`<tag>html</tag>` appended to the element `steps` last-child steps below the aliased one."""
        return f'<{tag} {self._q(steps)}>{html}</{tag}>'

    def settle(self) -> str:
        """The aliased tail's pieces, merged, moved to the end of its message's body."""
        return f'<div {self._q("s")}></div>'

    def _q(self, op) -> str:
        if self.name is None:
            self.name = base36(next(_counter))
            return f'q="{self.name}.{op}" q-def="{self.element_id}"'
        return f'q="{self.name}.{op}"'
