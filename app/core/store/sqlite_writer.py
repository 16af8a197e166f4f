"""The SQLite store's threads, mixed into `SQLiteStore`: the event loop never waits on the disk for longer
than LOOP_BUDGET_S.

Every statement runs on a thread with a connection of its own: writes on the writer thread, reads on the
reader thread, checkpoints on the checkpointer thread. The loop hands a call over and waits for it on a
condition variable, for at most LOOP_BUDGET_S (2 ms): a commit or a read takes tens of microseconds, so
nearly always the answer is there within the budget and is used at once, with no wake-up of the loop through
its self-pipe (the cost of `run_in_executor`). A call not done by then is left to settle through the loop
later (`call_soon_threadsafe`); while any call is settling that way the loop does not wait at all (the disk
is slow: the budget would be spent on every call for nothing, and writes must settle in the order they were
asked for). A frozen filesystem, a stalled disk, another process
holding the write lock: the loop goes on serving everything else, and each call fails at its deadline
(`timeout_s`, `deadline.py`) — a write not yet taken by the writer thread is withdrawn ("nothing was
written"); one under way may still be applied, and its error says so.

Writes are group-committed: every write asked for during one turn of the event loop joins one batch; the
writer thread takes every batch queued and commits them as one `BEGIN IMMEDIATE` transaction (at most
MAX_BATCH writes). One operation that fails fails alone (the others are committed without it) — but a batch
that found the write lock held by another process past the busy timeout (`timeout_s`) fails as a whole at
once: the lock is nobody's fault among its writes, and trying each alone would cost the timeout again for
every one. A writer thread that dies fails the writes it holds and is started afresh by the next write.
The checkpointer copies the WAL back into the database, off the path of every commit, and the WAL is cut
back to WAL_SIZE_LIMIT when it restarts (`journal_size_limit`).
"""

from __future__ import annotations

import _thread
import asyncio
import logging
import queue
import sqlite3
import threading
from typing import Any, Callable

from ..errors import QuandaError, QuandaStoreError
from ..token import QuandaToken
from .base import QuandaStore
from .deadline import Deadlines, timed_out
from .sqlite_schema import Op, connect_db, WriterState, open_writer, writer_busy_s

log = logging.getLogger("quanda.store.sqlite")

LOOP_BUDGET_S = 0.002  # the longest the event loop waits for a thread's answer
MAX_BATCH = 512
PIPELINE_FROM = 4  # a batch of this many writes is not waited for: the writers' next writes gather meanwhile
CHECKPOINT_PAGES = 1000  # WAL pages after which the checkpointer thread copies the WAL back into the db
STOP = object()
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
QUEUED, TAKEN, WITHDRAWN = 0, 1, 2


class _Entry:
    """One write: its operation, who waits for it, whose readers get its token."""

    __slots__ = ("op", "future", "publish", "state", "outcome", "timeout_s")

    def __init__(self, op: Op, future: asyncio.Future, publish: str | None, timeout_s: float):
        self.op, self.future, self.publish, self.timeout_s = op, future, publish, timeout_s
        self.state, self.outcome = QUEUED, None

    def expired(self) -> BaseException:  # called with the store's lock held (`Deadlines` via `_expire`)
        return timed_out("a write", self.timeout_s, self.state != WITHDRAWN)


class _Job:
    """Work handed to a thread: a batch of writes, or one read. `done`: finished while the loop waited for
    it; `detached`: the loop stopped waiting, the thread hands it back through the loop."""

    __slots__ = ("entries", "fn", "result", "error", "done", "detached", "future", "ready")

    def __init__(self, entries: list[_Entry] | None = None, fn: Callable[[sqlite3.Connection], Any] | None = None):
        self.entries, self.fn = entries, fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = self.detached = False
        self.future: asyncio.Future | None = None
        self.ready = _thread.allocate_lock()  # released by the thread when done (a raw lock: the cheapest wait)
        self.ready.acquire()


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
    def __init__(self, path: str, **limits: Any):
        super().__init__(**limits)
        self.path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # batches for the writer thread
        self._reads: queue.SimpleQueue = queue.SimpleQueue()  # reads for the reader thread
        self._thread: threading.Thread | None = None
        self._writer_conn: sqlite3.Connection | None = None  # the writer thread's (for tests to trace)
        self._reader_thread: threading.Thread | None = None
        self._writer_failure: QuandaStoreError | None = None
        self._in_flight: list[_Job] = []  # the batches the writer thread is committing
        self._restart_lock = asyncio.Lock()
        self._batch: list[_Entry] = []  # writes asked for during this turn of the event loop
        self._lock = threading.Lock()  # guards the hand-over of jobs between the loop and the threads
        self._detached = 0  # jobs the loop stopped waiting for and that have not settled yet
        self._wal_pages = 0  # a bound on the pages written to the WAL since the checkpointer was last asked
        self._deadlines: Deadlines | None = None
        # the state of messages as this process last wrote them (the writer thread's alone: valid while nobody
        # else writes them, since a chunk checks that no later token exists); forgotten on every rollback
        self._known: dict[str, WriterState] = {}

    def _start_threads(self, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        """The writer thread (on the connection `open_writer` made), the reader and the checkpointer."""
        self._deadlines = Deadlines(self._loop, self.timeout_s)
        self._writer_conn = writer
        self._thread = self._spawn("quanda-sqlite-writer", self._write_loop, writer)
        self._reader_thread = self._spawn("quanda-sqlite-reader", self._read_loop, reader)
        self._checkpoint_wanted = threading.Event()
        self._checkpointer = self._spawn("quanda-sqlite-checkpoint", self._checkpoint_loop)

    @staticmethod
    def _spawn(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _checkpoint_loop(self) -> None:
        conn = connect_db(self.path)
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

    # -- the hand-over: the loop waits a little, else the thread hands back through the loop ---------------

    def _await_briefly(self, job: _Job, wait: bool = True) -> bool:
        """True when the thread finished `job` within the budget (use it now); else the job is detached and
        its `future` will be settled through the loop."""
        if wait and not self._detached:
            job.ready.acquire(True, LOOP_BUDGET_S)
        with self._lock:
            if job.done:
                return True
            job.detached = True
            job.future = self._loop.create_future()
            self._detached += 1
        return False

    def _hand_back(self, job: _Job) -> None:
        """On a thread: `job` is finished; wake the loop waiting for it, or settle it through the loop."""
        with self._lock:
            if not job.detached:
                job.done = True
                job.ready.release()
                return
        try:
            self._loop.call_soon_threadsafe(self._settle_detached, job)
        except RuntimeError:  # the event loop is gone: nobody is waiting any more
            log.warning("event loop closed with a SQLite call finished but unanswered")

    def _settle_detached(self, job: _Job) -> None:
        self._detached -= 1
        if job.entries is not None:
            self._settle(job.entries)
        if not job.future.done():
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.result)

    # -- reads ------------------------------------------------------------------------------------------

    async def _run_read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """`fn(conn)` on the reader thread's connection; QuandaStoreError on a SQLite error."""
        if self._closed or self._reader_thread is None:
            raise QuandaStoreError("the store is closed")
        job = _Job(fn=fn)
        self._reads.put(job)
        if not self._await_briefly(job):
            self._deadlines.watch(job.future, lambda: timed_out("a read", self.timeout_s, False))
            return await job.future
        if job.error is not None:
            raise job.error
        return job.result

    def _read_loop(self, conn: sqlite3.Connection) -> None:
        while (job := self._reads.get()) is not STOP:
            try:
                job.result = job.fn(conn)
            except QuandaError as exc:
                job.error = exc
            except sqlite3.Error as exc:
                job.error = QuandaStoreError(f"SQLite read failed: {exc}")
                job.error.__cause__ = exc
            except Exception as exc:  # noqa: BLE001 - a bug: fail this read, keep the thread
                log.error("SQLite read failed", exc_info=exc)
                job.error = QuandaStoreError(f"SQLite read failed: {type(exc).__name__}: {exc}")
            self._hand_back(job)
        conn.close()

    # -- writes -----------------------------------------------------------------------------------------

    async def _write(self, op: Op, publish: str | None = None) -> Any:
        """Run `op(conn)` inside the next group-commit transaction; its result once committed."""
        if self._closed or self._thread is None:
            raise QuandaStoreError("the store is closed")
        if self._writer_failure is not None:
            await self._restart_writer()
        entry = _Entry(op, self._loop.create_future(), publish, self.timeout_s)
        self._batch.append(entry)
        if len(self._batch) == 1:  # the first write of this turn: commit them all at its end
            self._loop.call_soon(self._flush)
        self._deadlines.watch(entry.future, lambda: self._expire(entry))
        return await entry.future

    def _expire(self, entry: _Entry) -> BaseException:
        """A write past its deadline: withdrawn if the writer thread has not taken it yet."""
        with self._lock:
            if entry.state == QUEUED:
                entry.state = WITHDRAWN
            return entry.expired()

    def _flush(self) -> None:
        """Hand the writes asked for during this turn to the writer thread; settle them at once if it commits
        them within the budget."""
        entries, self._batch = self._batch, []
        if not entries:
            return
        job = _Job(entries)
        self._queue.put(job)
        if self._writer_failure is not None:  # the thread died after our check: nobody will take it
            self._fail_queued(self._writer_failure)
        if self._await_briefly(job, wait=len(entries) < PIPELINE_FROM):
            self._settle(entries)

    def _fail_queued(self, error: QuandaStoreError) -> None:
        """Fail every batch still queued for the writer thread (it is gone)."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not STOP:
                self._fail_job(job, error)

    def _fail_job(self, job: _Job, error: QuandaStoreError) -> None:
        for entry in job.entries:
            entry.outcome = error
        self._hand_back(job)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            self._serve_writes(conn)
        except BaseException as exc:  # noqa: BLE001 - whatever kills the thread, no write may wait forever
            log.error("SQLite writer thread died: %r", exc)
            self._writer_failure = QuandaStoreError(f"the SQLite writer stopped ({type(exc).__name__}: {exc})")
            for job in self._in_flight:
                self._fail_job(job, self._writer_failure)
            self._in_flight = []
            self._fail_queued(self._writer_failure)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _serve_writes(self, conn: sqlite3.Connection) -> None:
        while True:
            job = self._queue.get()
            if job is STOP:
                return
            jobs, size = [job], len(job.entries)
            while size < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is STOP:
                    self._queue.put(STOP)
                    break
                jobs.append(job)
                size += len(job.entries)
            self._in_flight = jobs
            with self._lock:  # a write past its deadline before this is withdrawn: never run
                batch = [e for j in jobs for e in j.entries if e.state == QUEUED]
                for entry in batch:
                    entry.state = TAKEN
            if batch:
                self._commit_batch(conn, batch)
            self._in_flight = []
            for job in jobs:
                self._hand_back(job)

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Entry]) -> None:
        outcomes = self._commit(conn, batch)
        if _rolled_back(outcomes):
            self._known.clear()  # rolled back: what the operations remembered was not written
            if len(batch) > 1 and not _busy(outcomes):  # one operation broke the transaction: each alone
                outcomes = [self._commit(conn, [entry])[0] for entry in batch]
                self._known.clear()
            elif _busy(outcomes):
                error = QuandaStoreError(f"another process held the database's write lock for over "
                                         f"{writer_busy_s(self.timeout_s):g} s; nothing was written")
                error.__cause__ = outcomes[0].__cause__
                outcomes = [error] * len(batch)
        for entry, outcome in zip(batch, outcomes):
            entry.outcome = outcome
        self._wal_pages += len(batch) + 1  # a write dirties a page or two; a commit at least one
        if self._wal_pages >= CHECKPOINT_PAGES:
            self._wal_pages = 0
            self._checkpoint_wanted.set()

    async def _restart_writer(self) -> None:
        async with self._restart_lock:
            failure = self._writer_failure
            if failure is None:  # another write restarted it meanwhile
                return
            try:
                writer, _schema = await asyncio.to_thread(open_writer, self.path, self.timeout_s)
            except (OSError, sqlite3.Error) as exc:
                raise QuandaStoreError(f"the SQLite writer stopped and cannot restart: {exc}") from failure
            log.warning("restarting the SQLite writer thread after: %s", failure)
            self._writer_failure = None
            self._writer_conn = writer
            self._thread = self._spawn("quanda-sqlite-writer", self._write_loop, writer)

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Entry]) -> list[Any]:
        """One transaction for the batch. An op raises QuandaError before it writes anything; any other
        exception may come after it wrote part of its rows, so the whole transaction is rolled back."""
        outcomes: list[Any] = []
        broken: BaseException | None = None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for entry in batch:
                try:
                    outcomes.append(entry.op(conn))
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

    def _settle(self, batch: list[_Entry]) -> None:
        """Hand committed tokens to this process's readers, then answer the writers (on the event loop)."""
        subscriptions = self._subscriptions
        for entry in batch:
            if entry.publish is not None and entry.publish in subscriptions and isinstance(entry.outcome, QuandaToken):
                self._publish(entry.publish, [entry.outcome])
        for entry in batch:
            future, outcome = entry.future, entry.outcome
            if future.done() or entry.state == WITHDRAWN:
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
