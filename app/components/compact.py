"""The compact form of a stream's appends, which the page expands into htmx's own markup before htmx swaps.

At 50 tokens/s every token is a frame of its own, and an htmx append such as
`<p hx-swap-oob="beforeend:#msg-<24 hex>-tail>:last-child>:last-child"> token</p>` spends ~90 bytes of wrapper
on ~20 of content. The compact form of that append is `<p q="a3.2"> token</p>`:

- `q="<alias>.<n>"` on a top-level element of a frame: append the element's children (beforeend) to the
  element the alias names, followed down `n` `>:last-child` steps (0: to that element itself);
- `q-def="<id>"` next to it defines the alias as the element with that DOM id. An `Alias` puts it on the
  first compact element it writes, and only there.

static/quanda.js (`expandCompact`) turns each such element back into `hx-swap-oob="beforeend:#<id>…"` before
htmx sees the frame, so every swap stays htmx's own; bench/page.py mirrors that expansion.

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
        if self.name is None:
            self.name = base36(next(_counter))
            return f'<{tag} q="{self.name}.{steps}" q-def="{self.element_id}">{html}</{tag}>'
        return f'<{tag} q="{self.name}.{steps}">{html}</{tag}>'
