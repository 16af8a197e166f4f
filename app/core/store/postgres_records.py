"""Records and counters on PostgreSQL, mixed into `PostgresStore`: rows of `quanda_records` keyed by
(kind, key) with the data as JSON text, and rows of `quanda_counters`. A unit of record operations is one
call of `quanda_commit_records` (`postgres_schema.py`), all or nothing: an insert that finds its key
taken rolls the whole unit back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from ..errors import QuandaStoreError
from .base import QuandaStore
from .postgres_schema import _CLAIM_TAKEN


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

    async def _list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        low = prefix.encode()
        high = _prefix_bound(low)
        sql = f"SELECT key, data FROM {self._s}.quanda_records WHERE kind = $1 AND key >= $2"
        params: list[Any] = [kind, low]
        if high is not None:
            sql += " AND key < $3"
            params.append(high)
        async with self._conn("list_records") as conn:
            rows = await conn.fetch(sql + f" ORDER BY key DESC LIMIT {int(count)}", *params)
        return [(key.decode("utf-8"), json.loads(blob)) for key, blob in reversed(rows)]

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

    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        low = prefix.encode()
        high = _prefix_bound(low)
        sql = f"SELECT key, data FROM {self._s}.quanda_records WHERE kind = $1 AND key >= $2"
        params: list[Any] = [kind, low]
        if high is not None:
            sql += " AND key < $3"
            params.append(high)
        async with self._conn("list_records") as conn:
            rows = await conn.fetch(sql + " ORDER BY key", *params)
        return [(key.decode("utf-8"), json.loads(blob)) for key, blob in rows]

    async def _commit_records(self, ops: list) -> bool:
        verbs, kinds, keys, datas = [], [], [], []
        for verb, kind, key, data in ops:
            verbs.append(verb)
            kinds.append(kind)
            keys.append(key.encode())
            datas.append(None if data is None else _dump(data))
        try:
            async with self._conn("commit_records") as conn:
                await conn.execute(f"SELECT {self._s}.quanda_commit_records($1::text[], $2::text[], $3::bytea[], "
                                   f"$4::text[], $5)", verbs, kinds, keys, datas, time.time())
        except QuandaStoreError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == _CLAIM_TAKEN:
                return False
            raise
        return True

    async def _bump_counter(self, key: str) -> int:
        async with self._conn("bump_counter") as conn:
            return await conn.fetchval(
                f"INSERT INTO {self._s}.quanda_counters AS c (key, value) VALUES ($1, 1) "
                f"ON CONFLICT (key) DO UPDATE SET value = c.value + 1 RETURNING value", key.encode())


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)
