"""Safe, incremental Markdown rendering for streamed messages, one module per concept:

    markdown.py   safe rendering (mistune 3): raw HTML escaped, a strict URL policy, decorated code blocks
    highlight.py  server-side highlighting of a finished code block (Pygments, CSS classes)
    fences.py     code fence lines, as CommonMark reads them
    closing.py    the closing suffix: what closes the structures a partial text leaves open
    stream.py     MarkdownStream: a growing message cut into finished blocks and the open block's pieces
    piece.py      one piece of the open block, rendered on its own
    append.py     append_plan: how new HTML extends old HTML by appends only
    settle.py     merge: how a finished block's pieces merge into its HTML (the page can settle it itself)

The public names are re-exported here: ``from quanda.render import MarkdownStream, render_markdown``.
"""

from .append import Append, append_plan
from .closing import closing_suffix
from .highlight import HIGHLIGHT_CAP
from .markdown import render_markdown
from .stream import BLOCK_CAP, PIECE_CAP, MarkdownStream, render_blocks, split_blocks

__all__ = [
    "BLOCK_CAP",
    "HIGHLIGHT_CAP",
    "PIECE_CAP",
    "Append",
    "MarkdownStream",
    "append_plan",
    "closing_suffix",
    "render_blocks",
    "render_markdown",
    "split_blocks",
]
