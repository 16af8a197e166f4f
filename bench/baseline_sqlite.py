"""The SQLite store as it was before issue 10 (commit e1594fc), frozen: the baseline column of
bench/quanda_fanout.py. Not used by the app. Only the imports were changed (absolute, from quanda.core).

SQLite backend: the embedded default.

Writes run on one dedicated thread that drains a queue and commits whatever has gathered in one
`BEGIN IMMEDIATE` transaction (group commit): a lone writer pays one commit per token, a hundred
concurrent writers share one. Several processes may share the file; `BEGIN IMMEDIATE` serialises them,
so seqs are assigned and committed in order and a reader never sees a later token without the earlier.
Reads run on the event loop's own connection: a WAL read of one row takes microseconds, less than the
hop to a thread would. Other processes' commits are noticed by polling `PRAGMA data_version`.

Rewriting a growing `content` column on every chunk would make each commit cost O(message size), so
the row holds the content as of `content_seq` (a checkpoint) and the chunks after it are read from the
token log; a checkpoint is written every CHECKPOINT_EVERY chunks, and at every override and seal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any, Callable

from quanda.core.errors import QuandaError, QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from quanda.core.token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from quanda.core.validation import encode_record
from quanda.core.store.base import MessageRecord, QuandaStore, new_id, utf8_len

log = logging.getLogger("quanda.bench.baseline_sqlite")

BUSY_TIMEOUT_MS = 30_000
MAX_BATCH = 512
CHECKPOINT_PAGES = 1000  # WAL pages after which the checkpointer thread copies the WAL back into the db
CHECKPOINT_EVERY = 64
_STOP = object()

SCHEMA = """
CREATE TABLE IF NOT EXISTS quanda_messages (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    content_bytes INTEGER NOT NULL,
    content_seq INTEGER NOT NULL DEFAULT 0,
    estimate TEXT,
    warning TEXT NOT NULL DEFAULT '',
    immutable INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quanda_messages_role ON quanda_messages(role, immutable);
CREATE TABLE IF NOT EXISTS quanda_tokens (
    message_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    estimate TEXT,
    PRIMARY KEY (message_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quanda_counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quanda_facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    topic TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);
"""
FACTS_KEPT_S = 120  # facts older than this are pruned (a listener more than this behind has lost them anyway)
PRUNE_EVERY = 256

_MESSAGE_COLUMNS = "id, role, content, estimate, warning, immutable, last_seq, created_at, updated_at, content_seq"
_TAIL = "SELECT text FROM quanda_tokens WHERE message_id = ? AND seq > ? AND kind = 'chunk' ORDER BY seq"
_UPDATE_BY_KIND = {
    CHUNK: "UPDATE quanda_messages SET content_bytes = ?, estimate = ?, last_seq = ?, updated_at = ? WHERE id = ?",
    OVERRIDE: "UPDATE quanda_messages SET content = ?, content_seq = ?, content_bytes = ?, estimate = NULL, "
              "last_seq = ?, updated_at = ? WHERE id = ?",
    WARNING: "UPDATE quanda_messages SET warning = ?, last_seq = ?, updated_at = ? WHERE id = ?",
    IMMUTABLE: "UPDATE quanda_messages SET immutable = 1, warning = '', estimate = NULL, "
               "last_seq = ?, updated_at = ? WHERE id = ?",
}
_CHECKPOINT = "UPDATE quanda_messages SET content = content || ?, content_seq = ? WHERE id = ?"

Op = Callable[[sqlite3.Connection], Any]


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _tail(conn: sqlite3.Connection, message_id: str, after_seq: int) -> str:
    """The chunks logged after the content checkpoint."""
    return "".join(text for (text,) in conn.execute(_TAIL, (message_id, after_seq)))


def _record(conn: sqlite3.Connection, row: tuple) -> MessageRecord:
    mid, role, content, estimate, warning, immutable, last_seq, created, updated, content_seq = row
    if last_seq > content_seq:
        content += _tail(conn, mid, content_seq)
    return MessageRecord(mid, role, content, estimate, warning, bool(immutable), last_seq, created, updated)


class SQLiteStore(QuandaStore):
    # Leases came after this store (issue 21); the benchmark uses none. Stubs, so the interface is whole.
    async def _acquire_lease(self, *args: Any) -> None:
        raise NotImplementedError("the store before issue 10 has no leases")

    _renew_lease = _release_lease = _get_lease = _expired_leases = _delete_messages = _acquire_lease

    def __init__(self, path: str, **limits: int):
        super().__init__(**limits)
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._record_tables: set[str] = set()
        self._data_version: int | None = None
        self._writer_failure: QuandaStoreError | None = None
        self._fact_cursor = 0
        self._in_flight: list = []  # the batch the writer thread is committing
        self._facts_version: int | None = None
        self._published = 0
        self._restart_lock = asyncio.Lock()

    async def open(self) -> "SQLiteStore":
        self._loop = asyncio.get_running_loop()
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            writer = await asyncio.to_thread(self._open_writer)
            self._reader = _connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise QuandaStoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="quanda-sqlite-writer",
                                        daemon=True)
        self._thread.start()
        self._checkpoint_wanted = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="quanda-sqlite-checkpoint",
                                              daemon=True)
        self._checkpointer.start()
        return self

    def _open_writer(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        # checkpoints (which fsync) run on their own thread, not inside a commit a writer is waiting on
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn

    def _checkpoint_loop(self) -> None:
        conn = _connect(self.path)
        while True:
            self._checkpoint_wanted.wait()
            self._checkpoint_wanted.clear()
            if self._closed:
                break
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint failed: %s", exc)
        conn.close()

    # -- the writer thread ----------------------------------------------------------------------------

    async def _write(self, op: Op, publish: str | None = None) -> Any:
        """Run `op(conn)` inside the next group-commit transaction; its result once committed."""
        if self._closed or self._thread is None:
            raise QuandaStoreError("the store is closed")
        if self._writer_failure is not None:
            await self._restart_writer()
        future = self._loop.create_future()
        self._queue.put((op, future, publish))
        if self._writer_failure is not None:  # the thread died after our check: nobody will take it
            self._fail_queued(self._writer_failure)
        return await future

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            self._serve_writes(conn)
        except BaseException as exc:  # noqa: BLE001 - whatever kills the thread, no write may wait forever
            log.error("SQLite writer thread died: %r", exc)
            self._writer_failure = QuandaStoreError(f"the SQLite writer stopped ({type(exc).__name__}: {exc})")
            if self._in_flight:
                self._hand_back(self._in_flight, [self._writer_failure] * len(self._in_flight))
            self._fail_queued(self._writer_failure)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _serve_writes(self, conn: sqlite3.Connection) -> None:
        pages_since_checkpoint = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._in_flight = batch
            outcomes = self._commit(conn, batch)
            pages_since_checkpoint += 1
            if pages_since_checkpoint >= CHECKPOINT_PAGES:  # commits, each at least a page: a cheap bound
                pages_since_checkpoint = 0
                self._checkpoint_wanted.set()
            if len(batch) > 1 and any(isinstance(o, QuandaStoreError) for o in outcomes):
                # one operation broke the transaction: run each alone, so only that one fails
                outcomes = [self._commit(conn, [entry])[0] for entry in batch]
            self._in_flight = []
            self._hand_back(batch, outcomes)

    def _hand_back(self, batch: list, outcomes: list[Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._settle, batch, outcomes)
        except RuntimeError:  # the event loop is gone: nobody is waiting any more
            log.warning("event loop closed with %d write(s) committed but unacknowledged", len(batch))

    def _fail_queued(self, error: QuandaStoreError) -> None:
        """Fail every write still queued (the writer is gone)."""
        batch = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                batch.append(item)
        if batch:
            self._hand_back(batch, [error] * len(batch))

    async def _restart_writer(self) -> None:
        async with self._restart_lock:
            failure = self._writer_failure
            if failure is None:  # another write restarted it meanwhile
                return
            try:
                writer = await asyncio.to_thread(self._open_writer)
            except (OSError, sqlite3.Error) as exc:
                raise QuandaStoreError(f"the SQLite writer stopped and cannot restart: {exc}") from failure
            log.warning("restarting the SQLite writer thread after: %s", failure)
            self._writer_failure = None
            self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="quanda-sqlite-writer",
                                            daemon=True)
            self._thread.start()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list) -> list[Any]:
        """One transaction for the batch. An op raises QuandaError before it writes anything; any other
        exception may come after it wrote part of its rows, so the whole transaction is rolled back."""
        outcomes: list[Any] = []
        broken: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _future, _publish in batch:
                try:
                    outcomes.append(op(conn))
                except QuandaError as exc:
                    outcomes.append(exc)
                except Exception as exc:  # noqa: BLE001 - a bug or a driver surprise: fail this batch only
                    broken = exc
                    break
            if broken is None:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            broken = exc
        if broken is None:
            return outcomes
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("SQLite rollback failed: %s", exc)
        if not isinstance(broken, sqlite3.Error):
            log.error("SQLite write operation failed", exc_info=broken)
        error = QuandaStoreError(f"SQLite write failed: {type(broken).__name__}: {broken}")
        error.__cause__ = broken
        return [error] * len(batch)

    def _settle(self, batch: list, outcomes: list[Any]) -> None:
        for (_op, _future, publish), outcome in zip(batch, outcomes):
            if publish is not None and isinstance(outcome, QuandaToken):
                self._publish(publish, [outcome])
        for (_op, future, _publish), outcome in zip(batch, outcomes):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    # -- messages -------------------------------------------------------------------------------------

    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord:
        message_id = new_id()
        last_seq = 1 if content else 0

        def op(conn: sqlite3.Connection) -> MessageRecord:
            conn.execute("INSERT INTO quanda_messages (id, role, content, content_bytes, last_seq, created_at, "
                         "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (message_id, role, content, utf8_len(content), last_seq, now, now))
            if content:
                conn.execute("INSERT INTO quanda_tokens VALUES (?, 1, ?, ?, NULL)", (message_id, OVERRIDE, content))
            return MessageRecord(message_id, role, content, None, "", False, last_seq, now, now)

        return await self._write(op)

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None,
                      fence: int | None = None) -> QuandaToken:  # (fences came later: the bench writes none)
        max_bytes = self.max_message_bytes
        over_limit = self._over_message_limit

        def op(conn: sqlite3.Connection) -> QuandaToken:
            row = conn.execute("SELECT last_seq, immutable, content_bytes, content_seq FROM quanda_messages "
                               "WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                raise QuandaNotFoundError(f"no message with id {message_id!r}")
            last_seq, immutable, content_bytes, content_seq = row
            if immutable:
                if kind == IMMUTABLE:
                    return QuandaToken(IMMUTABLE, "", None, last_seq)
                raise QuandaImmutableError(f"message {message_id} is immutable; nothing was written")
            seq = last_seq + 1
            now = time.time()
            if kind in (CHUNK, OVERRIDE):
                size = (content_bytes if kind == CHUNK else 0) + utf8_len(text)
                if size > max_bytes:
                    raise over_limit(message_id, size)
                params: tuple = ((size, estimate, seq, now, message_id) if kind == CHUNK
                                 else (text, seq, size, seq, now, message_id))
            elif kind == WARNING:
                params = (text, seq, now, message_id)
            else:
                params = (seq, now, message_id)
            conn.execute("INSERT INTO quanda_tokens VALUES (?, ?, ?, ?, ?)", (message_id, seq, kind, text, estimate))
            conn.execute(_UPDATE_BY_KIND[kind], params)
            if kind == IMMUTABLE or (kind == CHUNK and seq - content_seq >= CHECKPOINT_EVERY):
                conn.execute(_CHECKPOINT, (_tail(conn, message_id, content_seq), seq, message_id))
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
        found: dict[str, int] = {}
        for start in range(0, len(message_ids), 500):
            part = message_ids[start:start + 500]
            marks = ",".join("?" * len(part))
            found.update(self._read(f"SELECT id, last_seq FROM quanda_messages WHERE id IN ({marks})", part))
        return found

    def _read_records(self, where: str, params: tuple) -> list[MessageRecord]:
        """Rows and their not yet checkpointed chunks, read in one snapshot (a WAL read transaction)."""
        reader = self._reader
        if reader is None or self._closed:
            raise QuandaStoreError("the store is closed")
        try:
            reader.execute("BEGIN")
            try:
                rows = reader.execute(f"SELECT {_MESSAGE_COLUMNS} FROM quanda_messages {where}", params).fetchall()
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
        if self._thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            self._checkpoint_wanted.set()
            await asyncio.to_thread(self._checkpointer.join)
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _dump(data: dict[str, Any]) -> str:
    return encode_record(data)
