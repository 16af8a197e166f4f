"""The SQLite store's schema, its statements, and what reading and appending need of a message's rows
(see `sqlite.py` for the layout: the message row as of its sync point, the content checkpoint, the token log)."""

from __future__ import annotations

import sqlite3
from typing import Any, Callable

from ..errors import QuandaNotFoundError
from ..token import CHUNK, IMMUTABLE, OVERRIDE, WARNING
from .base import MessageRecord
from .migrations import SchemaStatus
from .sqlite_migrations import apply_migrations

WAL_SIZE_LIMIT = 16 << 20  # bytes the WAL file is cut back to when it restarts after a full checkpoint
CHECKPOINT_EVERY = 64  # chunks after a content checkpoint before the next one (at least)...
CHECKPOINT_RATIO = 4  # ...and at least 1/CHECKPOINT_RATIO of the tokens before it...
CHECKPOINT_MAX = 8192  # ...but never more than this many (a reader rebuilds the content from them)
SYNC_EVERY_S = 1.0  # a message row is synced with its chunks at least this often while they come
KNOWN_MAX = 4096  # messages whose last write this process remembers (see `_known`)

FACTS_KEPT_S = 120  # facts older than this are pruned (a listener more than this behind has lost them anyway)
PRUNE_EVERY = 256

# The message row is the message's state as of its `last_seq` (its *sync point*); the tokens after it are
# chunks (every other kind of token syncs the row), replayed on reading. Its content as of `content_seq` is in
# quanda_content (a row of its own, rewritten only at checkpoints), or, for rows written before that table,
# in the message row itself.
MESSAGE_COLUMNS = ("id, role, coalesce(c.content, m.content), estimate, warning, immutable, last_seq, created_at, "
                    "updated_at, coalesce(c.seq, m.content_seq)")
MESSAGES = "quanda_messages AS m LEFT JOIN quanda_content AS c ON c.message_id = m.id"
_TAIL = "SELECT text FROM quanda_tokens WHERE message_id = ? AND seq > ? AND kind = 'chunk' ORDER BY seq"
_REPLAY = "SELECT seq, kind, text, estimate FROM quanda_tokens WHERE message_id = ? AND seq > ? ORDER BY seq"
INSERT_TOKEN = "INSERT INTO quanda_tokens VALUES (?, ?, ?, ?, ?)"
_STATE = "SELECT last_seq, immutable, content_bytes, estimate, updated_at, fence FROM quanda_messages WHERE id = ?"
NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # the database's clock: the machine's, as SQLite reads it
_SINCE = ("SELECT seq, length(CAST(text AS BLOB)), estimate FROM quanda_tokens WHERE message_id = ? AND seq > ? "
          "ORDER BY seq")
SYNC = "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = ?4, updated_at = ?5 WHERE id = ?1"
SYNC_BY_KIND = {
    OVERRIDE: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = NULL, updated_at = ?5, "
              "content = '', content_seq = ?2 WHERE id = ?1",
    WARNING: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = ?4, updated_at = ?5, "
             "warning = ?6 WHERE id = ?1",
    IMMUTABLE: "UPDATE quanda_messages SET last_seq = ?2, content_bytes = ?3, estimate = NULL, updated_at = ?5, "
               "immutable = 1, warning = '' WHERE id = ?1",
}
SET_CONTENT = "INSERT OR REPLACE INTO quanda_content VALUES (?1, ?2, ?3)"
_CONTENT_SEQ = ("SELECT coalesce((SELECT seq FROM quanda_content WHERE message_id = ?1), "
                "(SELECT content_seq FROM quanda_messages WHERE id = ?1))")
_CHECKPOINT = ("INSERT OR REPLACE INTO quanda_content VALUES (?1, ?2, coalesce((SELECT content FROM quanda_content "
               "WHERE message_id = ?1), (SELECT content FROM quanda_messages WHERE id = ?1)) || ?3)")
_CHECKPOINTED = "UPDATE quanda_messages SET content = '', content_seq = ?2 WHERE id = ?1"
LAST_SEQS = ("SELECT j.value, (SELECT seq FROM quanda_tokens WHERE message_id = j.value ORDER BY seq DESC LIMIT 1) "
              "FROM json_each(?) AS j")

Op = Callable[[sqlite3.Connection], Any]


def connect_db(path: str, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A connection as every thread of the store uses it: WAL, `synchronous=NORMAL`, a lock held elsewhere
    waited for at most `timeout_s`, the WAL cut back to WAL_SIZE_LIMIT when it restarts."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return conn


def writer_busy_s(timeout_s: float) -> float:
    """How long the writer waits for a write lock held elsewhere: within the writes' deadline, so that they
    fail saying nothing was written rather than "may still be applied"."""
    return 0.9 * timeout_s


def open_writer(path: str, timeout_s: float, migrate: bool = True) -> tuple[sqlite3.Connection, SchemaStatus]:
    """The writer thread's connection, with the schema migrated (unless `migrate` is False: then only where
    it stands is read); checkpoints (which fsync) are left to their own thread, not run inside a commit a
    writer is waiting on."""
    conn = connect_db(path, writer_busy_s(timeout_s))
    try:
        status = apply_migrations(conn, apply=migrate)
    except BaseException:
        conn.close()
        raise
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn, status


def _tail(conn: sqlite3.Connection, message_id: str, after_seq: int) -> str:
    """The chunks logged after the content checkpoint."""
    return "".join(text for (text,) in conn.execute(_TAIL, (message_id, after_seq)))


def checkpoint_due(seq: int) -> bool:
    """Whether the content is checkpointed at `seq`: every multiple of the largest power of two up to a quarter
    of `seq`, at least CHECKPOINT_EVERY and at most CHECKPOINT_MAX apart. A function of the seq alone, so an
    append needs to read nothing to know; at most that many chunks follow a checkpoint, and the content is
    copied O(1) times per chunk, amortised."""
    gap = min(max(CHECKPOINT_EVERY, 1 << max(0, (seq // CHECKPOINT_RATIO).bit_length() - 1)), CHECKPOINT_MAX)
    return seq % gap == 0


class WriterState:
    """A mutable message's state as an append sees it: its last seq, content bytes and estimate, when its
    row was last synced, and the highest fence that wrote it."""

    __slots__ = ("last_seq", "content_bytes", "estimate", "synced_at", "fence")

    def __init__(self, last_seq: int, content_bytes: int, estimate: str | None, synced_at: float, fence: int):
        self.last_seq, self.content_bytes, self.estimate, self.synced_at = last_seq, content_bytes, estimate, synced_at
        self.fence = fence


def state_of(conn: sqlite3.Connection, message_id: str) -> tuple[WriterState, bool]:
    """The message's state read from its row and the chunks after the row's sync point, and whether it is
    immutable; QuandaNotFoundError when there is no such message."""
    row = conn.execute(_STATE, (message_id,)).fetchone()
    if row is None:
        raise QuandaNotFoundError(f"no message with id {message_id!r}")
    last_seq, immutable, content_bytes, estimate, synced_at, fence = row
    for last_seq, size, estimate in conn.execute(_SINCE, (message_id, last_seq)):
        content_bytes += size
    return WriterState(last_seq, content_bytes, estimate, synced_at, fence), bool(immutable)


def checkpoint_wal(conn: sqlite3.Connection, message_id: str, seq: int) -> None:
    """Copy the content as of `seq` into its own row: the old checkpoint and the chunks after it."""
    content_seq = conn.execute(_CONTENT_SEQ, (message_id,)).fetchone()[0]
    conn.execute(_CHECKPOINT, (message_id, seq, _tail(conn, message_id, content_seq)))
    conn.execute(_CHECKPOINTED, (message_id, seq))


def record_of_row(conn: sqlite3.Connection, row: tuple) -> MessageRecord:
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
