"""The chat's stream view: one message streamed into its bubble, frame by frame (app/follow.py drives it; the
DOM it keeps up to date is drawn by app/components/chat.py's `MessageBody`)."""

from __future__ import annotations

from fastcore.xml import Safe
from fasthtml.common import Div, NotStr

from quanda.components import ids
from quanda.components.chat import PIECE, Estimate, estimate_text
from quanda.components.compact import Alias
from quanda.components.stream import StreamMarker
from quanda.core import QuandaToken
from quanda.render import MarkdownStream, append_plan
from quanda.render.settle import merge


class ChatView:
    """Streams one message into its bubble (see `MessageBody` for the DOM it keeps).

    `feed` reads a token's text (and renders a block its text finished); `flush` (once per frame) renders
    the open block's pieces that changed and returns the OOB fragments, in this order: the tail (replaced when a block finished,
    else only what its last piece grew by, appended to the element that grew; the last piece is
    replaced only when its earlier markup changed; a finished block whose pieces the page shows is
    settled from them into the body when it can be, `_settle`), then the body (finished blocks
    appended, each once), the estimate, the warning, and the seq marker when the message ends or gets a warning.
    The view starts from a snapshot: a page whose marker already holds the snapshot's seq gets
    nothing for it; anything else (a reconnect after changes, an override such as Retry) gets the
    body and tail replaced, never appended to. It holds the open block's text and the HTML of its
    last piece, and a finished block's HTML only until the next frame."""

    snapshot = True

    def __init__(self, message_id: str, page_seq: int = 0):
        self.message_id = message_id
        self.page_seq = page_seq
        self.stream = MarkdownStream()
        self.estimate: str | None = None
        self.replace = False
        self.seq = 0
        self.warning: str | None = None
        self.immutable = False
        self.dirty = False
        self.started = False
        # what the page shows: the open block's index, how many of its pieces, the last one's HTML, the estimate
        self.page_block, self.page_pieces, self.page_last, self.page_estimate = 0, 0, "", ""
        self._finished: list = []  # blocks finished (and rendered) since the last frame
        self._tail = Alias(ids.msg_tail_id(message_id))
        self._last_piece = f"#{ids.msg_tail_id(message_id)}>:last-child"

    def feed(self, token: QuandaToken) -> None:
        self.seq = max(self.seq, token.seq)
        if token.kind == "override":
            first, self.started = not self.started, True
            self.stream, self._finished = MarkdownStream(), []
            self.stream.append(token.text)
            self.estimate = token.estimate
            if first and token.seq == self.page_seq:  # the page already shows exactly this snapshot
                self.stream.update()
                self.stream.take_finished()
                self._shown(self.estimate)
                return
            self.replace = True
        elif token.kind == "chunk":
            self.started = True
            self.stream.append(token.text)
            self.estimate = token.estimate
            # a block is rendered as soon as its text is complete, between frames: highlighting a code block
            # (~3 ms) does not hold back the frame that carries it
            self.stream.update()
            self._finished += self.stream.take_blocks()
        elif token.kind == "warning":
            self.warning = token.text
        elif token.kind == "immutable":
            self.immutable, self.estimate = True, None
            if token.seq == self.page_seq and not self.dirty:
                return  # the page already shows the sealed message (a tab following it again): nothing to send
        self.dirty = True

    def _shown(self, estimate: str | None) -> None:
        stream = self.stream
        self.page_block, self.page_pieces = stream.blocks, len(stream.pieces)
        self.page_last = stream.pieces[-1].html() if stream.pieces else ""
        self.page_estimate = estimate_text(estimate)

    def flush(self) -> list:
        if not self.dirty:
            return []
        mid, stream, fragments = self.message_id, self.stream, []
        if self.immutable:
            stream.finish()
        else:
            stream.update()
        blocks, self._finished = self._finished + stream.take_blocks(), []
        settled = self._settle(blocks[0]) if blocks and not self.replace and self.page_pieces else []
        if settled:
            fragments.extend(settled)
            del blocks[0]
        finished = "".join(block for block, _ in blocks)
        # the tail first: text moving from the tail to the body is never on the page twice, even for a moment
        if self.replace or (stream.blocks != self.page_block and not settled):
            fragments.append(Div(NotStr(stream.tail_html(PIECE)), id=ids.msg_tail_id(mid), cls="md tail",
                                 hx_swap_oob="true"))
        else:
            fragments.extend(self._tail_changes(stream.pieces))
        if self.replace:
            fragments.append(Div(NotStr(finished), id=ids.msg_body_id(mid), cls="md", hx_swap_oob="true"))
        elif finished:
            fragments.append(Div(NotStr(finished), hx_swap_oob=f"beforeend:#{ids.msg_body_id(mid)}"))
        if self.replace or estimate_text(self.estimate) != self.page_estimate:
            fragments.append(Estimate(mid, self.estimate, oob=True))
        if self.warning is not None:
            fragments.append(Div(self.warning, id=ids.msg_warning_id(mid), cls="msg-warning", hx_swap_oob="true"))
        if self.immutable or self.warning is not None:
            fragments.append(StreamMarker(mid, self.seq, oob=True, ended=self.immutable))
        self._shown(self.estimate)
        self.replace, self.warning, self.dirty = False, None, False
        return fragments

    def _settle(self, block: tuple[str, list]) -> list:
        """The first block finished since the last frame is the one the page shows pieces of: if merging its
        final pieces by the settle rule (app/render/settle.py) gives exactly its HTML, bring the tail up to
        those pieces (usually nothing, or a few appends) and tell the page to settle them into the body
        instead of sending the block again. Nothing (the block is sent whole) if the rule does not fit."""
        html, pieces = block
        if merge([piece.html() for piece in pieces]) != html:
            return []
        fragments = self._tail_changes(pieces)
        fragments.append(Safe(self._tail.settle()))
        self.page_pieces, self.page_last = 0, ""
        return fragments

    def _tail_changes(self, pieces: list) -> list:
        """The tail on the page shows (the first) pieces of `pieces`: send what they grew by. These go out
        once per frame: built as text (FT objects and ft_hx cost several times more), appends in the compact
        form (app/components/compact.py: a few bytes of wrapper instead of ~90), the last piece's replace as
        htmx markup (`>` is plain text inside a quoted attribute)."""
        fragments = []
        if self.page_pieces:
            new = pieces[self.page_pieces - 1].html()
            plan = append_plan(self.page_last, new)
            if plan is None:
                fragments.append(Safe(f'<div class="md-piece" hx-swap-oob="outerHTML:{self._last_piece}">{new}</div>'))
            else:
                fragments.extend(Safe(self._tail.append(step.tag or "div", step.depth + 1, step.html))
                                 for step in plan)
        if len(pieces) > self.page_pieces:
            added = "".join(PIECE.format(piece.html()) for piece in pieces[self.page_pieces:])
            fragments.append(Safe(self._tail.append("div", 0, added)))
        return fragments
