"""Records, counters and leases on SQLite, mixed into `SQLiteStore`: a table `quanda_<kind>` per record kind
(key, JSON text, time), `quanda_counters`, and `quanda_leases`, whose expiry is decided by SQLite's clock
(the machine's: every process sharing the file reads the same one). Listings are range scans of the key."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from ..errors import QuandaFencedError
from ..validation import encode_record
from .base import Lease, prefix_bound
from .fencing import Fence
from .sqlite_schema import NOW
from .sqlite_writer import SQLiteWriter

_LEASE_COLUMNS = f"key, fence, holder, expires_at - {NOW}, data"


def check_lease(conn: sqlite3.Connection, fence: Fence) -> None:
    """QuandaFencedError unless the lease still has this fence (inside the write's transaction)."""
    row = conn.execute("SELECT fence FROM quanda_leases WHERE key = ?", (fence.lease_key,)).fetchone()
    if row is None or row[0] != fence.fence:
        raise QuandaFencedError(f"the job's lease {fence.lease_key} is no longer held with fence {fence.fence}: "
                                f"its writes are refused; nothing was written")


def _lease(row: tuple | None) -> Lease | None:
    return None if row is None else Lease(row[0], row[1], row[2], row[3], json.loads(row[4]))


class SQLiteRecords(SQLiteWriter):
    def __init__(self, path: str, **limits: Any):
        super().__init__(path, **limits)
        self._record_tables: set[str] = set()

    async def _ensure_table(self, kind: str) -> str:
        table = f"quanda_{kind}"
        if kind not in self._record_tables:
            await self._write(lambda conn: conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, data TEXT NOT NULL, "
                f"updated_at REAL NOT NULL) WITHOUT ROWID"))
            self._record_tables.add(kind)
        return table

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        table, blob = await self._ensure_table(kind), encode_record(data)
        return await self._write(lambda conn: conn.execute(
            f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?)", (key, blob, time.time())).rowcount == 1)

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        table, blob = await self._ensure_table(kind), encode_record(data)
        await self._write(lambda conn: conn.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (key, blob, time.time())))

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        table = await self._ensure_table(kind)
        row = await self._read(f"SELECT data FROM {table} WHERE key = ?", (key,), one=True)
        return json.loads(row[0]) if row else None

    async def _delete_record(self, kind: str, key: str) -> bool:
        table = await self._ensure_table(kind)
        return await self._write(lambda conn: conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,)).rowcount == 1)

    async def _list_records(self, kind: str, prefix: str, *, limit: int | None = None, last: bool = False,
                            after: str | None = None, before: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        table = await self._ensure_table(kind)
        where, params = ["key >= ?"], [prefix]  # a range of the primary key, not a scan of the table
        bound = prefix_bound(prefix)
        if bound is not None:
            where.append("key < ?")
            params.append(bound)
        if after is not None:
            where.append("key > ?")
            params.append(after)
        if before is not None:
            where.append("key < ?")
            params.append(before)
        sql = f"SELECT key, data FROM {table} WHERE {' AND '.join(where)} ORDER BY key{' DESC' if last else ''}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = await self._read(sql, params)
        if last:
            rows.reverse()
        return [(key, json.loads(blob)) for key, blob in rows]

    async def _commit_records(self, ops: list) -> bool:
        statements = []
        for verb, kind, key, data in ops:
            if verb == "check":  # the job's lease still has its fence
                statements.append((None, Fence(key, data["fence"]), None))
                continue
            table = await self._ensure_table(kind)
            if verb == "delete":
                statements.append((f"DELETE FROM {table} WHERE key = ?", (key,), None))
            else:
                sql = "INSERT OR IGNORE" if verb == "insert" else "INSERT OR REPLACE"
                statements.append((f"{sql} INTO {table} VALUES (?, ?, ?)", (key, encode_record(data), time.time()),
                                   verb == "insert"))

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("SAVEPOINT records")
            for sql, params, must_insert in statements:
                if sql is None:  # the check comes first: nothing is written yet when it refuses
                    try:
                        check_lease(conn, params)
                    except QuandaFencedError:
                        conn.execute("RELEASE records")
                        raise
                    continue
                if conn.execute(sql, params).rowcount != 1 and must_insert:
                    conn.execute("ROLLBACK TO records")
                    conn.execute("RELEASE records")
                    return False
            conn.execute("RELEASE records")
            return True

        return await self._write(op)

    async def _bump_counter(self, key: str) -> int:
        return await self._write(lambda conn: conn.execute(
            "INSERT INTO quanda_counters VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1 "
            "RETURNING value", (key,)).fetchone()[0])

    # -- leases -----------------------------------------------------------------------------------------

    async def _acquire_lease(self, key: str, holder: str, ttl_s: float, data: str) -> Lease | None:
        def op(conn: sqlite3.Connection) -> Lease | None:
            fence = conn.execute("UPDATE quanda_meta SET value = value + 1 WHERE key = 'fence' RETURNING value"
                                 ).fetchone()[0]
            taken = conn.execute(
                f"INSERT INTO quanda_leases VALUES (?1, ?2, ?3, {NOW} + ?4, ?5) ON CONFLICT(key) DO UPDATE SET "
                f"fence = excluded.fence, holder = excluded.holder, expires_at = excluded.expires_at, "
                f"data = excluded.data WHERE quanda_leases.expires_at < {NOW}",
                (key, fence, holder, ttl_s, data)).rowcount == 1
            return Lease(key, fence, holder, ttl_s, json.loads(data)) if taken else None
        return await self._write(op)

    async def _renew_lease(self, key: str, fence: int, ttl_s: float) -> bool:
        return await self._write(lambda conn: conn.execute(
            f"UPDATE quanda_leases SET expires_at = {NOW} + ? WHERE key = ? AND fence = ?",
            (ttl_s, key, fence)).rowcount == 1)

    async def _release_lease(self, key: str, fence: int) -> bool:
        return await self._write(lambda conn: conn.execute(
            "DELETE FROM quanda_leases WHERE key = ? AND fence = ?", (key, fence)).rowcount == 1)

    async def _get_lease(self, key: str) -> Lease | None:
        return _lease(await self._read(f"SELECT {_LEASE_COLUMNS} FROM quanda_leases WHERE key = ?", (key,),
                                       one=True))

    async def _expired_leases(self, limit: int) -> list[Lease]:
        rows = await self._read(f"SELECT {_LEASE_COLUMNS} FROM quanda_leases WHERE expires_at < {NOW} "
                                f"ORDER BY expires_at LIMIT ?", (limit,))
        return [_lease(row) for row in rows]
