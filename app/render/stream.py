"""Incremental rendering of a streamed message (`MarkdownStream`): a message's text only grows while it
streams.

It is cut into *blocks* at offsets that later text can never move: the start of a line that begins in
column 0 outside a fenced code block and follows a blank line or a closed fence, or is an ATX heading
(and, once a block is longer than `BLOCK_CAP`, before a column-0 line that is not a setext underline, a
list item or a table row). A finished block is rendered once, whole, and appended to the message's body;
`render_blocks` is the concatenation of those renders, so a streamed message ends exactly as a reloaded
one. Caveats of rendering block by block: list items separated by blank lines become one list each (an
ordered one keeps its numbering through ``start``); a reference-style link whose definition is in a
later block stays literal; a run of column-0 lines longer than `BLOCK_CAP` without a blank line is cut
into several lists, quotes or paragraphs. A code block or a paragraph is never cut, however long.

The open (last) block is shown in the tail as *pieces* (`piece`) of at most about `PIECE_CAP`
characters (cut at line starts, and inside a long line after a space), each rendered on its own with the
open structures closed (`closing`), a piece that continues a code block or a table reopened with its
fence line or header. Pieces are transient: when the block finishes, its whole render goes to the body
(or, when merging the pieces a page shows gives exactly that render, the page merges them: `settle`)
and the tail starts again. Code in a piece is plain (no highlighting, label or button) so that it grows
by appends; it is highlighted once, when its block finishes. Only the last piece changes as text
arrives, so the work per token is bounded by `PIECE_CAP` whatever the length of the answer or of the
block: text is scanned once, line by line, a finished block is rendered once and the last piece once per
frame (`update`), never per token. `append_plan` (`append`) tells how the last piece's new HTML extends
the old by appends, so a view sends only what it grew by.
"""

from __future__ import annotations

import re

from .fences import _Fence, _closes, _opens
from .markdown import render_markdown
from .piece import _FENCE_CONT, _INLINE, _NORMAL, _TABLE_CONT, _Piece

#: Size (characters) beyond which a run of column-0 lines is cut into several blocks.
BLOCK_CAP = 16384
#: Soft size (characters) of a piece of the open block shown while it streams.
PIECE_CAP = 400

_HEADING_RE = re.compile(r"#{1,6}(?=[ \t]|$)")
_SETEXT_UNDERLINE_RE = re.compile(r"(?:=+|-+)[ \t]*")
_TABLE_DELIMITER_RE = re.compile(r"\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
_SOFT_CUT_RE = re.compile(r"(?<=[ \t])[^ \t\r\n]")


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
        self._done_pieces: list[list[_Piece]] = []  # and their pieces
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
        return "".join(block for block, _ in self.take_blocks())

    def take_blocks(self) -> list[tuple[str, list[_Piece]]]:
        """The blocks finished since the last call: each one's HTML (rendered now, once) and the pieces it was
        shown in while it was open (a view checks whether the page can settle them into it: `settle`)."""
        if not self._done:
            return []
        out = [(render_markdown(source), pieces) for source, pieces in zip(self._done, self._done_pieces)]
        self._done.clear()
        self._done_pieces.clear()
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
        self._done_pieces.append(self.pieces)
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
