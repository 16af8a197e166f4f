"""Checks for values that enter the core from outside: seqs and text.

A seq is an int in [0, 2**63 - 1] (what every backend stores as a 64-bit integer); anything else — a
negative number, a float, Infinity, a bool, a string, an int too large for the database — is refused
with a QuandaError before it reaches a reader's cursor or a query. Text must be encodable as UTF-8:
Python strings may hold lone UTF-16 surrogates (JSON's "\\ud800" makes one), which no database driver
can store; they are refused here, once, so that no writer thread or driver ever meets one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import QuandaError, QuandaNotFoundError

MAX_SEQ = (1 << 63) - 1
_ID_RE = re.compile(r"[0-9a-fA-F]{24}")
_RECORD_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


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


def check_id(message_id: object) -> str:
    """The canonical form of an id, or QuandaNotFoundError for anything that is not one."""
    if not isinstance(message_id, str) or not _ID_RE.fullmatch(message_id):
        shown = repr(message_id)
        shown = shown if len(shown) <= 42 else shown[:40] + "…"  # a client's error never echoes a long input
        raise QuandaNotFoundError(f"no message with id {shown} (ids are 24 hex characters)")
    return message_id.lower()


#: names the stores use for themselves (SQLite and MongoDB keep records of kind K in `quanda_<K>`)
RESERVED_KINDS = frozenset({"messages", "tokens", "facts", "counters", "records", "meta", "leases", "content"})


def check_record_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _RECORD_KIND_RE.fullmatch(kind):
        raise QuandaError(f"invalid record kind {kind!r}: use lowercase letters, digits and _")
    if kind in RESERVED_KINDS:
        raise QuandaError(f"record kind {kind!r} is reserved for the store itself")
    return kind


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 200:
        raise QuandaError(f"invalid record key {str(key)[:60]!r}: a non-empty string of at most 200 characters")
    return check_text(key, "record key")


def check_data(data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"record data must be a dict, not {type(data).__name__}")
    encode_record(data)  # JSON-serialisable and valid UTF-8 throughout, or QuandaError
    return data
