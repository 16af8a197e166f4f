"""SQLite backend: the embedded default.

Every statement runs on a thread of the store (the writer, the reader, the checkpointer: `sqlite_writer.py`),
never on the event loop, which waits for an answer at most LOOP_BUDGET_S and otherwise goes on serving: a
slow or frozen disk, or another process holding the write lock, stalls the store's calls (each fails at its
deadline), not the server. Writes are group-committed: every write asked for during one turn of the event
loop joins one `BEGIN IMMEDIATE` transaction. Several processes may share the file; `BEGIN IMMEDIATE`
serialises them, so seqs are assigned and committed in order and a reader never sees a later token without
the earlier. Other processes' commits are noticed by polling `PRAGMA data_version`.

A chunk is one insert, one page of the database written, like the cheapest commit SQLite has: the writer
remembers each message's state as it last wrote it (`_known`) and inserts the token with the next seq; if
anyone wrote the message since (another process, a seal), that seq is taken (every change is a token) and the
insert fails, so the state is read again from the row and the chunks after it. The message row is the state
as of its `last_seq` (its sync point): synced by every token that is not a chunk, every CHECKPOINT_EVERY
chunks and at least every SYNC_EVERY_S seconds while chunks come; reading a message replays the chunks after
it. The content is kept as of `content_seq` (a checkpoint) in a row of its own (`quanda_content`, so that
syncing the message row never copies it; rows written before that table keep it in the message row), with the
chunks after it read from the token log; it is checkpointed at every override and seal, and at seqs that are
multiples of a power of two growing with the message (`checkpoint_due`), so copying it costs O(1) per chunk
amortised and a reader never has more than CHECKPOINT_MAX chunks to add.

The schema, its statements and the row helpers are in `sqlite_schema.py`, its migrations in
`sqlite_migrations.py`; the threads in `sqlite_writer.py`; records, counters and leases in `sqlite_records.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from typing import Any

from ..errors import QuandaFencedError, QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from .base import MessageRecord, new_id, utf8_len
from .fencing import Fence
from .migrations import SchemaStatus
from .sqlite_schema import (INSERT_TOKEN, LAST_SEQS, MESSAGE_COLUMNS, MESSAGES, SET_CONTENT, SYNC,
                            SYNC_BY_KIND, CHECKPOINT_EVERY, FACTS_KEPT_S, KNOWN_MAX, PRUNE_EVERY,
                            SYNC_EVERY_S, checkpoint_wal, checkpoint_due, connect_db, record_of_row, state_of, open_writer)
from .sqlite_records import SQLiteRecords, check_lease
from .sqlite_writer import STOP

log = logging.getLogger("quanda.store.sqlite")


class SQLiteStore(SQLiteRecords):
    def __init__(self, path: str, migrate: bool = True, **limits: Any):
        super().__init__(path, **limits)
        self.migrate = migrate  # apply pending migrations on opening (else only read where the schema stands)
        self.schema: SchemaStatus | None = None
        self._data_version: int | None = None
        self._fact_cursor = 0
        self._published = 0

    async def open(self) -> "SQLiteStore":
        self._loop = asyncio.get_running_loop()
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            writer, self.schema = await asyncio.to_thread(open_writer, self.path, self.timeout_s, self.migrate)
            reader = await asyncio.to_thread(connect_db, self.path, self.timeout_s)
        except (OSError, sqlite3.Error) as exc:
            raise QuandaStoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._start_threads(writer, reader)
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
                conn.execute(SET_CONTENT, (message_id, 1, content))
            return MessageRecord(message_id, role, content, None, "", False, last_seq, now, now)

        return await self._write(op)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None,
                      fenced_by: Fence | None) -> QuandaToken:
        max_bytes, known = self.max_message_bytes, self._known
        size = utf8_len(text) if kind in (CHUNK, OVERRIDE) else 0
        fence = None if fenced_by is None else fenced_by.fence

        def op(conn: sqlite3.Connection) -> QuandaToken:
            now = time.time()
            if fenced_by is not None:
                check_lease(conn, fenced_by)
            mine = known.get(message_id) if kind == CHUNK else None
            if mine is not None and fence is not None and fence != mine.fence:
                mine = None  # a new fence is written to the row (a lower one refused): the long way
            state = None
            if mine is not None and mine.content_bytes + size <= max_bytes:
                # the next seq after this process's last write: taken already if anyone wrote the message since
                # (every change, a seal too, is a token with the next seq), else that one insert is the append
                try:
                    conn.execute(INSERT_TOKEN, (message_id, mine.last_seq + 1, CHUNK, text, estimate))
                    state = mine
                except sqlite3.IntegrityError:
                    del known[message_id]
            if state is None:
                state, immutable = state_of(conn, message_id)
                if fence is not None and fence != state.fence:
                    if fence < state.fence:
                        raise QuandaFencedError(f"message {message_id} was taken over by a newer job (fence "
                                                f"{state.fence}, this one's {fence}); nothing was written")
                    conn.execute("UPDATE quanda_messages SET fence = ? WHERE id = ?", (fence, message_id))
                    state.fence = fence
                if immutable:
                    if kind == IMMUTABLE:
                        return QuandaToken(IMMUTABLE, "", None, state.last_seq)
                    raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
                grown = size + (state.content_bytes if kind == CHUNK else 0)
                if grown > max_bytes:
                    raise self._over_message_limit(message_id, grown)
                conn.execute(INSERT_TOKEN, (message_id, state.last_seq + 1, kind, text, estimate))
            seq = state.last_seq + 1
            content_bytes = size if kind == OVERRIDE else state.content_bytes + size
            if kind == CHUNK:
                sync = seq & (CHECKPOINT_EVERY - 1) == 0  # a checkpoint's seq is a multiple of this
                if sync and checkpoint_due(seq):
                    checkpoint_wal(conn, message_id, seq)
                if sync or now - state.synced_at >= SYNC_EVERY_S:
                    conn.execute(SYNC, (message_id, seq, content_bytes, estimate, now))
                    state.synced_at = now
                state.last_seq, state.content_bytes, state.estimate = seq, content_bytes, estimate
                if state is not mine:
                    if len(known) >= KNOWN_MAX:
                        known.clear()
                    known[message_id] = state
                return QuandaToken(kind, text, estimate, seq)
            # any other token syncs the row: after the sync point there are only chunks
            conn.execute(SYNC_BY_KIND[kind], (message_id, seq, content_bytes, state.estimate, now, text)[
                :6 if kind == WARNING else 5])
            if kind == OVERRIDE:
                conn.execute(SET_CONTENT, (message_id, seq, text))
            elif kind == IMMUTABLE:
                checkpoint_wal(conn, message_id, seq)
            known.pop(message_id, None)
            return QuandaToken(kind, text, estimate, seq)

        return await self._write(op, publish=message_id)

    async def _get_message(self, message_id: str) -> MessageRecord:
        records = await self._read_records("WHERE id = ?", (message_id,))
        if not records:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
        return records[0]

    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]:
        def read(conn: sqlite3.Connection) -> list[QuandaToken]:
            rows = conn.execute("SELECT kind, text, estimate, seq FROM quanda_tokens WHERE message_id = ? AND "
                                "seq > ? ORDER BY seq LIMIT ?", (message_id, gt, limit)).fetchall()
            if not rows and conn.execute("SELECT 1 FROM quanda_messages WHERE id = ?", (message_id,)).fetchone() is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
            return [QuandaToken(*row) for row in rows]
        return await self._run_read(read)

    async def _select_messages(self, role: str | None, immutable: bool | None, limit: int) -> list[MessageRecord]:
        where, params = [], []
        if role is not None:
            where.append("role = ?")
            params.append(role)
        if immutable is not None:
            where.append("immutable = ?")
            params.append(int(immutable))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        return await self._read_records(f"{clause} ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit))

    async def _poll_once(self) -> bool:
        """One hop to the reader thread per poll: `PRAGMA data_version`, and only if it moved, the last seqs of
        the messages followed here and the facts published after the cursor."""
        message_ids = json.dumps(list(self._subscriptions)) if self._subscriptions else None
        facts_from = self._fact_cursor if self._fact_listeners else None

        def poll(conn: sqlite3.Connection) -> tuple[dict[str, int] | None, list | None]:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return None, None
            self._data_version = version
            # the log's last seq (a row is synced only now and then while chunks come)
            seqs = None if message_ids is None else {
                mid: seq for mid, seq in conn.execute(LAST_SEQS, (message_ids,)) if seq is not None}
            facts = None if facts_from is None else conn.execute(
                "SELECT id, origin, topic, data FROM quanda_facts WHERE id > ? ORDER BY id", (facts_from,)).fetchall()
            return seqs, facts

        seqs, rows = await self._run_read(poll)
        woke = bool(seqs) and self._remote_progress(seqs)
        if rows and self._fact_listeners and self._fact_cursor == facts_from:
            self._fact_cursor = rows[-1][0]
            facts = [(topic, data) for _id, origin, topic, data in rows if origin != self.origin]
            if facts:
                self._remote_facts(facts)
                woke = True
        return woke

    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        return None  # `_poll_once` reads them, in the same hop as the facts

    async def _read_records(self, where: str, params: tuple) -> list[MessageRecord]:
        """Rows and their not yet checkpointed chunks, read in one snapshot (a WAL read transaction)."""
        def read(conn: sqlite3.Connection) -> list[MessageRecord]:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(f"SELECT {MESSAGE_COLUMNS} FROM {MESSAGES} {where}", params).fetchall()
                return [record_of_row(conn, row) for row in rows]
            finally:
                conn.execute("COMMIT")
        return await self._run_read(read)

    async def _read(self, sql: str, params: tuple | list, one: bool = False) -> Any:
        def read(conn: sqlite3.Connection) -> Any:
            cursor = conn.execute(sql, params)
            return cursor.fetchone() if one else cursor.fetchall()
        return await self._run_read(read)

    async def _delete_messages(self, message_ids: list[str]) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(message_ids))
            for table, column in (("quanda_tokens", "message_id"), ("quanda_content", "message_id")):
                conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", message_ids)
            for message_id in message_ids:
                self._known.pop(message_id, None)  # (the writer thread's: this runs there)
            return conn.execute(f"DELETE FROM quanda_messages WHERE id IN ({marks})", message_ids).rowcount
        return await self._write(delete) if message_ids else 0

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
        self._fact_cursor = (await self._read("SELECT COALESCE(MAX(id), 0) FROM quanda_facts", (), one=True))[0]
        self._data_version = None  # the next poll reads the facts after the cursor

    async def _poll_facts(self) -> list[tuple[str, str]]:
        return []  # `_poll_once` reads them, in the same hop as the last seqs

    # -- lifecycle ------------------------------------------------------------------------------------

    async def _close(self) -> None:
        """The writes asked for this turn still go; each thread gets the store's deadline to end (a thread
        stuck on a frozen disk is left behind: it is a daemon)."""
        self._flush()
        threads = []
        if self._thread is not None:
            self._queue.put(STOP)
            threads.append(self._thread)
            self._thread = None
        if self._reader_thread is not None:
            self._reads.put(STOP)
            threads.append(self._reader_thread)
            self._reader_thread = None
        if threads:
            self._checkpoint_wanted.set()
            threads.append(self._checkpointer)
            for thread in threads:
                await asyncio.to_thread(thread.join, self.timeout_s)
                if thread.is_alive():
                    log.warning("SQLite thread %s did not end within %g s; left behind", thread.name,
                                self.timeout_s)
        if self._deadlines is not None:
            self._deadlines.close()

