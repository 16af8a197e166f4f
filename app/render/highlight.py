"""Code highlighting on the server (Pygments) for a finished code block: token classes on spans, no
inline style, the text escaped; None (the caller shows the code plain) for an unknown language, a block
longer than `HIGHLIGHT_CAP`, or a lexer that fails."""

from __future__ import annotations

import functools

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

#: Longest code block highlighted (characters); a longer one is shown plain (Pygments is ~2 µs a character).
HIGHLIGHT_CAP = 32768
_CODE_FORMATTER = HtmlFormatter(nowrap=True)  # CSS classes only: no inline style, no script


@functools.lru_cache(maxsize=64)
def _lexer(language: str) -> Lexer | None:
    try:  # keep the text exactly as written: no newline stripped or added
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except (ClassNotFound, ValueError):
        return None


def _highlight(code: str, language: str) -> str | None:
    """Pygments' HTML for `code` (its token classes on spans, the text escaped), or None."""
    lexer = _lexer(language.lower()) if language and len(code) <= HIGHLIGHT_CAP else None
    if lexer is None:
        return None
    try:
        return highlight(code, lexer, _CODE_FORMATTER)
    except Exception:  # a lexer failing on odd input: show the code plain
        return None
