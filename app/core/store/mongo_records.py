"""Records, counters and leases on MongoDB, mixed into `MongoStore`: each record kind is a collection
`quanda_<kind>` of documents `{_id: key, data, updated_at}`, counters are documents of `quanda_counters`,
leases documents of `quanda_leases` `{_id: key, fence, holder, expires_at, data}`.

Records are stored as JSON text, as on SQLite, so both backends accept and return the same values;
`commit_records` runs in a multi-document transaction on a replica set or sharded cluster (then
`atomic_records` is True), else its ops run in order and stop at a rejected insert; a server that refuses a
transaction after all (IllegalOperation, OperationNotSupportedInTransaction) gets ordered units for
TRANSACTIONS_RECHECK_S, then transactions again — a passing refusal never turns them off for good. Listings are `_id`
ranges (`$gte` the prefix, `$lt` the next string): index bounds, never a scan.

Leases expire by the server's clock: expiry times are seconds since the epoch computed by the server from
`$$NOW` (MongoDB 4.2+) in pipeline updates and `$expr` filters, never by an app server's clock. mongomock
has no `$$NOW`: there (`_server_clock` false) the process's clock stands in, and the filters are plain
comparisons — the test double's limit; the `$$NOW` forms follow MongoDB's documentation (`$$NOW`,
`$toLong` of a date, aggregation-pipeline updates, `$expr`; an upsert whose filter does not match a
document with the same `_id` fails with a duplicate key error rather than replacing it).
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any

from bson import Int64

from ..errors import QuandaFencedError, QuandaStoreError
from ..validation import encode_record
from .base import Lease, QuandaStore, RecordOp, prefix_bound
from .mongo_client import translated_errors
from .mongo_migrations import LEASES

TRANSACTIONS_RECHECK_S = 60.0  # after the server refused a transaction, units run in order this long
FENCE_SEQ_KEY = 1  # the fence counter's key in quanda_counters (0 is the facts'): an int, no string key takes it
_NOW_S = {"$divide": [{"$toLong": "$$NOW"}, 1000]}  # the server's clock, in seconds since the epoch

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
        self._server_clock = False  # whether `$$NOW` is there (a real server, found out by `open()`)
        self._transactions_back_at = 0.0  # when to try transactions again after the server refused one
        self._known_collections: set[str] = set()

    def _records(self, kind: str) -> Any:
        return self._db[f"quanda_{kind}"]

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        with translated_errors(f"insert record {kind}/{key}"):
            return await self._apply_ops([("insert", kind, key, data)])

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        with translated_errors(f"put record {kind}/{key}"):
            await self._apply_ops([("put", kind, key, data)])

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        with translated_errors(f"read record {kind}/{key}"):
            doc = await self._records(kind).find_one({"_id": key})
        return _load_record(doc["data"]) if doc else None

    async def _delete_record(self, kind: str, key: str) -> bool:
        with translated_errors(f"delete record {kind}/{key}"):
            result = await self._records(kind).delete_one({"_id": key})
        return result.deleted_count == 1

    async def _list_records(self, kind: str, prefix: str, *, limit: int | None = None, last: bool = False,
                            after: str | None = None, before: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        bounds: dict[str, Any] = {"$gte": prefix}
        upper = [b for b in (prefix_bound(prefix), before) if b is not None]
        if upper:
            bounds["$lt"] = min(upper)
        if after is not None:
            bounds["$gt"] = after
        with translated_errors(f"list records {kind}"):
            cursor = self._records(kind).find({"_id": bounds}).sort("_id", -1 if last else 1)
            if limit is not None:
                cursor = cursor.limit(limit)
            docs = await cursor.to_list(length=limit)  # what was asked for: a limit, or the whole range
        found = [(doc["_id"], _load_record(doc["data"])) for doc in docs]
        if last:
            found.reverse()
        return found

    async def _apply_ops(self, ops: list[RecordOp], session: Any = None, in_transaction: bool = False) -> bool:
        """The ops one by one, stopping at an insert whose key is taken (False; inside a transaction it
        raises _Rejected, which aborts it). Driver errors pass through untranslated, so that a transaction
        sees the labels (TransientTransactionError) it retries on."""
        from pymongo.errors import DuplicateKeyError
        for verb, kind, key, data in ops:
            if verb == "check":  # a write to the lease in the unit: a taker's write conflicts with it
                checked = await self._db[LEASES].update_one({"_id": key, "fence": data["fence"]},
                                                            {"$inc": {"units": 1}}, session=session)
                if checked.matched_count != 1:
                    raise QuandaFencedError(f"the job's lease {key} is no longer held with fence {data['fence']}: "
                                            f"its writes are refused; nothing was written")
                continue
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
        if not self._transactions and self._transactions_back_at and time.monotonic() >= self._transactions_back_at:
            self._transactions = self.atomic_records = True  # refused a while ago: try them again
            self._transactions_back_at = 0.0
        if self._transactions:
            try:
                return await self._commit_in_transaction(ops)
            except QuandaStoreError as exc:
                if not _transactions_refused(exc.__cause__):
                    raise
                log.warning("MongoDB refused a transaction (%s); units run as ordered ops for %g s, then "
                            "transactions are tried again", exc, TRANSACTIONS_RECHECK_S)
                self._transactions = self.atomic_records = False  # nothing was written: run it in order
                self._transactions_back_at = time.monotonic() + TRANSACTIONS_RECHECK_S
        with translated_errors("commit a unit of records"):
            return await self._apply_ops(ops)

    async def _commit_in_transaction(self, ops: list[RecordOp]) -> bool:
        """All ops or none, in one multi-document transaction (with the client's read and write concerns:
        majority unless the URL says otherwise); `with_transaction` retries transient conflicts."""
        await self._ensure_collections({kind for _verb, kind, _key, _data in ops})
        try:
            with translated_errors("commit a unit of records"):
                async with await self._start_session() as session:
                    return await session.with_transaction(
                        lambda s: self._apply_ops(ops, session=s, in_transaction=True))
        except _Rejected:
            return False

    async def _start_session(self) -> Any:
        session = self._client.start_session()
        return await session if inspect.isawaitable(session) else session  # a coroutine on motor

    # -- leases -----------------------------------------------------------------------------------------

    def _now(self) -> Any:
        return _NOW_S if self._server_clock else time.time()

    def _expired(self) -> dict[str, Any]:
        if self._server_clock:
            return {"$expr": {"$lt": ["$expires_at", _NOW_S]}}
        return {"expires_at": {"$lt": time.time()}}

    async def _acquire_lease(self, key: str, holder: str, ttl_s: float, data: str) -> Lease | None:
        from pymongo.errors import DuplicateKeyError
        fence = await self._increment(FENCE_SEQ_KEY)
        fields = {"fence": Int64(fence), "holder": {"$literal": holder}, "data": {"$literal": data},
                  "expires_at": {"$add": [self._now(), ttl_s]}}
        with translated_errors(f"acquire lease {key}"):
            try:  # free (no document) or expired: taken; held: the upsert finds the _id taken
                await self._db[LEASES].update_one({"_id": key, **self._expired()}, [{"$set": fields}], upsert=True)
            except DuplicateKeyError:
                return None
        return Lease(key, fence, holder, ttl_s, json.loads(data))

    async def _renew_lease(self, key: str, fence: int, ttl_s: float) -> bool:
        with translated_errors(f"renew lease {key}"):
            done = await self._db[LEASES].update_one(
                {"_id": key, "fence": fence}, [{"$set": {"expires_at": {"$add": [self._now(), ttl_s]}}}])
        return done.matched_count == 1

    async def _release_lease(self, key: str, fence: int) -> bool:
        with translated_errors(f"release lease {key}"):
            done = await self._db[LEASES].delete_one({"_id": key, "fence": fence})
        return done.deleted_count == 1

    async def _leases(self, query: dict[str, Any], limit: int) -> list[Lease]:
        projection = {"fence": 1, "holder": 1, "data": 1,
                      "left": {"$subtract": ["$expires_at", self._now()]}} if self._server_clock else None
        with translated_errors("read leases"):
            docs = await self._db[LEASES].find(query, projection).sort("expires_at", 1).limit(limit).to_list(limit)
        return [Lease(doc["_id"], int(doc["fence"]), doc["holder"],
                      doc["left"] if projection else doc["expires_at"] - time.time(), json.loads(doc["data"]))
                for doc in docs]

    async def _get_lease(self, key: str) -> Lease | None:
        found = await self._leases({"_id": key}, 1)
        return found[0] if found else None

    async def _expired_leases(self, limit: int) -> list[Lease]:
        return await self._leases(self._expired(), limit)

    async def _ensure_collections(self, kinds: set[str]) -> None:
        """Create record collections up front: servers before 4.4 cannot create one inside a transaction."""
        from pymongo.errors import CollectionInvalid, OperationFailure
        for kind in sorted(kinds - self._known_collections):
            with translated_errors(f"create collection quanda_{kind}"):
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
        with translated_errors(f"bump counter {key!r}"):
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
