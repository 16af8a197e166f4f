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

from ..errors import QuandaError, QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from ..validation import encode_record
from .base import MessageRecord, QuandaStore, new_id, utf8_len

log = logging.getLogger("quanda.store.sqlite")

BUSY_TIMEOUT_MS = 30_000
MAX_BATCH = 512
CHECKPOINT_PAGES = 1000  # WAL pages after which the checkpointer thread copies the WAL back into the db
CHECKPOINT_EVERY = 64  # chunks after a content checkpoint before the next one (at least)...
CHECKPOINT_RATIO = 4  # ...and at least 1/CHECKPOINT_RATIO of the tokens before it...
CHECKPOINT_MAX = 8192  # ...but never more than this many (a reader rebuilds the content from them)
SYNC_EVERY_S = 1.0  # a message row is synced with its chunks at least this often while they come
KNOWN_MAX = 4096  # messages whose last write this process remembers (see `_known`)
_STOP = object()
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)

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
CREATE TABLE IF NOT EXISTS quanda_content (
    message_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    content TEXT NOT NULL
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

# The message row is the message's state as of its `last_seq` (its *sync point*); the tokens after it are
# chunks (every other kind of token syncs the row), replayed on reading. Its content as of `content_seq` is in
# quanda_content (a row of its own, rewritten only at checkpoints), or, for rows written before that table,
# in the message row itself.
_MESSAGE_COLUMNS = ("id, role, coalesce(c.content, m.content), estimate, warning, immutable, last_seq, created_at, "
                    "updated_at, coalesce(c.seq, m.content_seq)")
_MESSAGES = "quanda_messages AS m LEFT JOIN quanda_content AS c ON c.message_id = m.id"
_TAIL = "SELECT text FROM quanda_tokens WHERE message_id = ? AND seq > ? AND kind = 'chunk' ORDER BY seq"
_REPLAY = "SELECT seq, kind, text, estimate FROM quanda_tokens WHERE message_id = ? AND seq > ? ORDER BY seq"
_INSERT_TOKEN = "INSERT INTO quanda_tokens VALUES (?, ?, ?, ?, ?)"
_STATE = "SELECT last_seq, immutable, content_bytes, estimate, updated_at FROM quanda_messages WHERE id = ?"
_SINCE = ("SELECT seq, length(CAST(text AS BLOB)), estimate FROM quanda_tokens WHERE message_id = ? AND seq > ? "
          "ORDER BY seq")
_SYNC = "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = ?4, updated_at = ?5 WHERE id = ?1"
_SYNC_BY_KIND = {
    OVERRIDE: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = NULL, updated_at = ?5, "
              "content = '', content_seq = ?2 WHERE id = ?1",
    WARNING: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = ?4, updated_at = ?5, "
             "warning = ?6 WHERE id = ?1",
    IMMUTABLE: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = NULL, updated_at = ?5, "
               "immutable = 1, warning = '' WHERE id = ?1",
}
_SET_CONTENT = "INSERT OR REPLACE INTO quanda_content VALUES (?1, ?2, ?3)"
_CONTENT_SEQ = ("SELECT coalesce((SELECT seq FROM quanda_content WHERE message_id = ?1), "
                "(SELECT content_seq FROM quanda_messages WHERE id = ?1))")
_CHECKPOINT = ("INSERT OR REPLACE INTO quanda_content VALUES (?1, ?2, coalesce((SELECT content FROM quanda_content "
               "WHERE message_id = ?1), (SELECT content FROM quanda_messages WHERE id = ?1)) || ?3)")
_CHECKPOINTED = "UPDATE quanda_messages SET content = '', content_seq = ?2 WHERE id = ?1"
_LAST_SEQS = ("SELECT j.value, (SELECT seq FROM quanda_tokens WHERE message_id = j.value ORDER BY seq DESC LIMIT 1) "
              "FROM json_each(?) AS j")

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


def _checkpoint_due(seq: int) -> bool:
    """Whether the content is checkpointed at `seq`: every multiple of the largest power of two up to a quarter
    of `seq`, at least CHECKPOINT_EVERY and at most CHECKPOINT_MAX apart. A function of the seq alone, so an
    append needs to read nothing to know; at most that many chunks follow a checkpoint, and the content is
    copied O(1) times per chunk, amortised."""
    gap = min(max(CHECKPOINT_EVERY, 1 << max(0, (seq // CHECKPOINT_RATIO).bit_length() - 1)), CHECKPOINT_MAX)
    return seq % gap == 0


class _State:
    """A mutable message's state as an append sees it: its last seq, content bytes and estimate, and when its
    row was last synced."""

    __slots__ = ("last_seq", "content_bytes", "estimate", "synced_at")

    def __init__(self, last_seq: int, content_bytes: int, estimate: str | None, synced_at: float):
        self.last_seq, self.content_bytes, self.estimate, self.synced_at = last_seq, content_bytes, estimate, synced_at


def _state(conn: sqlite3.Connection, message_id: str) -> tuple[_State, bool]:
    """The message's state read from its row and the chunks after the row's sync point, and whether it is
    immutable; QuandaNotFoundError when there is no such message."""
    row = conn.execute(_STATE, (message_id,)).fetchone()
    if row is None:
        raise QuandaNotFoundError(f"no message with id {message_id!r}")
    last_seq, immutable, content_bytes, estimate, synced_at = row
    for last_seq, size, estimate in conn.execute(_SINCE, (message_id, last_seq)):
        content_bytes += size
    return _State(last_seq, content_bytes, estimate, synced_at), bool(immutable)


def _checkpoint(conn: sqlite3.Connection, message_id: str, seq: int) -> None:
    """Copy the content as of `seq` into its own row: the old checkpoint and the chunks after it."""
    content_seq = conn.execute(_CONTENT_SEQ, (message_id,)).fetchone()[0]
    conn.execute(_CHECKPOINT, (message_id, seq, _tail(conn, message_id, content_seq)))
    conn.execute(_CHECKPOINTED, (message_id, seq))


def _rolled_back(outcomes: list[Any]) -> bool:
    """Whether a batch's transaction was rolled back (`_commit` fails every operation of it then)."""
    return isinstance(outcomes[0], QuandaStoreError) if len(outcomes) == 1 else any(
        isinstance(o, QuandaStoreError) for o in outcomes)


def _busy(outcomes: list[Any]) -> bool:
    """Whether a batch failed only because another connection held SQLite's write lock."""
    first = outcomes[0] if outcomes else None
    cause = first.__cause__ if isinstance(first, QuandaStoreError) else None
    return isinstance(cause, sqlite3.OperationalError) and getattr(cause, "sqlite_errorcode", None) in _BUSY


def _record(conn: sqlite3.Connection, row: tuple) -> MessageRecord:
    """A message from its row and the tokens after its content checkpoint: their chunks extend the content,
    and those after the row's sync point (all chunks) carry the last seq and the estimate."""
    mid, role, content, estimate, warning, immutable, synced_seq, created, updated, content_seq = row
    last_seq, parts = synced_seq, [content]
    for seq, kind, text, chunk_estimate in conn.execute(_REPLAY, (mid, content_seq)):
        if kind == CHUNK:
            parts.append(text)
        if seq > synced_seq:
            last_seq, estimate = seq, chunk_estimate
    return MessageRecord(mid, role, "".join(parts), estimate, warning, bool(immutable), last_seq, created, updated)


class SQLiteStore(QuandaStore):
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
        self._inline: sqlite3.Connection | None = None  # the event loop's writing connection (no busy timeout)
        self._batch: list = []  # writes asked for during this turn of the event loop
        self._at_thread = 0  # batches handed to the writer thread and not settled yet
        self._wal_pages = 0  # a bound on the pages written to the WAL since the checkpointer was last asked
        # the state of messages as this process last wrote them (valid while nobody else writes them: a chunk
        # checks that no later token exists); forgotten whenever a transaction is rolled back
        self._known: dict[str, _State] = {}

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

    def _open_inline(self) -> sqlite3.Connection:
        conn = _connect(self.path)
        conn.execute("PRAGMA busy_timeout = 0")  # a lock held elsewhere: hand the batch to the thread at once
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

    # -- writes: on the event loop, or on the writer thread ---------------------------------------

    async def _write(self, op: Op, publish: str | None = None) -> Any:
        """Run `op(conn)` inside the next group-commit transaction; its result once committed."""
        if self._closed or self._thread is None:
            raise QuandaStoreError("the store is closed")
        if self._writer_failure is not None:
            await self._restart_writer()
        future = self._loop.create_future()
        self._batch.append((op, future, publish))
        if len(self._batch) == 1:  # the first write of this turn: commit them all at its end
            self._loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Commit the writes asked for during this turn: here, if SQLite's write lock is free and the thread
        has nothing queued (so the order of commits is the order of asking); else on the writer thread."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        if self._at_thread or self._inline is None:
            self._to_thread(batch)
            return
        try:
            outcomes = self._commit(self._inline, batch)
        except BaseException as exc:  # noqa: BLE001 - whatever breaks a commit, no write may wait forever
            self._inline_broke(batch, exc)
            return
        if _rolled_back(outcomes):
            if _busy(outcomes):
                self._to_thread(batch)  # another connection holds the lock: the thread waits for it
                return
            self._known.clear()  # what the operations remembered was not written
            if len(batch) > 1:
                # one operation broke the transaction: the others are committed without it, then it fails alone
                self._retry_alone(batch)
                return
        self._committed(len(batch))
        self._settle(batch, outcomes)

    def _retry_alone(self, batch: list) -> None:
        for n, entry in enumerate(batch):
            try:
                outcome = self._commit(self._inline, [entry])
            except BaseException as exc:  # noqa: BLE001
                self._inline_broke(batch[n:], exc)
                return
            if _busy(outcome):
                self._to_thread(batch[n:])
                return
            if _rolled_back(outcome):
                self._known.clear()
            self._committed(1)
            self._settle([entry], outcome)

    def _inline_broke(self, batch: list, exc: BaseException) -> None:
        """The loop's writer broke in a way `_commit` does not expect: fail its writes at once, start afresh."""
        log.error("SQLite write on the event loop failed: %r", exc)
        self._known.clear()
        error = QuandaStoreError(f"the SQLite writer stopped ({type(exc).__name__}: {exc})")
        conn, self._inline = self._inline, None
        try:
            if conn is not None:
                conn.close()
            self._inline = self._open_inline()
        except sqlite3.Error as reopen:
            log.error("cannot reopen the SQLite connection; writes go to the writer thread: %s", reopen)
        self._settle(batch, [error] * len(batch))
        if isinstance(exc, KeyboardInterrupt):
            raise exc

    def _to_thread(self, batch: list) -> None:
        self._at_thread += 1
        self._queue.put(batch)
        if self._writer_failure is not None:  # the thread died after our check: nobody will take it
            self._fail_queued(self._writer_failure)

    def _committed(self, writes: int) -> None:
        """Ask the checkpointer to run once about CHECKPOINT_PAGES pages went into the WAL (a write dirties a
        page or two; a commit at least one)."""
        self._wal_pages += writes + 1
        if self._wal_pages >= CHECKPOINT_PAGES:
            self._wal_pages = 0
            self._checkpoint_wanted.set()

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            self._serve_writes(conn)
        except BaseException as exc:  # noqa: BLE001 - whatever kills the thread, no write may wait forever
            log.error("SQLite writer thread died: %r", exc)
            self._writer_failure = QuandaStoreError(f"the SQLite writer stopped ({type(exc).__name__}: {exc})")
            if self._in_flight:
                self._hand_back(self._in_flight, [self._writer_failure] * sum(len(b) for b in self._in_flight))
                self._in_flight = []
            self._fail_queued(self._writer_failure)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _serve_writes(self, conn: sqlite3.Connection) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batches = [item]
            size = len(item)
            while size < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batches.append(item)
                size += len(item)
            batch = [entry for b in batches for entry in b]
            self._in_flight = batches
            outcomes = self._commit(conn, batch)
            if _rolled_back(outcomes):
                self._known.clear()  # rolled back: what the operations remembered was not written
                if len(batch) > 1:  # one operation broke the transaction: run each alone, so only that one fails
                    outcomes = [self._commit(conn, [entry])[0] for entry in batch]
                    self._known.clear()
            self._in_flight = []
            self._hand_back(batches, outcomes)

    def _hand_back(self, batches: list, outcomes: list[Any]) -> None:
        """Give the outcomes of the thread's batches to the event loop."""
        try:
            self._loop.call_soon_threadsafe(self._settle_from_thread, batches, outcomes)
        except RuntimeError:  # the event loop is gone: nobody is waiting any more
            log.warning("event loop closed with %d write(s) committed but unacknowledged",
                        sum(len(b) for b in batches))

    def _settle_from_thread(self, batches: list, outcomes: list[Any]) -> None:
        self._at_thread -= len(batches)
        self._committed(len(outcomes))
        self._settle([entry for b in batches for entry in b], outcomes)

    def _fail_queued(self, error: QuandaStoreError) -> None:
        """Fail every write still queued for the thread (it is gone)."""
        batches = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                batches.append(item)
        if batches:
            self._hand_back(batches, [error] * sum(len(b) for b in batches))

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
        """Hand committed tokens to this process's readers, then answer the writers."""
        subscriptions = self._subscriptions
        for (_op, _future, publish), outcome in zip(batch, outcomes):
            if publish is not None and publish in subscriptions and isinstance(outcome, QuandaToken):
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
