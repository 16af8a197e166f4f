"""Checks for values that enter the core from outside: seqs and text.

A seq is an int in [0, 2**63 - 1] (what every backend stores as a 64-bit integer); anything else — a
negative number, a float, Infinity, a bool, a string, an int too large for the database — is refused
with a QuandaError before it reaches a reader's cursor or a query. Text must be encodable as UTF-8:
Python strings may hold lone UTF-16 surrogates (JSON's "\\ud800" makes one), which no database driver
can store; they are refused here, once, so that no writer thread or driver ever meets one.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import QuandaError

MAX_SEQ = (1 << 63) - 1


def check_seq(value: object, what: str = "seq") -> int:
    """`value` if it is an int in [0, 2**63 - 1], else QuandaError."""
    if type(value) is not int or not 0 <= value <= MAX_SEQ:  # bool is an int subclass: refused too
        shown = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"{str(value)[:20]}…"
        raise QuandaError(f"{what} must be a whole number from 0 to {MAX_SEQ}, not {shown[:40]}")
    return value


def check_text(text: str, what: str = "text") -> str:
    """`text` if it can be stored (valid UTF-8 once encoded), else QuandaError saying where it fails."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QuandaError(f"{what} holds a character that cannot be stored (a lone UTF-16 surrogate "
                          f"{text[exc.start]!r} at position {exc.start}); nothing was written") from None
    return text


def encode_record(data: dict[str, Any]) -> str:
    """A record's JSON text; QuandaError when it is not JSON-serialisable or not valid UTF-8."""
    try:
        blob = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise QuandaError(f"record data must be JSON-serialisable: {exc}") from None
    check_text(blob, "record data")
    return blob
