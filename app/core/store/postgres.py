"""PostgreSQL backend (asyncpg): several app servers on one database.

`PostgresStore` is this module's lifecycle and messages (created and read here) plus four parts mixed
in, one module each: the writer task that group-commits appends (`postgres_writer.py`), the listener that
wakes readers here on other processes' writes, polling as a fallback (`postgres_listener.py`), facts
(`postgres_facts.py`), records and counters (`postgres_records.py`). The tables and the PL/pgSQL
functions are in `postgres_schema.py`; the URL, the channel and driver errors in `postgres_client.py`.

Content. Rewriting a growing `content` column on every chunk would make each commit cost O(message size),
so the row holds the content as of `content_seq` (a checkpoint) and the chunks after it are read from the
token log; a checkpoint is written every CHECKPOINT_EVERY chunks (`postgres_writer.py`), and at every
override and seal (as on SQLite). An UPDATE that leaves the TOASTed content alone copies only its pointer.

Text. User text is stored as UTF-8 in `bytea` columns (why: `postgres_schema.py`).

PgBouncer. In session mode (a server connection per client connection) nothing changes. In transaction
mode (`?pool_mode=transaction` in the URL: a server connection per transaction) two things would break,
and are avoided: asyncpg's named prepared statements (statements are not cached: `statement_cache_size=0`,
each is prepared unnamed, within its transaction), and `LISTEN`, which lives in a session — the listening
connection goes to `listen_url` instead, a direct URL of the database server; without one the store refuses
to open, saying so. Everything else the store does is one statement or one transaction at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from ..errors import QuandaError, QuandaNotFoundError, QuandaStoreError
from ..token import QuandaToken
from .base import MessageRecord, new_id
from .postgres_client import (channel_name, NoResetConnection, quote_ident, translated_errors, asyncpg, connection_broken, keep_alive,
                              pool_mode_of, split_url)
from .postgres_facts import PostgresFacts
from .postgres_listener import PostgresListener
from .postgres_records import PostgresRecords
from .migrations import SchemaStatus
from .postgres_migrations import apply_migrations
from .postgres_schema import MESSAGE_SELECT
from .postgres_writer import STOP, PostgresWriter


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def _record(row: Any) -> MessageRecord:
    content = row["content"] if row["tail"] is None else row["content"] + row["tail"]
    return MessageRecord(row["id"], row["role"].decode("utf-8"), content.decode("utf-8"), _decode(row["estimate"]),
                         row["warning"].decode("utf-8"), row["immutable"], row["last_seq"], row["created_at"],
                         row["updated_at"])


class PostgresStore(PostgresWriter, PostgresListener, PostgresFacts, PostgresRecords):
    _loop: asyncio.AbstractEventLoop  # the event loop the store was opened on

    def __init__(self, url: str, pool_size: int = 8, migrate: bool = True, listen_url: str = "", **limits: Any):
        super().__init__(**limits)
        self.pool_size = pool_size
        self.migrate = migrate  # apply pending migrations on opening (else only read where the schema stands)
        self.schema: SchemaStatus | None = None
        if asyncpg is None:
            raise QuandaError("the PostgreSQL store needs asyncpg: pip install -e '.[postgres]'")
        self.url = url
        self._dsn, self.schema_name = split_url(url)
        self.pool_mode = pool_mode_of(url)
        if self.pool_mode == "transaction" and not listen_url:
            raise QuandaError("PgBouncer in transaction mode (pool_mode=transaction) cannot carry LISTEN, which the "
                              "store needs to hear other servers' writes: set QUANDA_PG_LISTEN_URL to a direct URL "
                              "of the PostgreSQL server (or use PgBouncer's session mode)")
        self._listen_dsn = split_url(listen_url)[0] if listen_url else self._dsn
        # transaction pooling: no named prepared statements (a statement prepared on one server connection
        # would be missing on the next); asyncpg then prepares each one unnamed
        self._connect_options: dict[str, Any] = {"statement_cache_size": 0} if self.pool_mode == "transaction" else {}
        self._s = quote_ident(self.schema_name)
        self.channel = channel_name(self.schema_name)
        s = self._s
        self._sql_append = (f"SELECT statuses, vals FROM {s}.quanda_append2($1, $2, $3::text[], $4::text[], "
                            f"$5::bytea[], $6::bytea[], $7::text[], $8::bigint[], $9, $10)")
        self._sql_message = MESSAGE_SELECT.format(s=s)
        self._pool: Any = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> "PostgresStore":
        self._loop = asyncio.get_running_loop()
        timeout = self.timeout_s

        async def tune(conn: Any) -> None:
            keep_alive(conn, timeout)
        try:
            with translated_errors(f"connecting to {self._safe_url()}", timeout):
                async with asyncio.timeout(timeout):
                    self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=self.pool_size,
                                                           timeout=timeout, command_timeout=timeout, init=tune,
                                                           connection_class=NoResetConnection,
                                                           **self._connect_options)
            await self._ensure_schema()
        except BaseException:
            if self._pool is not None:
                self._pool.terminate()
            raise
        return self

    def _safe_url(self) -> str:
        parts = urlsplit(self._dsn)
        host = parts.hostname or "localhost"
        return f"postgresql://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"

    async def _ensure_schema(self) -> None:
        """Apply the pending migrations (`postgres_migrations.py`) once, under an advisory lock of the schema."""
        lock_key = int.from_bytes(hashlib.sha1(f"quanda:{self.schema_name}".encode()).digest()[:8], "big", signed=True)
        async with self._conn("migrate the schema") as conn:
            self.schema = await apply_migrations(conn, self._s, lock_key, apply=self.migrate)

    async def _close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._queue.put_nowait(STOP)  # the writes already queued are committed first
            with contextlib.suppress(Exception):
                await self._writer
        for task in (self._listener, self._fact_drainer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._writer_conn is not None:
            try:
                await asyncio.wait_for(self._writer_conn.close(), self.timeout_s)
            except (Exception, asyncio.TimeoutError):
                self._writer_conn.terminate()
            self._writer_conn = None
        if self._deadlines is not None:
            self._deadlines.close()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self.timeout_s)
            except (Exception, asyncio.TimeoutError):
                self._pool.terminate()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[Any]:
        """A pooled connection for one store call, with driver errors translated and the store's deadline on
        the whole call: waiting for a connection (or making one) and every statement. A connection that
        failed other than by an error the server sent (a timeout, a lost socket, a cancellation) is
        terminated at once: asyncpg would otherwise wait for the cancellation of its query, which it sends
        over a new connection that a silent network never lets through."""
        pool = self._pool
        if pool is None or self._closed:
            raise QuandaStoreError("the store is closed")
        timeout = self.timeout_s
        with translated_errors(what, timeout):
            async with asyncio.timeout(timeout):
                async with pool.acquire(timeout=timeout) as conn:
                    try:
                        yield conn
                    except BaseException as exc:
                        if connection_broken(exc):
                            conn.terminate()  # the pool must not hand it out again, nor wait on it
                        raise

    # -- messages -------------------------------------------------------------------------------------

    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord:
        message_id = new_id()
        last_seq = 1 if content else 0
        body = content.encode()
        async with self._conn("create_message") as conn:
            await conn.execute(
                f"WITH msg AS (INSERT INTO {self._s}.quanda_messages (id, role, content, content_bytes, content_seq, "
                f"last_seq, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $6, $6)) "
                f"INSERT INTO {self._s}.quanda_tokens (message_id, seq, kind, text) "
                f"SELECT $1, 1, 'override', $3 WHERE $5 = 1",
                message_id, role.encode(), body, len(body), last_seq, now)
        return MessageRecord(message_id, role, content, None, "", False, last_seq, now, now)

    async def _get_message(self, message_id: str) -> MessageRecord:
        async with self._conn("get_message") as conn:
            row = await conn.fetchrow(f"{self._sql_message} WHERE m.id = $1", message_id)
        if row is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        if message_id in self._subscriptions:
            # A reader takes its snapshot from this and then marks its subscription fresh: a notification
            # that came in while the query ran would be forgotten. Look at it again once the reader is done.
            self._loop.call_soon(self._recheck_remote, message_id)
        return _record(row)

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        async with self._conn("select_tokens") as conn:
            rows = await conn.fetch(f"SELECT kind, text, estimate, seq FROM {self._s}.quanda_tokens "
                                    f"WHERE message_id = $1 AND seq > $2 ORDER BY seq LIMIT $3", message_id, gt, limit)
            if not rows and await conn.fetchval(f"SELECT 1 FROM {self._s}.quanda_messages WHERE id = $1",
                                                message_id) is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return [QuandaToken(kind, text.decode("utf-8"), _decode(estimate), seq) for kind, text, estimate, seq in rows]

    async def _select_messages(self, role: str | None, immutable: bool | None, limit: int) -> list[MessageRecord]:
        where: list[str] = []
        params: list[Any] = []
        if role is not None:
            params.append(role.encode())
            where.append(f"m.role = ${len(params)}")
        if immutable is not None:
            params.append(bool(immutable))
            where.append(f"m.immutable = ${len(params)}")
        params.append(limit)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with self._conn("select_messages") as conn:
            rows = await conn.fetch(f"{self._sql_message} {clause} ORDER BY m.created_at DESC, m.id DESC "
                                    f"LIMIT ${len(params)}", *params)
        return [_record(row) for row in rows]

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        async with self._conn("poll") as conn:
            rows = await conn.fetch(f"SELECT id, last_seq FROM {self._s}.quanda_messages WHERE id = ANY($1::text[])",
                                    message_ids)
        return {mid: last_seq for mid, last_seq in rows}
