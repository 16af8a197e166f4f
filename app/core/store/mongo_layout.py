"""Where the MongoDB store keeps its data, and what a message document weighs.

Collections: `quanda_messages` (a message is one document), `quanda_facts` (`mongo_facts.py`),
`quanda_counters`, and `quanda_<kind>` for each record kind (`mongo_records.py`). A message document:

    _id, role, created_at, updated_at, immutable, last_seq
    tokens          the log: [{k: kind, t: text, e: estimate (absent when None)}, ...]; seq = position + 1
    content         the content as of seq `content_seq` (a checkpoint); the chunks logged after it are its tail
    content_bytes   UTF-8 bytes of the whole current content (checkpoint + tail); `tail_bytes`: of the tail
    estimate, warning, and `estimate_bson`, `warning_bson`: the BSON bytes of their values
    bson_size       the document's exact BSON size, `len(bson.encode(doc))`, kept up to date by every write

**Size.** The server refuses a document over 16 MiB (codes 17419 / 10334). An append is admitted only if
the document, with its tail folded into `content`, still has room for the seal's entry; so the fold and
the seal always fit and a message can always be sealed. Content is stored twice (the log and the
checkpoint), so a message made of chunks holds at most about 8 MiB of text. The size after an append is
one formula (`sizes_after`, `bytes_needed`), evaluated in Python on a stored document (`Py`) or built as an
aggregation expression that guards the update on the server (`Mql`).
"""

from __future__ import annotations

from typing import Any

from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING
from .base import MessageRecord, utf8_len

MESSAGES, FACTS, COUNTERS = "quanda_messages", "quanda_facts", "quanda_counters"
#: the largest document the server stores (BSONObjMaxUserSize): `len(bson.encode(doc))` may equal it
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

# -- BSON size accounting -------------------------------------------------------------------------------
# A string element costs 1 (type) + len(key) + 1 (NUL) + 4 (length) + UTF-8 bytes + 1 (NUL); null costs
# 1 + len(key) + 1. A document is 4 (length) + its elements + 1. An array is a document keyed "0", "1", ...


def entry_bson_size(kind: str, text_bytes: int, estimate: str | None) -> int:
    """`len(bson.encode(entry))` of a token entry {k, t, e?}."""
    return 5 + (8 + len(kind)) + (8 + text_bytes) + (0 if estimate is None else 8 + utf8_len(estimate))


def value_bson(text: str | None) -> int:
    """BSON bytes of a string or null value (beyond its type byte and key)."""
    return 0 if text is None else 5 + utf8_len(text)


SEAL_ENTRY_BSON = entry_bson_size(IMMUTABLE, 0, None)


class Py:
    """Evaluates a size formula in Python, on a document's stored fields."""

    def __init__(self, doc: dict[str, Any]):
        self.doc = doc

    def f(self, name: str) -> Any:
        return self.doc[name]

    @staticmethod
    def add(*terms: Any) -> Any:
        return sum(terms)

    @staticmethod
    def sub(a: Any, b: Any) -> Any:
        return a - b

    @staticmethod
    def digits(n: Any) -> Any:
        return len(str(n))


class Mql:
    """Builds the same formula as a MongoDB aggregation expression (only $add, $subtract, $cond, $gte:
    what every server since 4.2, and mongomock, evaluate)."""

    @staticmethod
    def f(name: str) -> Any:
        return f"${name}"

    @staticmethod
    def add(*terms: Any) -> Any:
        return {"$add": list(terms)}

    @staticmethod
    def sub(a: Any, b: Any) -> Any:
        return {"$subtract": [a, b]}

    @staticmethod
    def digits(n: Any) -> Any:
        return {"$add": [1, *({"$cond": [{"$gte": [n, 10 ** k]}, 1, 0]} for k in range(1, 10))]}


def sizes_after(x: Any, kind: str, entry_bson: int, text_bytes: int, estimate_bson: int) -> tuple[Any, Any]:
    """(bson_size, tail_bytes) of a message document after appending a `kind` token: the entry with its key
    (the old last_seq's digits), plus what the token changes in content, estimate and warning."""
    grown = x.add(x.f("bson_size"), 2 + entry_bson, x.digits(x.f("last_seq")))
    tail = x.f("tail_bytes")
    if kind == CHUNK:
        return x.add(grown, estimate_bson, x.sub(0, x.f("estimate_bson"))), x.add(tail, text_bytes)
    if kind == OVERRIDE:  # content := text, estimate := null; the tail is empty again
        checkpoint = x.sub(x.f("content_bytes"), tail)
        return x.sub(x.add(grown, text_bytes), x.add(checkpoint, x.f("estimate_bson"))), 0
    if kind == WARNING:
        return x.sub(x.add(grown, 5 + text_bytes), x.f("warning_bson")), tail
    return x.sub(x.add(grown, 5), x.add(x.f("warning_bson"), x.f("estimate_bson"))), tail  # seal: warning ""


def bytes_needed(x: Any, kind: str, entry_bson: int, text_bytes: int, estimate_bson: int) -> Any:
    """The room an append needs to be admitted: the document after it with its tail folded into the content,
    plus the seal's entry (keyed by the new last_seq) for anything but the seal itself."""
    size, tail = sizes_after(x, kind, entry_bson, text_bytes, estimate_bson)
    if kind == IMMUTABLE:
        return x.add(size, tail)
    return x.add(size, tail, 2 + SEAL_ENTRY_BSON, x.digits(x.add(x.f("last_seq"), 1)))


# -- projections: a fresh object per call (mongomock mutates what it is handed) -------------------------


def state_projection() -> dict[str, Any]:
    return {"tokens": 0}


def after_append_projection() -> dict[str, Any]:
    return {"last_seq": 1, "content_seq": 1, "content_bytes": 1, "tail_bytes": 1}


def tokens_projection(skip: int, count: int) -> dict[str, Any]:
    return {"last_seq": 1, "content_seq": 1, "tokens": {"$slice": [skip, count]}}


# -- documents ------------------------------------------------------------------------------------------


def record_of(doc: dict[str, Any], content: str) -> MessageRecord:
    return MessageRecord(str(doc["_id"]), doc["role"], content, doc.get("estimate"), doc.get("warning", ""),
                         bool(doc["immutable"]), doc["last_seq"], doc["created_at"], doc["updated_at"])


def token_entry(kind: str, text: str, estimate: str | None) -> dict[str, Any]:
    return {"k": kind, "t": text} if estimate is None else {"k": kind, "t": text, "e": estimate}
