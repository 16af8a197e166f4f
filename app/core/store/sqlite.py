"""SQLite backend: the embedded default.

Writes are group-committed: every write asked for during one turn of the event loop joins one
`BEGIN IMMEDIATE` transaction, committed at the end of that turn *on the event loop itself* when SQLite's
write lock is free at once (that connection has no busy timeout): in WAL mode with `synchronous=NORMAL` a
commit is a write into the page cache, microseconds, less than handing the batch to a thread and back would
cost (two wake-ups and two hand-overs of the GIL). When another connection holds the lock (another process),
the batch goes to the writer thread, which waits for the lock (busy timeout), and later batches follow it
there until it is idle, so writes commit in the order they were asked for. One operation that fails fails
alone (the others are committed without it); a writer — the thread or the loop's connection — that breaks
fails the writes it holds at once and is started afresh. Several processes may share the file;
`BEGIN IMMEDIATE` serialises them, so seqs are assigned and committed in order and a reader never sees a
later token without the earlier. Reads run on the event loop's own connection: a WAL read of one row takes
microseconds. Other processes' commits are noticed by polling `PRAGMA data_version`.

A chunk is one insert, one page of the database written, like the cheapest commit SQLite has: the process
remembers each message's state as it last wrote it (`_known`) and inserts the token with the next seq; if
anyone wrote the message since (another process, a seal), that seq is taken (every change is a token) and the
insert fails, so the state is read again from the row and the chunks after it. The message row is the state
as of its `last_seq` (its sync point): synced by every token that is not a chunk, every CHECKPOINT_EVERY
chunks and at least every SYNC_EVERY_S seconds while chunks come; reading a message replays the chunks after
it. The content is kept as of `content_seq` (a checkpoint) in a row of its own (`quanda_content`, so that
syncing the message row never copies it; rows written before that table keep it in the message row), with the
chunks after it read from the token log; it is checkpointed at every override and seal, and at seqs that are
multiples of a power of two growing with the message (`_checkpoint_due`), so copying it costs O(1) per chunk
amortised and a reader never has more than CHECKPOINT_MAX chunks to add.

The schema, its statements and the row helpers are in `sqlite_schema.py`; the write path (group commit, the
writer and checkpointer threads) in `sqlite_writer.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from typing import Any

from ..errors import QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from ..validation import encode_record
from .base import MessageRecord, new_id, utf8_len
from .sqlite_schema import (_INSERT_TOKEN, _LAST_SEQS, _MESSAGE_COLUMNS, _MESSAGES, _SET_CONTENT, _SYNC,
                            _SYNC_BY_KIND, CHECKPOINT_EVERY, FACTS_KEPT_S, KNOWN_MAX, PRUNE_EVERY,
                            SYNC_EVERY_S, _checkpoint, _checkpoint_due, _connect, _record, _state)
from .sqlite_writer import _STOP, SQLiteWriter

log = logging.getLogger("quanda.store.sqlite")


class SQLiteStore(SQLiteWriter):
    def __init__(self, path: str, **limits: int):
        super().__init__(path, **limits)
        self._reader: sqlite3.Connection | None = None
        self._record_tables: set[str] = set()
        self._data_version: int | None = None
        self._fact_cursor = 0
        self._facts_version: int | None = None
        self._published = 0

    async def open(self) -> "SQLiteStore":
        self._loop = asyncio.get_running_loop()
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            writer = await asyncio.to_thread(self._open_writer)
            self._reader = _connect(self.path)
            self._inline = self._open_inline()
        except (OSError, sqlite3.Error) as exc:
            raise QuandaStoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._start_writing(writer)
        return self

    # -- messages -------------------------------------------------------------------------------------

    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord:
        message_id = new_id()
        last_seq = 1 if content else 0

        def op(conn: sqlite3.Connection) -> MessageRecord:
            conn.execute("INSERT INTO quanda_messages (id, role, content, content_bytes, content_seq, last_seq, "
                         "created_at, updated_at) VALUES (?, ?, '', ?, ?, ?, ?, ?)",
                         (message_id, role, utf8_len(content), last_seq, last_seq, now, now))
            if content:
                conn.execute("INSERT INTO quanda_tokens VALUES (?, 1, ?, ?, NULL)", (message_id, OVERRIDE, content))
                conn.execute(_SET_CONTENT, (message_id, 1, content))
            return MessageRecord(message_id, role, content, None, "", False, last_seq, now, now)

        return await self._write(op)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken:
        max_bytes, known = self.max_message_bytes, self._known
        size = utf8_len(text) if kind in (CHUNK, OVERRIDE) else 0

        def op(conn: sqlite3.Connection) -> QuandaToken:
            now = time.time()
            mine = known.get(message_id) if kind == CHUNK else None
            state = None
            if mine is not None and mine.content_bytes + size <= max_bytes:
                # the next seq after this process's last write: taken already if anyone wrote the message since
                # (every change, a seal too, is a token with the next seq), else that one insert is the append
                try:
                    conn.execute(_INSERT_TOKEN, (message_id, mine.last_seq + 1, CHUNK, text, estimate))
                    state = mine
                except sqlite3.IntegrityError:
                    del known[message_id]
            if state is None:
                state, immutable = _state(conn, message_id)
                if immutable:
                    if kind == IMMUTABLE:
                        return QuandaToken(IMMUTABLE, "", None, state.last_seq)
                    raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
                grown = size + (state.content_bytes if kind == CHUNK else 0)
                if grown > max_bytes:
                    raise self._over_message_limit(message_id, grown)
                conn.execute(_INSERT_TOKEN, (message_id, state.last_seq + 1, kind, text, estimate))
            seq = state.last_seq + 1
            content_bytes = size if kind == OVERRIDE else state.content_bytes + size
            if kind == CHUNK:
                sync = seq & (CHECKPOINT_EVERY - 1) == 0  # a checkpoint's seq is a multiple of this
                if sync and _checkpoint_due(seq):
                    _checkpoint(conn, message_id, seq)
                if sync or now - state.synced_at >= SYNC_EVERY_S:
                    conn.execute(_SYNC, (message_id, seq, content_bytes, estimate, now))
                    state.synced_at = now
                state.last_seq, state.content_bytes, state.estimate = seq, content_bytes, estimate
                if state is not mine:
                    if len(known) >= KNOWN_MAX:
                        known.clear()
                    known[message_id] = state
                return QuandaToken(kind, text, estimate, seq)
            # any other token syncs the row: after the sync point there are only chunks
            conn.execute(_SYNC_BY_KIND[kind], (message_id, seq, content_bytes, state.estimate, now, text)[
                :6 if kind == WARNING else 5])
            if kind == OVERRIDE:
                conn.execute(_SET_CONTENT, (message_id, seq, text))
            elif kind == IMMUTABLE:
                _checkpoint(conn, message_id, seq)
            known.pop(message_id, None)
            return QuandaToken(kind, text, estimate, seq)

        return await self._write(op, publish=message_id)

    async def _get_message(self, message_id: str) -> MessageRecord:
        records = self._read_records("WHERE id = ?", (message_id,))
        if not records:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return records[0]

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        rows = self._read("SELECT kind, text, estimate, seq FROM quanda_tokens WHERE message_id = ? AND seq > ? "
                          "ORDER BY seq LIMIT ?", (message_id, gt, limit))
        if not rows and self._read("SELECT 1 FROM quanda_messages WHERE id = ?", (message_id,), one=True) is None:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return [QuandaToken(*row) for row in rows]

    async def _select_messages(self, role: str | None, immutable: bool | None, limit: int) -> list[MessageRecord]:
        where, params = [], []
        if role is not None:
            where.append("role = ?")
            params.append(role)
        if immutable is not None:
            where.append("immutable = ?")
            params.append(int(immutable))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return self._read_records(f"{clause} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit))

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        version = self._read("PRAGMA data_version", (), one=True)[0]
        if version == self._data_version:
            return None
        self._data_version = version
        # the log's last seq (a row is synced only now and then while chunks come)
        return {mid: seq for mid, seq in self._read(_LAST_SEQS, (json.dumps(message_ids),)) if seq is not None}

    def _read_records(self, where: str, params: tuple) -> list[MessageRecord]:
        """Rows and their not yet checkpointed chunks, read in one snapshot (a WAL read transaction)."""
        reader = self._reader
        if reader is None or self._closed:
            raise QuandaStoreError("the store is closed")
        try:
            reader.execute("BEGIN")
            try:
                rows = reader.execute(f"SELECT {_MESSAGE_COLUMNS} FROM {_MESSAGES} {where}", params).fetchall()
                return [_record(reader, row) for row in rows]
            finally:
                reader.execute("COMMIT")
        except sqlite3.Error as exc:
            raise QuandaStoreError(f"SQLite read failed: {exc}") from exc

    def _read(self, sql: str, params: tuple | list, one: bool = False) -> Any:
        if self._reader is None or self._closed:
            raise QuandaStoreError("the store is closed")
        try:
            cursor = self._reader.execute(sql, params)
            return cursor.fetchone() if one else cursor.fetchall()
        except sqlite3.Error as exc:
            raise QuandaStoreError(f"SQLite read failed: {exc}") from exc

    # -- records --------------------------------------------------------------------------------------

    async def _ensure_table(self, kind: str) -> str:
        table = f"quanda_{kind}"
        if kind not in self._record_tables:
            await self._write(lambda conn: conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, data TEXT NOT NULL, "
                f"updated_at REAL NOT NULL) WITHOUT ROWID"))
            self._record_tables.add(kind)
        return table

    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        table, blob = await self._ensure_table(kind), _dump(data)
        return await self._write(lambda conn: conn.execute(
            f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?)", (key, blob, time.time())).rowcount == 1)

    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        table, blob = await self._ensure_table(kind), _dump(data)
        await self._write(lambda conn: conn.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?)", (key, blob, time.time())))

    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        table = await self._ensure_table(kind)
        row = self._read(f"SELECT data FROM {table} WHERE key = ?", (key,), one=True)
        return json.loads(row[0]) if row else None

    async def _delete_record(self, kind: str, key: str) -> bool:
        table = await self._ensure_table(kind)
        return await self._write(lambda conn: conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,)).rowcount == 1)

    async def _list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        table = await self._ensure_table(kind)
        rows = self._read(f"SELECT key, data FROM {table} WHERE substr(key, 1, ?) = ? ORDER BY key DESC LIMIT ?",
                          (len(prefix), prefix, count))
        return [(key, json.loads(blob)) for key, blob in reversed(rows)]

    async def _delete_messages(self, message_ids: list[str]) -> int:
        def delete(conn) -> int:
            marks = ",".join("?" * len(message_ids))
            for table, column in (("quanda_tokens", "message_id"), ("quanda_content", "message_id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", message_ids)
            for message_id in message_ids:
                self._known.pop(message_id, None)
            return conn.execute(f"DELETE FROM quanda_messages WHERE id IN ({marks})", message_ids).rowcount
        return await self._write(delete) if message_ids else 0

    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        table = await self._ensure_table(kind)
        rows = self._read(f"SELECT key, data FROM {table} WHERE substr(key, 1, ?) = ? ORDER BY key",
                          (len(prefix), prefix))
        return [(key, json.loads(blob)) for key, blob in rows]

    async def _commit_records(self, ops: list) -> bool:
        statements = []
        for verb, kind, key, data in ops:
            table = await self._ensure_table(kind)
            if verb == "delete":
                statements.append((f"DELETE FROM {table} WHERE key = ?", (key,), False))
            else:
                sql = "INSERT OR IGNORE" if verb == "insert" else "INSERT OR REPLACE"
                statements.append((f"{sql} INTO {table} VALUES (?, ?, ?)", (key, _dump(data), time.time()),
                                   verb == "insert"))

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute("SAVEPOINT records")
            for sql, params, must_insert in statements:
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

    # -- facts ----------------------------------------------------------------------------------------

    async def _publish_fact(self, topic: str, blob: str) -> None:
        origin = self.origin
        self._published += 1
        prune = self._published % PRUNE_EVERY == 0

        def op(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute("INSERT INTO quanda_facts (origin, topic, data, at) VALUES (?, ?, ?, ?)",
                         (origin, topic, blob, now))
            if prune:
                conn.execute("DELETE FROM quanda_facts WHERE at < ?", (now - FACTS_KEPT_S,))

        await self._write(op)

    async def _start_facts(self) -> None:
        self._fact_cursor = self._read("SELECT COALESCE(MAX(id), 0) FROM quanda_facts", (), one=True)[0]

    async def _poll_facts(self) -> list[tuple[str, str]]:
        version = self._read("PRAGMA data_version", (), one=True)[0]
        if version == self._facts_version:
            return []
        self._facts_version = version
        rows = self._read("SELECT id, origin, topic, data FROM quanda_facts WHERE id > ? ORDER BY id",
                          (self._fact_cursor,))
        if rows:
            self._fact_cursor = rows[-1][0]
        return [(topic, data) for _id, origin, topic, data in rows if origin != self.origin]

    # -- lifecycle ------------------------------------------------------------------------------------

    async def _close(self) -> None:
        self._flush()  # the writes asked for this turn still go (to the thread, if it is busy)
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            self._checkpoint_wanted.set()
            await asyncio.to_thread(self._checkpointer.join)
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._inline is not None:
            self._inline.close()
            self._inline = None


def _dump(data: dict[str, Any]) -> str:
    return encode_record(data)
