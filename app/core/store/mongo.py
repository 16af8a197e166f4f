"""MongoDB backend, through PyMongo's `AsyncMongoClient` (default) or motor: the same calls, one code path.

**A message is one document** in `quanda_messages` (its fields: `mongo_layout.py`): the token log as an
array, the content as of a checkpoint, and the document's exact BSON size.

**Every append is one atomic `find_one_and_update` with a pipeline update** (user text only inside
`$literal`): its filter checks `immutable` and the limits, its `$set` appends the entry, bumps `last_seq` and
adds the exact size change to `bson_size`. Seqs are gap-free by construction; no transaction is needed. An
append ships O(token) bytes to the oplog and to change streams: MongoDB logs a pipeline update as the
difference between the old and new document (`$v: 2`), which for an appended array entry is that entry —
but a changed string is logged whole, so `content` is not extended per chunk. It is folded forward (the
tail appended to it, guarded by `content_seq`) once the tail has at least CHECKPOINT_EVERY tokens and a
quarter of the checkpoint's bytes (so folds cost O(1) amortised per byte), and at the seal.

**Size.** An append is admitted only if the document, with its tail folded in, still has room for the
seal's entry, so a message can always be sealed (the accounting: `mongo_layout.py`).

`MongoStore` is this module's messages plus three parts mixed in, one module each: wake-ups by change
stream (`mongo_watch.py`), facts (`mongo_facts.py`), records and counters (`mongo_records.py`). The client
and the translation of driver errors are in `mongo_client.py`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from typing import Any

from bson import Int64, ObjectId

from ..errors import (QuandaError, QuandaFencedError, QuandaImmutableError, QuandaLimitError, QuandaNotFoundError,
                      QuandaStoreError)
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from .base import MessageRecord, utf8_len
from .mongo_client import WRITE_RETRIES, translated_errors
from .fencing import Fence
from .migrations import SchemaStatus
from .mongo_facts import MongoFacts
from .mongo_migrations import apply_migrations
from .mongo_layout import (
    COUNTERS,
    FACTS,
    MAX_DOCUMENT_BYTES,
    MESSAGES,
    SEAL_ENTRY_BSON,
    after_append_projection,
    entry_bson_size,
    Mql,
    bytes_needed,
    Py,
    record_of,
    sizes_after,
    state_projection,
    token_entry,
    tokens_projection,
    value_bson,
)
from .mongo_records import MongoRecords
from .mongo_watch import MongoWatcher

log = logging.getLogger("quanda.store.mongo")

CHECKPOINT_EVERY = 64  # tokens in the tail before a fold is considered...
FOLD_RATIO = 4  # ...and done once the tail's bytes reach 1/FOLD_RATIO of the checkpoint's


def _fold_due(kind: str, doc: dict[str, Any]) -> bool:
    pending = doc["last_seq"] - doc["content_seq"]
    if pending <= 0:
        return False
    if kind == IMMUTABLE:
        return True
    tail = doc["tail_bytes"]
    return pending >= CHECKPOINT_EVERY and FOLD_RATIO * tail >= doc["content_bytes"] - tail


class MongoStore(MongoWatcher, MongoFacts, MongoRecords):
    poll_max = 0.1
    atomic_records = False  # True where the server has transactions, once `open()` has found out

    def __init__(self, client: Any, database: str = "quanda", migrate: bool = True, **limits: Any):
        super().__init__(**limits)
        self.migrate = migrate  # apply pending migrations on opening (else only read where the schema stands)
        self.schema: SchemaStatus | None = None
        self._client = client
        self._db = client[database]
        self._messages = self._db[MESSAGES]
        # the messages as the primary has them now (readConcern local): why a conditional update just failed
        # there, which a majority snapshot lagging behind it may not show yet
        self._latest = self._messages
        self._facts = self._db[FACTS]
        self._counters = self._db[COUNTERS]
        self.max_document_bytes = MAX_DOCUMENT_BYTES

    async def open(self) -> "MongoStore":
        try:
            with translated_errors("cannot reach MongoDB"):
                await self._db.command("ping")
                hello = await self._hello()
                self.schema = await apply_migrations(self._db, self.origin, self.timeout_s, apply=self.migrate)
        except QuandaError:
            await self._close()
            raise
        self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid") and \
            hello.get("logicalSessionTimeoutMinutes") is not None
        self.atomic_records = self._transactions
        self._server_clock = bool(hello)  # leases on the server's clock ($$NOW); mongomock has none
        if hello:  # (mongomock-motor's with_options returns a collection that is not async)
            from pymongo import ReadPreference
            from pymongo.read_concern import ReadConcern
            self._latest = self._messages.with_options(read_concern=ReadConcern("local"),
                                                       read_preference=ReadPreference.PRIMARY)
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
        tokens = [token_entry(OVERRIDE, content, None)] if content else []
        doc: dict[str, Any] = {
            "_id": oid, "role": role, "created_at": now, "updated_at": now, "immutable": False,
            "last_seq": len(tokens), "content": content, "content_seq": len(tokens),
            "content_bytes": utf8_len(content), "tail_bytes": 0, "estimate": None, "estimate_bson": 0,
            "warning": "", "warning_bson": value_bson(""), "fence": Int64(0), "bson_size": 0, "tokens": tokens}
        doc["bson_size"] = len(bson.encode(doc))  # once per message; appends keep it up to date
        needed = doc["bson_size"] + 2 + SEAL_ENTRY_BSON + len(str(len(tokens)))
        if needed > self.max_document_bytes:
            raise self._document_full(str(oid), needed)
        with translated_errors("create a message"):
            await self._messages.insert_one(doc)
        return MessageRecord(str(oid), role, content, None, "", False, len(tokens), now, now)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None,
                      fenced_by: Fence | None) -> QuandaToken:
        from pymongo import ReturnDocument

        oid = ObjectId(message_id)
        fence = None if fenced_by is None else fenced_by.fence  # the message's fence only (one document)
        text_bytes = utf8_len(text)
        if kind == OVERRIDE and text_bytes > self.max_message_bytes:
            raise self._over_message_limit(message_id, text_bytes)
        sizes = (entry_bson_size(kind, text_bytes, estimate), text_bytes, value_bson(estimate))
        for attempt in range(WRITE_RETRIES):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.01 * attempt))  # another writer got in: let it finish
            query, fields = self._append_filter(oid, kind, *sizes), self._append_fields(kind, text, estimate, *sizes)
            if fence is not None:  # refused below a newer job's fence, and raising the message's
                query["fence"] = {"$lte": Int64(fence)}
                fields["fence"] = {"$max": ["$fence", {"$literal": Int64(fence)}]}
            with translated_errors(f"append to message {message_id}"):
                doc = await self._messages.find_one_and_update(
                    query, [{"$set": fields}], projection=after_append_projection(),
                    return_document=ReturnDocument.AFTER)
            if doc is not None:
                token = QuandaToken(kind, text, estimate, doc["last_seq"])
                self._publish(message_id, [token])
                if _fold_due(kind, doc):
                    await self._fold_quietly(oid, doc["content_seq"], doc["last_seq"])
                return token
            with translated_errors(f"read message {message_id}"):  # why it was refused: the primary's latest state,
                state = await self._latest.find_one({"_id": oid}, state_projection())  # not a lagging snapshot
            if state is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
            if fence is not None and state.get("fence", 0) > fence:
                raise QuandaFencedError(f"message {message_id} was taken over by a newer job (fence "
                                        f"{state['fence']}, this one's {fence}); nothing was written")
            if state["immutable"]:
                if kind == IMMUTABLE:
                    return QuandaToken(IMMUTABLE, "", None, state["last_seq"])
                raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
            if kind == CHUNK and state["content_bytes"] + text_bytes > self.max_message_bytes:
                raise self._over_message_limit(message_id, state["content_bytes"] + text_bytes)
            needed = bytes_needed(Py(state), kind, *sizes)
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
            query["$expr"] = {"$lte": [bytes_needed(Mql, kind, entry_bson, text_bytes, estimate_bson),
                                       self.max_document_bytes]}
        return query

    @staticmethod
    def _append_fields(kind: str, text: str, estimate: str | None, entry_bson: int, text_bytes: int,
                       estimate_bson: int) -> dict[str, Any]:
        size, tail = sizes_after(Mql, kind, entry_bson, text_bytes, estimate_bson)
        fields: dict[str, Any] = {
            "last_seq": {"$add": ["$last_seq", 1]},
            "tokens": {"$concatArrays": ["$tokens", {"$literal": [token_entry(kind, text, estimate)]}]},
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
        with translated_errors(f"fold message {oid}"):
            doc = await self._messages.find_one({"_id": oid, "content_seq": content_seq},
                                                tokens_projection(content_seq, last_seq - content_seq))
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
        with translated_errors(f"read message {doc['_id']}"):
            tail = await self._messages.find_one({"_id": doc["_id"]}, tokens_projection(start, end - start))
        if tail is None:
            raise QuandaNotFoundError(f"no message with id {str(doc['_id'])!r}")
        return content + "".join(entry["t"] for entry in tail["tokens"] if entry["k"] == CHUNK)

    async def _get_message(self, message_id: str) -> MessageRecord:
        with translated_errors(f"read message {message_id}"):
            doc = await self._messages.find_one({"_id": ObjectId(message_id)}, state_projection())
        if doc is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return record_of(doc, await self._content(doc))

    async def _delete_messages(self, message_ids: list[str]) -> int:
        if not message_ids:
            return 0
        with translated_errors("delete messages"):
            result = await self._messages.delete_many({"_id": {"$in": [ObjectId(m) for m in message_ids]}})
        return result.deleted_count

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        # a 16 MiB document holds fewer than 2**20 entries: larger numbers change nothing, keep them small
        skip, count = min(gt, 1 << 30), min(limit, 1 << 30)
        with translated_errors(f"read message {message_id}"):
            doc = await self._messages.find_one({"_id": ObjectId(message_id)}, tokens_projection(skip, count))
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
        with translated_errors("list messages"):
            cursor = self._messages.find(query, state_projection()).sort([("created_at", -1), ("_id", -1)])
            docs = await cursor.limit(limit).to_list(length=limit)
        return [record_of(doc, await self._content(doc)) for doc in docs]

    async def _close(self) -> None:
        close = self._client.close()
        if inspect.isawaitable(close):
            await close
