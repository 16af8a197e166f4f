"""The SQLite store's writes, mixed into `SQLiteStore`: group commit on the event loop, or on the writer
thread when another connection holds SQLite's write lock (the whole design is in `sqlite.py`'s docstring).

Every write asked for during one turn of the event loop joins one `BEGIN IMMEDIATE` transaction. One
operation that fails fails alone (the others are committed without it); a writer — the thread or the loop's
connection — that breaks fails the writes it holds at once and is started afresh, so no write ever waits
forever. A checkpointer thread copies the WAL back into the database, off the path of every commit.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from typing import Any

from ..errors import QuandaError, QuandaStoreError
from ..token import QuandaToken
from .base import QuandaStore
from .sqlite_schema import SCHEMA, Op, _connect, _State

log = logging.getLogger("quanda.store.sqlite")

MAX_BATCH = 512
CHECKPOINT_PAGES = 1000  # WAL pages after which the checkpointer thread copies the WAL back into the db
_STOP = object()
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _rolled_back(outcomes: list[Any]) -> bool:
    """Whether a batch's transaction was rolled back (`_commit` fails every operation of it then)."""
    return isinstance(outcomes[0], QuandaStoreError) if len(outcomes) == 1 else any(
        isinstance(o, QuandaStoreError) for o in outcomes)


def _busy(outcomes: list[Any]) -> bool:
    """Whether a batch failed only because another connection held SQLite's write lock."""
    first = outcomes[0] if outcomes else None
    cause = first.__cause__ if isinstance(first, QuandaStoreError) else None
    return isinstance(cause, sqlite3.OperationalError) and getattr(cause, "sqlite_errorcode", None) in _BUSY


class SQLiteWriter(QuandaStore):
    def __init__(self, path: str, **limits: int):
        super().__init__(**limits)
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writer_failure: QuandaStoreError | None = None
        self._in_flight: list = []  # the batch the writer thread is committing
        self._restart_lock = asyncio.Lock()
        self._inline: sqlite3.Connection | None = None  # the event loop's writing connection (no busy timeout)
        self._batch: list = []  # writes asked for during this turn of the event loop
        self._at_thread = 0  # batches handed to the writer thread and not settled yet
        self._wal_pages = 0  # a bound on the pages written to the WAL since the checkpointer was last asked
        # the state of messages as this process last wrote them (valid while nobody else writes them: a chunk
        # checks that no later token exists); forgotten whenever a transaction is rolled back
        self._known: dict[str, _State] = {}

    def _start_writing(self, writer: sqlite3.Connection) -> None:
        """Start the writer thread (on the connection opened by `_open_writer`) and the checkpointer."""
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name="quanda-sqlite-writer",
                                        daemon=True)
        self._thread.start()
        self._checkpoint_wanted = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="quanda-sqlite-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

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
