"""MongoDB backend, through motor or PyMongo's `AsyncMongoClient` (the same calls; one code path).

A message is one document in `quanda_messages` holding its token log as an array (seq = position).
Each write is one atomic `find_one_and_update` with a pipeline update that checks `immutable` and the
size limits in its filter, appends the token, bumps `last_seq` and extends `content`: seqs are gap-free
by construction and no transaction or replica set is needed. User text enters pipelines only inside
`$literal`, so text starting with `$` is never read as a field path. Readers fetch new tokens with a
`$slice` projection; other servers' commits are noticed by a change stream where the server offers one
(replica sets), otherwise by adaptive polling of `last_seq`.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any

from bson import ObjectId

from ..errors import QuandaError, QuandaImmutableError, QuandaLimitError, QuandaNotFoundError, QuandaStoreError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from .base import MessageRecord, QuandaStore, utf8_len

log = logging.getLogger("quanda.store.mongo")

#: a document holds at most 16 MiB; the token log and the content both live in it
MAX_LOG_BYTES = 15 << 20
_WRITE_RETRIES = 5
_PROJECT_STATE = {"tokens": 0}


def _errors() -> tuple[type[BaseException], ...]:
    from pymongo.errors import PyMongoError
    return (PyMongoError,)


def _record(doc: dict[str, Any]) -> MessageRecord:
    return MessageRecord(str(doc["_id"]), doc["role"], doc["content"], doc.get("estimate"), doc.get("warning", ""),
                         bool(doc["immutable"]), doc["last_seq"], doc["created_at"], doc["updated_at"])


def _token_entry(kind: str, text: str, estimate: str | None) -> dict[str, Any]:
    return {"k": kind, "t": text, "e": estimate}


class MongoStore(QuandaStore):
    poll_max = 0.1
    atomic_records = False

    def __init__(self, client: Any, database: str = "quanda", **limits: int):
        super().__init__(**limits)
        self._client = client
        self._db = client[database]
        self._messages = self._db["quanda_messages"]

    async def open(self) -> "MongoStore":
        try:
            await self._db.command("ping")
            await self._messages.create_index([("role", 1), ("immutable", 1)])
        except _errors() as exc:
            await self._close()
            raise QuandaStoreError(f"cannot reach MongoDB: {exc}") from exc
        return self

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except _errors() as exc:
            raise QuandaStoreError(f"MongoDB operation failed: {exc}") from exc

    # -- messages -------------------------------------------------------------------------------------

    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord:
        oid = ObjectId()
        tokens = [_token_entry(OVERRIDE, content, None)] if content else []
        size = utf8_len(content)
        await self._call(self._messages.insert_one({
            "_id": oid, "role": role, "content": content, "content_bytes": size, "log_bytes": size,
            "estimate": None, "warning": "", "immutable": False, "last_seq": len(tokens), "tokens": tokens,
            "created_at": now, "updated_at": now}))
        return MessageRecord(str(oid), role, content, None, "", False, len(tokens), now, now)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken:
        from pymongo import ReturnDocument

        oid = ObjectId(message_id)
        size = utf8_len(text) + utf8_len(estimate)
        query: dict[str, Any] = {"_id": oid, "immutable": False, "log_bytes": {"$lte": MAX_LOG_BYTES - size}}
        fields: dict[str, Any] = {
            "last_seq": {"$add": ["$last_seq", 1]},
            "log_bytes": {"$add": ["$log_bytes", size]},
            "tokens": {"$concatArrays": ["$tokens", {"$literal": [_token_entry(kind, text, estimate)]}]},
            "updated_at": time.time(),
        }
        if kind == CHUNK:
            query["content_bytes"] = {"$lte": self.max_message_bytes - utf8_len(text)}
            fields |= {"content": {"$concat": ["$content", {"$literal": text}]},
                       "content_bytes": {"$add": ["$content_bytes", utf8_len(text)]},
                       "estimate": {"$literal": estimate}}
        elif kind == OVERRIDE:
            if utf8_len(text) > self.max_message_bytes:
                raise self._over_message_limit(message_id, utf8_len(text))
            fields |= {"content": {"$literal": text}, "content_bytes": utf8_len(text), "estimate": None}
        elif kind == WARNING:
            fields["warning"] = {"$literal": text}
        else:
            fields |= {"immutable": True, "warning": "", "estimate": None}
        for _ in range(_WRITE_RETRIES):
            doc = await self._call(self._messages.find_one_and_update(
                query, [{"$set": fields}], projection={"last_seq": 1}, return_document=ReturnDocument.AFTER))
            if doc is not None:
                token = QuandaToken(kind, text, estimate, doc["last_seq"])
                self._publish(message_id, [token])
                return token
            state = await self._call(self._messages.find_one(
                {"_id": oid}, {"immutable": 1, "last_seq": 1, "content_bytes": 1, "log_bytes": 1}))
            if state is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
            if state["immutable"]:
                if kind == IMMUTABLE:
                    return QuandaToken(IMMUTABLE, "", None, state["last_seq"])
                raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
            if state["log_bytes"] + size > MAX_LOG_BYTES:
                raise QuandaLimitError(f"message {message_id}'s token log is full ({state['log_bytes']} bytes; a "
                                       f"MongoDB document holds at most 16 MiB); nothing was written")
            if kind == CHUNK and state["content_bytes"] + utf8_len(text) > self.max_message_bytes:
                raise self._over_message_limit(message_id, state["content_bytes"] + utf8_len(text))
        raise QuandaStoreError(f"write to message {message_id} kept conflicting; nothing was written")

    async def _get_message(self, message_id: str) -> MessageRecord:
        doc = await self._call(self._messages.find_one({"_id": ObjectId(message_id)}, _PROJECT_STATE))
        if doc is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return _record(doc)

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        doc = await self._call(self._messages.find_one(
            {"_id": ObjectId(message_id)}, {"last_seq": 1, "tokens": {"$slice": [gt, limit]}}))
        if doc is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return [QuandaToken(entry["k"], entry["t"], entry.get("e"), gt + i + 1)
                for i, entry in enumerate(doc.get("tokens", []))]

    async def _select_messages(self, role: str | None, immutable: bool | None, limit: int) -> list[MessageRecord]:
        query: dict[str, Any] = {}
        if role is not None:
            query["role"] = role
        if immutable is not None:
            query["immutable"] = immutable
        cursor = self._messages.find(query, _PROJECT_STATE).sort([("created_at", -1), ("_id", -1)]).limit(limit)
        return [_record(doc) for doc in await self._call(cursor.to_list(length=limit))]

    # -- live delivery --------------------------------------------------------------------------------

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        cursor = self._messages.find({"_id": {"$in": [ObjectId(m) for m in message_ids]}}, {"last_seq": 1})
        docs = await self._call(cursor.to_list(length=len(message_ids)))
        return {str(doc["_id"]): doc["last_seq"] for doc in docs}

    async def _watch(self) -> None:
        """A change stream wakes readers where the server has one; otherwise (standalone server,
        mongomock) or when it breaks, the base class polls."""
        try:
            stream = self._messages.watch([{"$match": {"operationType": "update"}}])
            if inspect.isawaitable(stream):  # PyMongo's AsyncMongoClient
                stream = await stream
            async with stream:
                for subs in list(self._subscriptions.values()):  # writes before the stream opened
                    for sub in subs:
                        sub.mark_stale()
                async for change in stream:
                    message_id = str(change["documentKey"]["_id"])
                    if message_id in self._subscriptions:
                        last_seq = change.get("updateDescription", {}).get("updatedFields", {}).get("last_seq")
                        self._remote_progress({message_id: last_seq if last_seq is not None else 1 << 62})
                    if not self._subscriptions:
                        return
        except (NotImplementedError, AttributeError, TypeError) + _errors() as exc:
            log.info("no change stream (%s); polling for other servers' writes", exc)
        await super()._watch()

    # -- records --------------------------------------------------------------------------------------

    def _records(self, kind: str) -> Any:
        return self._db[f"quanda_{kind}"]

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        from pymongo.errors import DuplicateKeyError
        try:
            await self._records(kind).insert_one({"_id": key, "data": data, "updated_at": time.time()})
        except DuplicateKeyError:
            return False
        except _errors() as exc:
            raise QuandaStoreError(f"MongoDB insert failed: {exc}") from exc
        return True

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        await self._call(self._records(kind).replace_one(
            {"_id": key}, {"_id": key, "data": data, "updated_at": time.time()}, upsert=True))

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        doc = await self._call(self._records(kind).find_one({"_id": key}))
        return doc["data"] if doc else None

    async def _delete_record(self, kind: str, key: str) -> bool:
        result = await self._call(self._records(kind).delete_one({"_id": key}))
        return result.deleted_count == 1

    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        import re
        query = {"_id": {"$regex": f"^{re.escape(prefix)}"}} if prefix else {}
        cursor = self._records(kind).find(query).sort("_id", 1)
        return [(doc["_id"], doc["data"]) for doc in await self._call(cursor.to_list(length=None))]

    async def _commit_records(self, ops: list) -> bool:
        # no multi-document transaction here: the ops run in order and a rejected insert stops the rest
        for verb, kind, key, data in ops:
            if verb == "insert":
                if not await self._insert_record(kind, key, data):
                    return False
            elif verb == "put":
                await self._put_record(kind, key, data)
            else:
                await self._delete_record(kind, key)
        return True

    async def _bump_counter(self, key: str) -> int:
        from pymongo import ReturnDocument
        doc = await self._call(self._db["quanda_counters"].find_one_and_update(
            {"_id": key}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER))
        return doc["value"]

    # -- facts ----------------------------------------------------------------------------------------

    async def _publish_fact(self, topic: str, blob: str) -> None:
        seq = await self._bump_counter("quanda_facts")
        await self._call(self._db["quanda_facts"].insert_one(
            {"_id": seq, "origin": self.origin, "topic": topic, "data": blob, "at": time.time()}))

    async def _start_facts(self) -> None:
        doc = await self._call(self._db["quanda_counters"].find_one({"_id": "quanda_facts"}))
        self._fact_cursor = doc["value"] if doc else 0

    async def _poll_facts(self) -> list[tuple[str, str]]:
        cursor = self._db["quanda_facts"].find({"_id": {"$gt": self._fact_cursor}}).sort("_id", 1)
        docs = await self._call(cursor.to_list(length=None))
        out = []
        for doc in docs:
            if doc["_id"] != self._fact_cursor + 1:
                break  # an earlier fact not yet visible: wait for it
            self._fact_cursor = doc["_id"]
            if doc["origin"] != self.origin:
                out.append((doc["topic"], doc["data"]))
        return out

    async def _close(self) -> None:
        close = self._client.close()
        if inspect.isawaitable(close):
            await close


def make_client(url: str, driver: str = "motor") -> Any:
    """A motor client (default) or PyMongo's AsyncMongoClient, chosen by QUANDA_MONGO_DRIVER."""
    options = {"serverSelectionTimeoutMS": 5000, "tz_aware": False}
    if driver == "pymongo":
        from pymongo import AsyncMongoClient
        return AsyncMongoClient(url, **options)
    if driver != "motor":
        raise QuandaError(f"QUANDA_MONGO_DRIVER must be motor or pymongo, not {driver!r}")
    from motor.motor_asyncio import AsyncIOMotorClient
    return AsyncIOMotorClient(url, **options)
