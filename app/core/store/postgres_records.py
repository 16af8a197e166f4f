"""Records, counters and leases on PostgreSQL, mixed into `PostgresStore`: rows of `quanda_records` keyed by
(kind, key) with the data as JSON text, rows of `quanda_counters`, and `quanda_leases`, whose expiry is
decided by the database server's clock (`clock_timestamp()`), never by an app server's. A unit of record
operations is one call of `quanda_commit_records2` (`postgres_migrations.py`), all or nothing: an insert
that finds its key taken rolls the whole unit back; a deadlock or a serialization failure (which the
function's key order should make impossible between units) is retried a few times."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import QuandaFencedError, QuandaStoreError
from .base import Lease, QuandaStore
from .postgres_schema import CLAIM_TAKEN, FENCED, RETRIED

_NOW = "extract(epoch FROM clock_timestamp())"  # the database server's clock
_UNIT_TRIES = 4


def _lease(row: Any) -> Lease | None:
    return None if row is None else Lease(row[0], row[1], row[2], row[3], json.loads(row[4]))


def _prefix_bound(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with `prefix` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class PostgresRecords(QuandaStore):
    """Keyed records, units of record operations and counters for `PostgresStore`."""

    _s: str  # PostgresStore's
    _conn: Callable[[str], AbstractAsyncContextManager[Any]]

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        async with self._conn("insert_record") as conn:
            return await conn.fetchval(
                f"INSERT INTO {self._s}.quanda_records (kind, key, data, updated_at) VALUES ($1, $2, $3, $4) "
                f"ON CONFLICT DO NOTHING RETURNING true", kind, key.encode(), _dump(data), time.time()) is not None

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        async with self._conn("put_record") as conn:
            await conn.execute(
                f"INSERT INTO {self._s}.quanda_records (kind, key, data, updated_at) VALUES ($1, $2, $3, $4) "
                f"ON CONFLICT (kind, key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at",
                kind, key.encode(), _dump(data), time.time())

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        async with self._conn("get_record") as conn:
            blob = await conn.fetchval(f"SELECT data FROM {self._s}.quanda_records WHERE kind = $1 AND key = $2",
                                       kind, key.encode())
        return None if blob is None else json.loads(blob)

    async def _delete_record(self, kind: str, key: str) -> bool:
        async with self._conn("delete_record") as conn:
            return await conn.fetchval(f"DELETE FROM {self._s}.quanda_records WHERE kind = $1 AND key = $2 "
                                       f"RETURNING true", kind, key.encode()) is not None

    async def _delete_messages(self, message_ids: list[str]) -> int:
        if not message_ids:
            return 0
        async with self._conn("delete_messages") as conn:
            async with conn.transaction():
                await conn.execute(f"DELETE FROM {self._s}.quanda_tokens WHERE message_id = ANY($1::text[])",
                                   message_ids)
                done = await conn.execute(f"DELETE FROM {self._s}.quanda_messages WHERE id = ANY($1::text[])",
                                          message_ids)
        return int(done.split()[-1])

    async def _list_records(self, kind: str, prefix: str, *, limit: int | None = None, last: bool = False,
                            after: str | None = None, before: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        params: list[Any] = [kind, prefix.encode()]
        where = ["kind = $1", "key >= $2"]  # a range of the primary key (kind, key)
        for bound, op in ((_prefix_bound(prefix.encode()), "<"), (after and after.encode(), ">"),
                          (before and before.encode(), "<")):
            if bound is not None:
                params.append(bound)
                where.append(f"key {op} ${len(params)}")
        sql = (f"SELECT key, data FROM {self._s}.quanda_records WHERE {' AND '.join(where)} "
               f"ORDER BY key{' DESC' if last else ''}")
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        async with self._conn("list_records") as conn:
            rows = await conn.fetch(sql, *params)
        if last:
            rows.reverse()
        return [(key.decode("utf-8"), json.loads(blob)) for key, blob in rows]

    async def _commit_records(self, ops: list) -> bool:
        verbs, kinds, keys, datas = [], [], [], []
        lease, fence = None, None
        for verb, kind, key, data in ops:
            if verb == "check":
                lease, fence = key, data["fence"]
                continue
            verbs.append(verb)
            kinds.append(kind)
            keys.append(key.encode())
            datas.append(None if data is None else _dump(data))
        for attempt in range(_UNIT_TRIES):
            try:
                async with self._conn("commit_records") as conn:
                    await conn.execute(f"SELECT {self._s}.quanda_commit_records2($1::text[], $2::text[], $3::bytea[], "
                                       f"$4::text[], $5, $6, $7)", verbs, kinds, keys, datas, time.time(), lease, fence)
                return True
            except QuandaStoreError as exc:
                sqlstate = getattr(exc.__cause__, "sqlstate", None)
                if sqlstate == CLAIM_TAKEN:
                    return False
                if sqlstate == FENCED:
                    raise QuandaFencedError(f"the job's lease {lease} is no longer held with fence {fence}: its "
                                            f"writes are refused; nothing was written") from exc.__cause__
                if sqlstate not in RETRIED or attempt == _UNIT_TRIES - 1:
                    raise
            await asyncio.sleep(random.uniform(0.005, 0.05) * (attempt + 1))  # a deadlock: both sides back off
        raise AssertionError("unreachable")

    async def _bump_counter(self, key: str) -> int:
        async with self._conn("bump_counter") as conn:
            return await conn.fetchval(
                f"INSERT INTO {self._s}.quanda_counters AS c (key, value) VALUES ($1, 1) "
                f"ON CONFLICT (key) DO UPDATE SET value = c.value + 1 RETURNING value", key.encode())


    # -- leases -----------------------------------------------------------------------------------------

    async def _acquire_lease(self, key: str, holder: str, ttl_s: float, data: str) -> Lease | None:
        async with self._conn("acquire_lease") as conn:
            fence = await conn.fetchval(
                f"INSERT INTO {self._s}.quanda_leases AS l VALUES ($1, nextval('{self._s}.quanda_fence'), $2, "
                f"{_NOW} + $3, $4) ON CONFLICT (key) DO UPDATE SET fence = EXCLUDED.fence, holder = EXCLUDED.holder, "
                f"expires_at = EXCLUDED.expires_at, data = EXCLUDED.data WHERE l.expires_at < {_NOW} RETURNING fence",
                key, holder, ttl_s, data)
        return None if fence is None else Lease(key, fence, holder, ttl_s, json.loads(data))

    async def _renew_lease(self, key: str, fence: int, ttl_s: float) -> bool:
        async with self._conn("renew_lease") as conn:
            return await conn.fetchval(f"UPDATE {self._s}.quanda_leases SET expires_at = {_NOW} + $3 "
                                       f"WHERE key = $1 AND fence = $2 RETURNING true", key, fence, ttl_s) is not None

    async def _release_lease(self, key: str, fence: int) -> bool:
        async with self._conn("release_lease") as conn:
            return await conn.fetchval(f"DELETE FROM {self._s}.quanda_leases WHERE key = $1 AND fence = $2 "
                                       f"RETURNING true", key, fence) is not None

    async def _get_lease(self, key: str) -> Lease | None:
        async with self._conn("get_lease") as conn:
            return _lease(await conn.fetchrow(f"SELECT key, fence, holder, expires_at - {_NOW}, data "
                                              f"FROM {self._s}.quanda_leases WHERE key = $1", key))

    async def _expired_leases(self, limit: int) -> list[Lease]:
        async with self._conn("expired_leases") as conn:
            rows = await conn.fetch(f"SELECT key, fence, holder, expires_at - {_NOW}, data FROM {self._s}.quanda_leases "
                                    f"WHERE expires_at < {_NOW} ORDER BY expires_at LIMIT $1", limit)
        return [_lease(row) for row in rows]


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)
