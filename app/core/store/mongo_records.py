"""Records and counters on MongoDB, mixed into `MongoStore`: each record kind is a collection
`quanda_<kind>` of documents `{_id: key, data, updated_at}`, counters are documents of `quanda_counters`.

Records are stored as JSON text, as on SQLite, so both backends accept and return the same values;
`commit_records` runs in a multi-document transaction on a replica set or sharded cluster (then
`atomic_records` is True), else its ops run in order and stop at a rejected insert.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any

from ..errors import QuandaStoreError
from ..validation import encode_record
from .base import QuandaStore, RecordOp
from .mongo_client import _translated

log = logging.getLogger("quanda.store.mongo")


def _load_record(data: Any) -> dict[str, Any]:
    return json.loads(data) if isinstance(data, str) else data  # JSON text; documents from older versions


class _Rejected(Exception):
    """An insert of a unit found its key taken: abort the transaction."""


class MongoRecords(QuandaStore):
    """Keyed records, units of record operations and counters for `MongoStore` (see the module docstring)."""

    _client: Any  # MongoStore's client, database and collection
    _db: Any
    _counters: Any

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        self._transactions = False  # whether the server takes transactions (found out by `open()`)
        self._known_collections: set[str] = set()

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

    async def _list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        import re
        query = {"_id": {"$regex": f"^{re.escape(prefix)}"}} if prefix else {}
        with _translated(f"list records {kind}"):
            docs = await self._records(kind).find(query).sort("_id", -1).limit(count).to_list(length=None)
        return [(doc["_id"], _load_record(doc["data"])) for doc in reversed(docs)]

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


def _transactions_refused(cause: BaseException | None) -> bool:
    """The server takes no transactions after all (IllegalOperation 20: not a replica set member or mongos;
    OperationNotSupportedInTransaction 263)."""
    from pymongo.errors import OperationFailure
    return isinstance(cause, OperationFailure) and cause.code in (20, 263)
