"""MongoDB backend, through PyMongo's `AsyncMongoClient` (default) or motor: the same calls, one code path.

**A message is one document** in `quanda_messages`:

    _id, role, created_at, updated_at, immutable, last_seq
    tokens          the log: [{k: kind, t: text, e: estimate (absent when None)}, ...]; seq = position + 1
    content         the content as of seq `content_seq` (a checkpoint); the chunks logged after it are its tail
    content_bytes   UTF-8 bytes of the whole current content (checkpoint + tail); `tail_bytes`: of the tail
    estimate, warning, and `estimate_bson`, `warning_bson`: the BSON bytes of their values
    bson_size       the document's exact BSON size, `len(bson.encode(doc))`, kept up to date by every write

**Every append is one atomic `find_one_and_update` with a pipeline update** (user text only inside
`$literal`): its filter checks `immutable` and the limits, its `$set` appends the entry, bumps `last_seq` and
adds the exact size change to `bson_size`. Seqs are gap-free by construction; no transaction is needed. An
append ships O(token) bytes to the oplog and to change streams: MongoDB logs a pipeline update as the
difference between the old and new document (`$v: 2`), which for an appended array entry is that entry —
but a changed string is logged whole, so `content` is not extended per chunk. It is folded forward (the
tail appended to it, guarded by `content_seq`) once the tail has at least CHECKPOINT_EVERY tokens and a
quarter of the checkpoint's bytes (so folds cost O(1) amortised per byte), and at the seal.

**Size.** The server refuses a document over 16 MiB (codes 17419 / 10334). An append is admitted only if
the document, with its tail folded into `content`, still has room for the seal's entry; so the fold and
the seal always fit and a message can always be sealed. Content is stored twice (the log and the
checkpoint), so a message made of chunks holds at most about 8 MiB of text.

**Wake-ups.** One change stream on the database, projected down to what readers need (the collection, the
document key and the new `last_seq`), matching `update` and `replace` events (servers log a pipeline
update as a replacement when that is smaller, and MongoDB 4.4 reports them so), wakes readers and fact
listeners of other processes. Where the server has none (a standalone; mongomock) the base class polls.

**Facts** are documents `{_id: seq, origin, topic, data, at}` in `quanda_facts`, seqs from a counter (the
integer key 0 of `quanda_counters`, which no public counter can take), pruned by a TTL index. A listener
reads them in seq order; a seq taken by a publisher that crashed before inserting is filled with a
tombstone after FACT_GAP_WAIT_S, by whichever listener sees it first (a late publisher then takes a new seq).

**Records** are stored as JSON text, as on SQLite, so both backends accept and return the same values;
`commit_records` runs in a multi-document transaction on a replica set or sharded cluster (then
`atomic_records` is True), else its ops run in order and stop at a rejected insert.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bson import ObjectId
from bson.errors import BSONError

from ..errors import QuandaError, QuandaImmutableError, QuandaLimitError, QuandaNotFoundError, QuandaStoreError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from ..validation import encode_record
from .base import MessageRecord, QuandaStore, RecordOp, utf8_len

log = logging.getLogger("quanda.store.mongo")

MESSAGES, FACTS, COUNTERS = "quanda_messages", "quanda_facts", "quanda_counters"
#: the largest document the server stores (BSONObjMaxUserSize): `len(bson.encode(doc))` may equal it
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
CHECKPOINT_EVERY = 64  # tokens in the tail before a fold is considered...
FOLD_RATIO = 4  # ...and done once the tail's bytes reach 1/FOLD_RATIO of the checkpoint's
#: "resulting document too large" (update), BSONObjectTooLarge, "document to upsert too large"
TOO_LARGE_CODES = frozenset({17419, 10334, 17420})
CHANGE_WAIT_MS = 1000  # a change stream's getMore waits this long for events (the watcher's idle tick)
CHANGE_RETRY_S = (0.05, 5.0)  # reopening a broken change stream: first delay, doubling up to the second
FACT_GAP_WAIT_S = 2.0  # a fact seq still missing after this, while later ones exist, is given up
FACT_GAP_FILL_MAX = 1000  # a longer hole is history pruned under a listener that fell behind: jumped
FACT_BATCH = 500
FACTS_KEPT_S = 120  # TTL of facts (a listener more than this behind has lost them anyway)
FACT_SEQ_KEY = 0  # the fact counter's key in quanda_counters: an int, so no string key can take it
_WRITE_RETRIES = 5
_UNKNOWN_PROGRESS = 1 << 62  # an event that does not say the new last_seq: assume there is news
#: our client defaults; any of them given in the URL wins (keyword arguments would override the URL)
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "w": "majority",
    "wTimeoutMS": 10000,
    "readConcernLevel": "majority",
    "retryWrites": True,
    "appName": "quanda",
}
_OPTION_ALIASES = {"wtimeoutms": {"wtimeout"}}

# -- BSON size accounting -------------------------------------------------------------------------------
# A string element costs 1 (type) + len(key) + 1 (NUL) + 4 (length) + UTF-8 bytes + 1 (NUL); null costs
# 1 + len(key) + 1. A document is 4 (length) + its elements + 1. An array is a document keyed "0", "1", ...


def _entry_bson(kind: str, text_bytes: int, estimate: str | None) -> int:
    """`len(bson.encode(entry))` of a token entry {k, t, e?}."""
    return 5 + (8 + len(kind)) + (8 + text_bytes) + (0 if estimate is None else 8 + utf8_len(estimate))


def _value_bson(text: str | None) -> int:
    """BSON bytes of a string or null value (beyond its type byte and key)."""
    return 0 if text is None else 5 + utf8_len(text)


SEAL_ENTRY_BSON = _entry_bson(IMMUTABLE, 0, None)


class _Py:
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


class _Mql:
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


def _sizes_after(x: Any, kind: str, entry_bson: int, text_bytes: int, estimate_bson: int) -> tuple[Any, Any]:
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


def _needed(x: Any, kind: str, entry_bson: int, text_bytes: int, estimate_bson: int) -> Any:
    """The room an append needs to be admitted: the document after it with its tail folded into the content,
    plus the seal's entry (keyed by the new last_seq) for anything but the seal itself."""
    size, tail = _sizes_after(x, kind, entry_bson, text_bytes, estimate_bson)
    if kind == IMMUTABLE:
        return x.add(size, tail)
    return x.add(size, tail, 2 + SEAL_ENTRY_BSON, x.digits(x.add(x.f("last_seq"), 1)))


# -- driver errors ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Driver and BSON errors inside the block become QuandaErrors, raised from the original."""
    from pymongo.errors import DocumentTooLarge, OperationFailure, PyMongoError, WriteConcernError
    try:
        yield
    except DocumentTooLarge as exc:  # the driver refused to send it (a BSONError, not a PyMongoError)
        raise QuandaLimitError(f"{what}: the document is too large for MongoDB ({exc}); nothing was written") \
            from exc
    except (BSONError, OverflowError) as exc:  # a value BSON cannot encode
        raise QuandaError(f"{what}: a value cannot be stored in MongoDB ({exc}); nothing was written") from exc
    except WriteConcernError as exc:  # e.g. wTimeoutMS: applied on the primary, not confirmed by a majority
        raise QuandaStoreError(f"{what}: MongoDB did not confirm the write on a majority of the replica set in "
                               f"time ({exc}); it may still be applied, or rolled back after a failover") from exc
    except OperationFailure as exc:
        if exc.code in TOO_LARGE_CODES:
            raise QuandaLimitError(f"{what}: the resulting document would be over MongoDB's 16 MiB limit "
                                   f"(code {exc.code}); nothing was written") from exc
        raise QuandaStoreError(f"{what}: MongoDB operation failed: {exc}") from exc
    except PyMongoError as exc:
        raise QuandaStoreError(f"{what}: MongoDB operation failed: {exc}") from exc


def _driver_errors() -> tuple[type[BaseException], ...]:
    from pymongo.errors import PyMongoError
    return (PyMongoError, BSONError)


def _change_streams_unsupported(exc: BaseException) -> bool:
    """Whether opening a change stream failed for good: a client without a usable watch() (mongomock's
    database answers `.watch` with a collection named so), or the server said no (not a replica set, no
    $changeStream stage, no privilege) rather than being out of reach."""
    from pymongo.errors import OperationFailure
    return isinstance(exc, (NotImplementedError, AttributeError, TypeError, OperationFailure))


async def _aclose_quietly(stack: contextlib.AsyncExitStack) -> None:
    try:
        await stack.aclose()
    except Exception as exc:  # noqa: BLE001 - a stream that fails to close is gone anyway
        log.debug("closing a change stream failed: %s", exc)


# -- projections and pipelines: a fresh object per call (mongomock mutates what it is handed) -------------


def _state_projection() -> dict[str, Any]:
    return {"tokens": 0}


def _after_append_projection() -> dict[str, Any]:
    return {"last_seq": 1, "content_seq": 1, "content_bytes": 1, "tail_bytes": 1}


def _tokens_projection(skip: int, count: int) -> dict[str, Any]:
    return {"last_seq": 1, "content_seq": 1, "tokens": {"$slice": [skip, count]}}


def change_pipeline() -> list[dict[str, Any]]:
    """What the watcher's change stream delivers: new `last_seq`s of messages (from `update` events that set
    it, and from `replace` events) and new facts, each projected down to a few dozen bytes."""
    return [
        {"$match": {"$or": [
            {"ns.coll": MESSAGES, "operationType": "update",
             "updateDescription.updatedFields.last_seq": {"$exists": True}},
            {"ns.coll": MESSAGES, "operationType": "replace"},
            {"ns.coll": FACTS, "operationType": "insert"},
        ]}},
        {"$project": {"operationType": 1, "ns.coll": 1, "documentKey": 1,
                      "updateDescription.updatedFields.last_seq": 1, "fullDocument.last_seq": 1}},
    ]


def event_last_seq(change: dict[str, Any]) -> int:
    """The new last_seq an `update` or `replace` event carries (or a huge number when it says none)."""
    for section, fields in (("updateDescription", "updatedFields"), ("fullDocument", None)):
        part = change.get(section) or {}
        value = (part.get(fields) or {}).get("last_seq") if fields else part.get("last_seq")
        if type(value) is int:
            return value
    return _UNKNOWN_PROGRESS


def _record(doc: dict[str, Any], content: str) -> MessageRecord:
    return MessageRecord(str(doc["_id"]), doc["role"], content, doc.get("estimate"), doc.get("warning", ""),
                         bool(doc["immutable"]), doc["last_seq"], doc["created_at"], doc["updated_at"])


def _token_entry(kind: str, text: str, estimate: str | None) -> dict[str, Any]:
    return {"k": kind, "t": text} if estimate is None else {"k": kind, "t": text, "e": estimate}


def _fold_due(kind: str, doc: dict[str, Any]) -> bool:
    pending = doc["last_seq"] - doc["content_seq"]
    if pending <= 0:
        return False
    if kind == IMMUTABLE:
        return True
    tail = doc["tail_bytes"]
    return pending >= CHECKPOINT_EVERY and FOLD_RATIO * tail >= doc["content_bytes"] - tail


def _load_record(data: Any) -> dict[str, Any]:
    return json.loads(data) if isinstance(data, str) else data  # JSON text; documents from older versions


class _Rejected(Exception):
    """An insert of a unit found its key taken: abort the transaction."""


class MongoStore(QuandaStore):
    poll_max = 0.1
    atomic_records = False  # True where the server has transactions, once `open()` has found out

    def __init__(self, client: Any, database: str = "quanda", **limits: int):
        super().__init__(**limits)
        self._client = client
        self._db = client[database]
        self._messages = self._db[MESSAGES]
        self._facts = self._db[FACTS]
        self._counters = self._db[COUNTERS]
        self.max_document_bytes = MAX_DOCUMENT_BYTES
        self._transactions = False
        self._known_collections: set[str] = set()
        self._fact_cursor = 0
        self._fact_gap: tuple[int, float] | None = None  # (missing seq, when first seen)
        self._delivered = False  # whether the current change stream has delivered anything

    async def open(self) -> "MongoStore":
        try:
            with _translated("cannot reach MongoDB"):
                await self._db.command("ping")
                hello = await self._hello()
                await self._messages.create_index([("role", 1), ("immutable", 1), ("created_at", -1), ("_id", -1)],
                                                  name="role_immutable_newest")
                await self._messages.create_index([("immutable", 1), ("created_at", -1), ("_id", -1)],
                                                  name="immutable_newest")
                await self._facts.create_index("at", name="prune", expireAfterSeconds=FACTS_KEPT_S)
        except QuandaError:
            await self._close()
            raise
        self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid") and \
            hello.get("logicalSessionTimeoutMinutes") is not None
        self.atomic_records = self._transactions
        log.info("MongoDB %s: %s", self._db.name, "replica set or sharded cluster (change streams, transactions)"
                 if self._transactions else "no transactions here (a standalone server?): polling, ordered units")
        return self

    async def _hello(self) -> dict[str, Any]:
        from pymongo.errors import OperationFailure
        try:
            return await self._db.command("hello")
        except OperationFailure:  # servers before 4.4.2
            return await self._db.command("isMaster")
        except NotImplementedError:  # mongomock
            return {}

    # -- messages -------------------------------------------------------------------------------------

    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord:
        import bson

        oid = ObjectId()
        tokens = [_token_entry(OVERRIDE, content, None)] if content else []
        doc: dict[str, Any] = {
            "_id": oid, "role": role, "created_at": now, "updated_at": now, "immutable": False,
            "last_seq": len(tokens), "content": content, "content_seq": len(tokens),
            "content_bytes": utf8_len(content), "tail_bytes": 0, "estimate": None, "estimate_bson": 0,
            "warning": "", "warning_bson": _value_bson(""), "bson_size": 0, "tokens": tokens}
        doc["bson_size"] = len(bson.encode(doc))  # once per message; appends keep it up to date
        needed = doc["bson_size"] + 2 + SEAL_ENTRY_BSON + len(str(len(tokens)))
        if needed > self.max_document_bytes:
            raise self._document_full(str(oid), needed)
        with _translated("create a message"):
            await self._messages.insert_one(doc)
        return MessageRecord(str(oid), role, content, None, "", False, len(tokens), now, now)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken:
        from pymongo import ReturnDocument

        oid = ObjectId(message_id)
        text_bytes = utf8_len(text)
        if kind == OVERRIDE and text_bytes > self.max_message_bytes:
            raise self._over_message_limit(message_id, text_bytes)
        sizes = (_entry_bson(kind, text_bytes, estimate), text_bytes, _value_bson(estimate))
        for _ in range(_WRITE_RETRIES):
            with _translated(f"append to message {message_id}"):
                doc = await self._messages.find_one_and_update(
                    self._append_filter(oid, kind, *sizes), [{"$set": self._append_fields(kind, text, estimate, *sizes)}],
                    projection=_after_append_projection(), return_document=ReturnDocument.AFTER)
            if doc is not None:
                token = QuandaToken(kind, text, estimate, doc["last_seq"])
                self._publish(message_id, [token])
                if _fold_due(kind, doc):
                    await self._fold_quietly(oid, doc["content_seq"], doc["last_seq"])
                return token
            with _translated(f"read message {message_id}"):
                state = await self._messages.find_one({"_id": oid}, _state_projection())
            if state is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
            if state["immutable"]:
                if kind == IMMUTABLE:
                    return QuandaToken(IMMUTABLE, "", None, state["last_seq"])
                raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
            if kind == CHUNK and state["content_bytes"] + text_bytes > self.max_message_bytes:
                raise self._over_message_limit(message_id, state["content_bytes"] + text_bytes)
            needed = _needed(_Py(state), kind, *sizes)
            if needed > self.max_document_bytes:
                raise self._document_full(message_id, needed)
            # the document changed between the two calls (another writer): try again
        raise QuandaStoreError(f"write to message {message_id} kept conflicting; nothing was written")

    def _append_filter(self, oid: ObjectId, kind: str, entry_bson: int, text_bytes: int,
                       estimate_bson: int) -> dict[str, Any]:
        query: dict[str, Any] = {"_id": oid, "immutable": False}
        if kind == CHUNK:
            query["content_bytes"] = {"$lte": self.max_message_bytes - text_bytes}
        if kind != IMMUTABLE:  # the seal always fits: every other append left room for it
            query["$expr"] = {"$lte": [_needed(_Mql, kind, entry_bson, text_bytes, estimate_bson),
                                       self.max_document_bytes]}
        return query

    @staticmethod
    def _append_fields(kind: str, text: str, estimate: str | None, entry_bson: int, text_bytes: int,
                       estimate_bson: int) -> dict[str, Any]:
        size, tail = _sizes_after(_Mql, kind, entry_bson, text_bytes, estimate_bson)
        fields: dict[str, Any] = {
            "last_seq": {"$add": ["$last_seq", 1]},
            "tokens": {"$concatArrays": ["$tokens", {"$literal": [_token_entry(kind, text, estimate)]}]},
            "updated_at": time.time(),
            "bson_size": size,
        }
        if kind == CHUNK:
            fields |= {"content_bytes": {"$add": ["$content_bytes", text_bytes]}, "tail_bytes": tail,
                       "estimate": {"$literal": estimate}, "estimate_bson": estimate_bson}
        elif kind == OVERRIDE:
            fields |= {"content": {"$literal": text}, "content_seq": {"$add": ["$last_seq", 1]},
                       "content_bytes": text_bytes, "tail_bytes": 0, "estimate": {"$literal": None},
                       "estimate_bson": 0}
        elif kind == WARNING:
            fields |= {"warning": {"$literal": text}, "warning_bson": 5 + text_bytes}
        else:
            fields |= {"immutable": True, "warning": "", "warning_bson": 5, "estimate": {"$literal": None},
                       "estimate_bson": 0}
        return fields

    def _document_full(self, message_id: str, needed: int) -> QuandaLimitError:
        return QuandaLimitError(
            f"message {message_id} is full: MongoDB keeps a message (its token log and its content) in one "
            f"document of at most {self.max_document_bytes} bytes, and this token would need {needed} (with "
            f"room kept for the seal); nothing was written")

    async def _fold_quietly(self, oid: ObjectId, content_seq: int, last_seq: int) -> None:
        """Move the checkpoint to `last_seq`. The token is already written: a failure only leaves the tail
        longer (readers still get the whole content) and the next append tries again."""
        try:
            await self._fold(oid, content_seq, last_seq)
        except QuandaError as exc:
            log.warning("could not fold message %s's content forward: %s", oid, exc)

    async def _fold(self, oid: ObjectId, content_seq: int, last_seq: int) -> None:
        with _translated(f"fold message {oid}"):
            doc = await self._messages.find_one({"_id": oid, "content_seq": content_seq},
                                                _tokens_projection(content_seq, last_seq - content_seq))
            if doc is None:
                return  # another writer folded it, or an override moved the checkpoint
            tail = "".join(entry["t"] for entry in doc["tokens"] if entry["k"] == CHUNK)
            size = utf8_len(tail)
            await self._messages.update_one({"_id": oid, "content_seq": content_seq}, [{"$set": {
                "content": {"$concat": ["$content", {"$literal": tail}]}, "content_seq": last_seq,
                "tail_bytes": {"$subtract": ["$tail_bytes", size]}, "bson_size": {"$add": ["$bson_size", size]}}}])

    async def _content(self, doc: dict[str, Any]) -> str:
        """The document's checkpoint plus the chunks logged after it, up to its last_seq."""
        content, start, end = doc["content"], doc["content_seq"], doc["last_seq"]
        if end <= start:
            return content
        with _translated(f"read message {doc['_id']}"):
            tail = await self._messages.find_one({"_id": doc["_id"]}, _tokens_projection(start, end - start))
        if tail is None:
            raise QuandaNotFoundError(f"no message with id {str(doc['_id'])!r}")
        return content + "".join(entry["t"] for entry in tail["tokens"] if entry["k"] == CHUNK)

    async def _get_message(self, message_id: str) -> MessageRecord:
        with _translated(f"read message {message_id}"):
            doc = await self._messages.find_one({"_id": ObjectId(message_id)}, _state_projection())
        if doc is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return _record(doc, await self._content(doc))

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        # a 16 MiB document holds fewer than 2**20 entries: larger numbers change nothing, keep them small
        skip, count = min(gt, 1 << 30), min(limit, 1 << 30)
        with _translated(f"read message {message_id}"):
            doc = await self._messages.find_one({"_id": ObjectId(message_id)}, _tokens_projection(skip, count))
        if doc is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return [QuandaToken(entry["k"], entry["t"], entry.get("e"), gt + i + 1)
                for i, entry in enumerate(doc.get("tokens", []))]

    async def _select_messages(self, role: str | None, immutable: bool | None, limit: int) -> list[MessageRecord]:
        # both filters always present (an $in over both values when unset) so an index with the sort's
        # fields after them serves the sort by merging its ranges, never an in-memory sort
        if limit <= 0:
            return []
        query: dict[str, Any] = {"immutable": {"$in": [False, True]} if immutable is None else immutable}
        if role is not None:
            query["role"] = role
        with _translated("list messages"):
            cursor = self._messages.find(query, _state_projection()).sort([("created_at", -1), ("_id", -1)])
            docs = await cursor.limit(limit).to_list(length=limit)
        return [_record(doc, await self._content(doc)) for doc in docs]

    # -- live delivery --------------------------------------------------------------------------------

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        with _translated("poll messages"):
            cursor = self._messages.find({"_id": {"$in": [ObjectId(m) for m in message_ids]}}, {"last_seq": 1})
            docs = await cursor.to_list(length=len(message_ids))
        return {str(doc["_id"]): doc["last_seq"] for doc in docs}

    async def _watch(self) -> None:
        """Follow the database's change stream while anyone subscribes or listens; reopen it when it breaks
        (polling once meanwhile, so nothing waits for it); poll instead where the server has none."""
        retry = CHANGE_RETRY_S[0]
        while True:
            if not self._watching:
                self._watcher_exiting = True  # a subscribe() from now on starts a new watcher
                return
            outcome = await self._run_change_stream()
            if outcome == "idle":
                return  # `_watcher_exiting` was set when the decision was taken, before the stream closed
            if outcome == "unsupported":
                await super()._watch()
                return
            if outcome == "followed":  # it worked for a while: reopen at once
                retry = CHANGE_RETRY_S[0]
            await self._poll_once()
            await asyncio.sleep(retry)
            retry = min(retry * 2, CHANGE_RETRY_S[1])

    async def _run_change_stream(self) -> str:
        """'idle' (nobody needs the watcher any more), 'unsupported', 'broken' (could not open or failed at
        once) or 'followed' (failed after delivering)."""
        stack = contextlib.AsyncExitStack()
        try:
            stream = self._db.watch(change_pipeline(), max_await_time_ms=CHANGE_WAIT_MS)
            if inspect.isawaitable(stream):  # PyMongo's AsyncMongoClient; motor opens it on entering
                stream = await stream
            stream = await stack.enter_async_context(stream)
        except Exception as exc:  # noqa: BLE001 - sorted below
            await _aclose_quietly(stack)
            if _change_streams_unsupported(exc):
                log.info("no change streams on this server (%s); polling for other processes' writes", exc)
                return "unsupported"
            if isinstance(exc, _driver_errors()):
                log.warning("cannot open a change stream (%s); polling until it reopens", exc)
                return "broken"
            raise
        self._delivered = False
        try:
            if await self._follow_changes(stream):
                return "idle"
            return "followed" if self._delivered else "broken"  # it ended (invalidated, closed)
        except Exception as exc:  # noqa: BLE001 - a broken stream must not leave readers without a watcher
            if isinstance(exc, (QuandaError, *_driver_errors())):
                log.warning("change stream failed (%s); reopening", exc)
            else:
                log.exception("change stream handling failed; reopening")
            return "followed" if self._delivered else "broken"
        finally:
            await _aclose_quietly(stack)

    async def _follow_changes(self, stream: Any) -> bool:
        """Deliver what the stream reports; True when nobody needs the watcher any more, False when the
        stream ended (invalidated, closed)."""
        for subs in list(self._subscriptions.values()):  # commits made before the stream opened
            for sub in subs:
                sub.mark_stale()
        await self._deliver_remote_facts()
        while True:
            if not self._watching:
                self._watcher_exiting = True  # decided here, before any await: see base._ensure_watcher
                return True
            if not stream.alive:
                return False
            change = await stream.try_next()
            if change is None:  # an idle tick: retry a fact gap that may have expired
                if self._fact_gap is not None:
                    await self._deliver_remote_facts()
                continue
            self._delivered = True
            await self._on_change(change)

    async def _on_change(self, change: dict[str, Any]) -> None:
        collection = (change.get("ns") or {}).get("coll")
        key = (change.get("documentKey") or {}).get("_id")
        if collection == FACTS:
            if type(key) is not int or key > self._fact_cursor:
                await self._deliver_remote_facts()
        elif collection == MESSAGES and key is not None and str(key) in self._subscriptions:
            self._remote_progress({str(key): event_last_seq(change)})

    async def _poll_once(self) -> None:
        try:
            if self._subscriptions:
                changed = await self._poll_last_seqs(list(self._subscriptions))
                if changed:
                    self._remote_progress(changed)
            await self._deliver_remote_facts()
        except QuandaError as exc:
            log.warning("watcher: %s", exc)

    async def _deliver_remote_facts(self) -> None:
        if self._fact_listeners:
            facts = await self._poll_facts()
            if facts:
                self._remote_facts(facts)

    # -- records --------------------------------------------------------------------------------------

    def _records(self, kind: str) -> Any:
        return self._db[f"quanda_{kind}"]

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        with _translated(f"insert record {kind}/{key}"):
            return await self._apply_ops([("insert", kind, key, data)])

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        with _translated(f"put record {kind}/{key}"):
            await self._apply_ops([("put", kind, key, data)])

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        with _translated(f"read record {kind}/{key}"):
            doc = await self._records(kind).find_one({"_id": key})
        return _load_record(doc["data"]) if doc else None

    async def _delete_record(self, kind: str, key: str) -> bool:
        with _translated(f"delete record {kind}/{key}"):
            result = await self._records(kind).delete_one({"_id": key})
        return result.deleted_count == 1

    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        import re
        query = {"_id": {"$regex": f"^{re.escape(prefix)}"}} if prefix else {}
        with _translated(f"list records {kind}"):
            docs = await self._records(kind).find(query).sort("_id", 1).to_list(length=None)
        return [(doc["_id"], _load_record(doc["data"])) for doc in docs]

    async def _apply_ops(self, ops: list[RecordOp], session: Any = None, in_transaction: bool = False) -> bool:
        """The ops one by one, stopping at an insert whose key is taken (False; inside a transaction it
        raises _Rejected, which aborts it). Driver errors pass through untranslated, so that a transaction
        sees the labels (TransientTransactionError) it retries on."""
        from pymongo.errors import DuplicateKeyError
        for verb, kind, key, data in ops:
            records = self._records(kind)
            if verb == "delete":
                await records.delete_one({"_id": key}, session=session)
                continue
            doc = {"_id": key, "data": encode_record(data or {}), "updated_at": time.time()}
            if verb == "put":
                await records.replace_one({"_id": key}, doc, upsert=True, session=session)
                continue
            try:
                await records.insert_one(doc, session=session)
            except DuplicateKeyError:
                if in_transaction:
                    raise _Rejected from None
                return False
        return True

    async def _commit_records(self, ops: list[RecordOp]) -> bool:
        if self._transactions:
            try:
                return await self._commit_in_transaction(ops)
            except QuandaStoreError as exc:
                if not _transactions_refused(exc.__cause__):
                    raise
                log.warning("MongoDB refused a transaction (%s); units run as ordered ops from now on", exc)
                self._transactions = self.atomic_records = False  # nothing was written: run it in order
        with _translated("commit a unit of records"):
            return await self._apply_ops(ops)

    async def _commit_in_transaction(self, ops: list[RecordOp]) -> bool:
        """All ops or none, in one multi-document transaction (with the client's read and write concerns:
        majority unless the URL says otherwise); `with_transaction` retries transient conflicts."""
        await self._ensure_collections({kind for _verb, kind, _key, _data in ops})
        try:
            with _translated("commit a unit of records"):
                async with await self._start_session() as session:
                    return await session.with_transaction(
                        lambda s: self._apply_ops(ops, session=s, in_transaction=True))
        except _Rejected:
            return False

    async def _start_session(self) -> Any:
        session = self._client.start_session()
        return await session if inspect.isawaitable(session) else session  # a coroutine on motor

    async def _ensure_collections(self, kinds: set[str]) -> None:
        """Create record collections up front: servers before 4.4 cannot create one inside a transaction."""
        from pymongo.errors import CollectionInvalid, OperationFailure
        for kind in sorted(kinds - self._known_collections):
            with _translated(f"create collection quanda_{kind}"):
                try:
                    await self._db.create_collection(f"quanda_{kind}")
                except CollectionInvalid:
                    pass  # it exists
                except OperationFailure as exc:
                    if exc.code != 48:  # NamespaceExists: another process created it meanwhile
                        raise
            self._known_collections.add(kind)

    async def _bump_counter(self, key: str) -> int:
        return await self._increment(key)

    async def _increment(self, key: Any) -> int:
        from pymongo import ReturnDocument
        from pymongo.errors import DuplicateKeyError
        with _translated(f"bump counter {key!r}"):
            try:
                doc = await self._counters.find_one_and_update(
                    {"_id": key}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:  # two first upserts raced (servers before 4.2 do not retry that)
                doc = await self._counters.find_one_and_update(
                    {"_id": key}, {"$inc": {"value": 1}}, return_document=ReturnDocument.AFTER)
        return doc["value"]

    # -- facts ----------------------------------------------------------------------------------------

    async def _publish_fact(self, topic: str, blob: str) -> None:
        from pymongo.errors import DuplicateKeyError
        for _ in range(_WRITE_RETRIES):
            seq = await self._increment(FACT_SEQ_KEY)
            with _translated("publish a fact"):
                try:
                    await self._facts.insert_one({"_id": seq, "origin": self.origin, "topic": topic, "data": blob,
                                                  "at": datetime.now(timezone.utc)})
                    return
                except DuplicateKeyError:  # we were so slow that a listener gave our seq up: take another
                    log.warning("fact seq %d was given up before it was written; publishing again", seq)
        raise QuandaStoreError("could not publish a fact: its seqs kept being given up")

    async def _start_facts(self) -> None:
        with _translated("read the fact counter"):
            doc = await self._counters.find_one({"_id": FACT_SEQ_KEY})
        self._fact_cursor = doc["value"] if doc else 0
        self._fact_gap = None

    async def _poll_facts(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while True:
            with _translated("read facts"):
                cursor = self._facts.find({"_id": {"$gt": self._fact_cursor}}).sort("_id", 1).limit(FACT_BATCH)
                docs = await cursor.to_list(length=FACT_BATCH)
            again = len(docs) == FACT_BATCH
            for doc in docs:
                if doc["_id"] != self._fact_cursor + 1:
                    again = await self._give_up_gap(doc["_id"])
                    break
                self._fact_cursor = doc["_id"]
                self._fact_gap = None
                if doc.get("origin") not in (self.origin, None) and not doc.get("gap"):
                    out.append((doc["topic"], doc["data"]))
            if not again:
                return out

    async def _give_up_gap(self, next_present: int) -> bool:
        """The facts from `_fact_cursor + 1` up to `next_present` are missing (publishers between taking a seq
        and inserting, or crashed there). Wait FACT_GAP_WAIT_S, then fill the hole with tombstones — the same
        for every listener: a publisher still alive then gets a duplicate key and publishes again. True when
        the hole is filled (read again)."""
        from pymongo.errors import DuplicateKeyError
        missing = self._fact_cursor + 1
        now = time.monotonic()
        if self._fact_gap is None or self._fact_gap[0] != missing:
            self._fact_gap = (missing, now)
            return False
        if now - self._fact_gap[1] < FACT_GAP_WAIT_S:
            return False
        if next_present - missing > FACT_GAP_FILL_MAX:
            log.warning("facts %d to %d are gone (pruned?); skipping them", missing, next_present - 1)
            self._fact_cursor = next_present - 1
            return True
        log.warning("fact seqs %d to %d never arrived; giving them up", missing, next_present - 1)
        for seq in range(missing, next_present):
            with _translated("give up a fact seq"):
                try:
                    await self._facts.insert_one({"_id": seq, "gap": True, "at": datetime.now(timezone.utc)})
                except DuplicateKeyError:
                    pass  # it arrived after all (or another listener filled it)
        return True

    async def _close(self) -> None:
        close = self._client.close()
        if inspect.isawaitable(close):
            await close


def _transactions_refused(cause: BaseException | None) -> bool:
    """The server takes no transactions after all (IllegalOperation 20: not a replica set member or mongos;
    OperationNotSupportedInTransaction 263)."""
    from pymongo.errors import OperationFailure
    return isinstance(cause, OperationFailure) and cause.code in (20, 263)


def client_options(url: str) -> dict[str, Any]:
    """Our defaults for the options the URL does not set (the URL wins), plus `tz_aware=False`."""
    given = {key.lower() for key, _value in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    options = {key: value for key, value in DEFAULT_CLIENT_OPTIONS.items()
               if not given & ({key.lower()} | _OPTION_ALIASES.get(key.lower(), set()))}
    return options | {"tz_aware": False}


def make_client(url: str, driver: str = "pymongo") -> Any:
    """PyMongo's AsyncMongoClient (default) or motor (end of life in May 2026), chosen by QUANDA_MONGO_DRIVER (app/config.py)."""
    options = client_options(url)
    if driver == "pymongo":
        from pymongo import AsyncMongoClient
        return AsyncMongoClient(url, **options)
    if driver != "motor":
        raise QuandaError(f"QUANDA_MONGO_DRIVER must be pymongo or motor, not {driver!r}")
    from motor.motor_asyncio import AsyncIOMotorClient
    return AsyncIOMotorClient(url, **options)
