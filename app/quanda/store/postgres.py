"""PostgreSQL backend (asyncpg): several app servers on one database.

Writes. Every append of this process goes through one writer task that drains a queue and sends whatever
has gathered as one call of the `quanda_append` function: one round trip, one transaction, one commit for
the batch (group commit: a lone writer pays one commit per token, a hundred concurrent writers share one).
The function sorts nothing itself: the batch arrives ordered by message id, so it row-locks the messages
(`SELECT … FOR UPDATE`) in id order and two processes' batches never deadlock. Under the lock it assigns
seqs `last_seq + 1, …`, checks immutability and the size limit, inserts the tokens, updates the row once
per message and calls `pg_notify` once per message with `origin + message id + ':' + last seq`: the
notification is sent at commit, in commit order, to every process listening on the database. Expected
refusals (unknown id, immutable, over the limit) are status codes, not exceptions, so one bad write never
fails the others in its batch.

Content. Rewriting a growing `content` column on every chunk would make each commit cost O(message size),
so the row holds the content as of `content_seq` (a checkpoint) and the chunks after it are read from the
token log; a checkpoint is written every CHECKPOINT_EVERY chunks, and at every override and seal (as on
SQLite). An UPDATE that leaves the TOASTed content alone copies only its pointer.

Text. User text is stored as UTF-8 in `bytea` columns: PostgreSQL's `text` cannot hold U+0000, which the
core accepts, and bytewise order is code point order (Python's), whatever the database's collation.

Wake-ups. One listening connection per process (`LISTEN` on the store's channel) dispatches token
notifications to the subscribed readers and facts to the fact listeners; notifications this process sent
itself are skipped (its readers were handed the tokens directly). When that connection is lost the watcher
polls (`_poll_last_seqs`, `_poll_facts`) with the base class's adaptive delays while the listener
reconnects with backoff; once `LISTEN` is back, one last poll covers what was committed meanwhile and the
watcher parks again.

Facts. Each fact is a row of `quanda_facts` and a notification in the same statement; a fact too large for
a notification payload (under 8,000 bytes) is sent as its id and read from the table. After a lost
connection the table is read from the last settled id, deduplicated by id (a sequence's ids can commit out
of order). Rows older than FACTS_KEPT_S are pruned.

A URL `postgresql://user@host:port/db?schema=name` keeps the tables in schema `name` (created if missing;
default `public`); other query parameters go to asyncpg, which sends unknown ones as server settings
(e.g. `?synchronous_commit=off` trades the last few hundred milliseconds of commits on a crash of the
database server for faster single-writer commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import QuandaError, QuandaImmutableError, QuandaNotFoundError, QuandaStoreError
from ..token import IMMUTABLE, QuandaToken
from .base import MessageRecord, QuandaStore, new_id

try:
    import asyncpg
except ImportError:  # pragma: no cover - the optional extra is not installed
    asyncpg = None

log = logging.getLogger("quanda.store.postgres")

SCHEMA_VERSION = "1"
POOL_MAX = 8
CONNECT_TIMEOUT_S = 10.0
HEARTBEAT_S = 5.0  # the listener pings its connection this often (a silently dead socket is noticed)
RECONNECT_S = (0.05, 5.0)  # the listener's reconnection backoff, doubling
LISTEN_WAIT_S = 2.0  # how long a first fact listener waits for LISTEN to be in effect before relying on polls
MAX_BATCH = 512
CHECKPOINT_EVERY = 64
NOTIFY_BODY_MAX = 7900  # bytes of a fact's inline body; the payload limit is 8,000 bytes in all
FACTS_KEPT_S = 120  # facts older than this are pruned
FACT_SETTLED_S = 10  # a fact row older than this has no uncommitted predecessor still to come
PRUNE_EVERY = 256
_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CLAIM_TAKEN = "QU001"  # SQLSTATE raised by quanda_commit_records when an insert finds its key taken
_STOP = object()

# status codes of quanda_append, one per write
_OK, _NOT_FOUND, _IMMUTABLE, _OVER_LIMIT, _SEALED = 0, 1, 2, 3, 4

_DDL = """
CREATE TABLE IF NOT EXISTS {s}.quanda_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.quanda_messages (
    id text COLLATE "C" PRIMARY KEY,
    role bytea NOT NULL,
    content bytea NOT NULL,
    content_bytes bigint NOT NULL,
    content_seq bigint NOT NULL DEFAULT 0,
    estimate bytea,
    warning bytea NOT NULL DEFAULT '',
    immutable boolean NOT NULL DEFAULT false,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS quanda_messages_created ON {s}.quanda_messages (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS quanda_messages_role ON {s}.quanda_messages (role, immutable);
CREATE TABLE IF NOT EXISTS {s}.quanda_tokens (
    message_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    text bytea NOT NULL,
    estimate bytea,
    PRIMARY KEY (message_id, seq)
);
CREATE TABLE IF NOT EXISTS {s}.quanda_records (
    kind text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    data text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS {s}.quanda_counters (key bytea PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.quanda_facts (
    id bigserial PRIMARY KEY,
    origin text NOT NULL,
    topic bytea NOT NULL,
    data text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION {s}.quanda_append(
    p_channel text, p_origin text, p_ids text[], p_kinds text[], p_texts bytea[], p_estimates bytea[],
    p_max_bytes bigint, p_checkpoint_every bigint, p_now double precision,
    OUT statuses smallint[], OUT vals bigint[])
LANGUAGE plpgsql AS $fn$
-- Appends a batch of tokens, ordered by message id (so rows are locked in id order). Per write: status 0
-- and its seq, 1 unknown message, 2 immutable, 3 over the size limit (and the size), 4 already sealed
-- (an `immutable` write on an immutable message: the existing seal's seq).
DECLARE
    v_n int := coalesce(cardinality(p_ids), 0);
    v_i int := 1;
    v_first int;
    v_id text;
    v_kind text;
    v_last bigint;
    v_start bigint;
    v_sealed boolean;
    v_bytes bigint;
    v_cseq bigint;
    v_size bigint;
    v_content bytea;
    v_content_set boolean;
    v_estimate bytea;
    v_estimate_set boolean;
    v_warning bytea;
    v_warning_set boolean;
    v_checkpoint boolean;
BEGIN
    statuses := array_fill(0::smallint, ARRAY[v_n]);
    vals := array_fill(0::bigint, ARRAY[v_n]);
    WHILE v_i <= v_n LOOP
        v_id := p_ids[v_i];
        v_first := v_i;
        SELECT m.last_seq, m.immutable, m.content_bytes, m.content_seq INTO v_last, v_sealed, v_bytes, v_cseq
          FROM {s}.quanda_messages m WHERE m.id = v_id FOR UPDATE;
        IF NOT FOUND THEN
            WHILE v_i <= v_n AND p_ids[v_i] = v_id LOOP
                statuses[v_i] := 1;
                v_i := v_i + 1;
            END LOOP;
            CONTINUE;
        END IF;
        v_start := v_last;
        v_content_set := false;
        v_estimate_set := false;
        v_warning_set := false;
        WHILE v_i <= v_n AND p_ids[v_i] = v_id LOOP
            v_kind := p_kinds[v_i];
            IF v_sealed THEN
                IF v_kind = 'immutable' THEN
                    statuses[v_i] := 4;
                    vals[v_i] := v_last;
                ELSE
                    statuses[v_i] := 2;
                END IF;
            ELSE
                v_size := CASE v_kind WHEN 'chunk' THEN v_bytes + octet_length(p_texts[v_i])
                                      WHEN 'override' THEN octet_length(p_texts[v_i])
                                      ELSE v_bytes END;
                IF v_size > p_max_bytes THEN
                    statuses[v_i] := 3;
                    vals[v_i] := v_size;
                ELSE
                    v_last := v_last + 1;
                    v_bytes := v_size;
                    vals[v_i] := v_last;
                    IF v_kind = 'chunk' THEN
                        v_estimate := p_estimates[v_i];
                        v_estimate_set := true;
                    ELSIF v_kind = 'override' THEN
                        v_content := p_texts[v_i];
                        v_content_set := true;
                        v_cseq := v_last;
                        v_estimate := NULL;
                        v_estimate_set := true;
                    ELSIF v_kind = 'warning' THEN
                        v_warning := p_texts[v_i];
                        v_warning_set := true;
                    ELSE
                        v_sealed := true;
                        v_estimate := NULL;
                        v_estimate_set := true;
                        v_warning := ''::bytea;
                        v_warning_set := true;
                    END IF;
                END IF;
            END IF;
            v_i := v_i + 1;
        END LOOP;
        IF v_last > v_start THEN
            INSERT INTO {s}.quanda_tokens (message_id, seq, kind, text, estimate)
            SELECT v_id, u.seq, u.kind, u.text, u.estimate
              FROM unnest(vals[v_first:v_i - 1], statuses[v_first:v_i - 1], p_kinds[v_first:v_i - 1],
                          p_texts[v_first:v_i - 1], p_estimates[v_first:v_i - 1])
                   AS u(seq, status, kind, text, estimate)
             WHERE u.status = 0;
            v_checkpoint := v_sealed OR v_last - v_cseq >= p_checkpoint_every;
            UPDATE {s}.quanda_messages m SET
                last_seq = v_last,
                content_bytes = v_bytes,
                immutable = v_sealed,
                updated_at = p_now,
                estimate = CASE WHEN v_estimate_set THEN v_estimate ELSE m.estimate END,
                warning = CASE WHEN v_warning_set THEN v_warning ELSE m.warning END,
                content = CASE
                    WHEN v_checkpoint THEN
                        (CASE WHEN v_content_set THEN v_content ELSE m.content END)
                        || coalesce((SELECT string_agg(t.text, ''::bytea ORDER BY t.seq) FROM {s}.quanda_tokens t
                                      WHERE t.message_id = v_id AND t.seq > v_cseq AND t.kind = 'chunk'), ''::bytea)
                    WHEN v_content_set THEN v_content
                    ELSE m.content END,
                content_seq = CASE WHEN v_checkpoint THEN v_last ELSE v_cseq END
             WHERE m.id = v_id;
            PERFORM pg_notify(p_channel, 'm' || p_origin || v_id || ':' || v_last);
        END IF;
    END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION {s}.quanda_commit_records(
    p_verbs text[], p_kinds text[], p_keys bytea[], p_datas text[], p_now double precision)
RETURNS void LANGUAGE plpgsql AS $fn$
-- One unit of record operations, all in the caller's transaction; an insert whose key exists raises
-- SQLSTATE QU001, which rolls the whole unit back.
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_verbs), 0) LOOP
        IF p_verbs[i] = 'delete' THEN
            DELETE FROM {s}.quanda_records WHERE kind = p_kinds[i] AND key = p_keys[i];
        ELSIF p_verbs[i] = 'put' THEN
            INSERT INTO {s}.quanda_records AS r (kind, key, data, updated_at)
            VALUES (p_kinds[i], p_keys[i], p_datas[i], p_now)
            ON CONFLICT (kind, key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at;
        ELSE
            INSERT INTO {s}.quanda_records (kind, key, data, updated_at)
            VALUES (p_kinds[i], p_keys[i], p_datas[i], p_now) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'record %/% exists', p_kinds[i], p_keys[i] USING ERRCODE = 'QU001';
            END IF;
        END IF;
    END LOOP;
END
$fn$;
"""

_MESSAGE_SELECT = """
SELECT m.id, m.role, m.content, m.estimate, m.warning, m.immutable, m.last_seq, m.created_at, m.updated_at,
       CASE WHEN m.last_seq > m.content_seq THEN
           (SELECT string_agg(t.text, ''::bytea ORDER BY t.seq) FROM {s}.quanda_tokens t
             WHERE t.message_id = m.id AND t.seq > m.content_seq AND t.kind = 'chunk') END AS tail
  FROM {s}.quanda_messages m"""


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


def _record(row: Any) -> MessageRecord:
    content = row["content"] if row["tail"] is None else row["content"] + row["tail"]
    return MessageRecord(row["id"], row["role"].decode("utf-8"), content.decode("utf-8"), _decode(row["estimate"]),
                         row["warning"].decode("utf-8"), row["immutable"], row["last_seq"], row["created_at"],
                         row["updated_at"])


def _prefix_bound(prefix: bytes) -> bytes | None:
    """The smallest byte string above every string that starts with `prefix` (None: there is none)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def split_url(url: str) -> tuple[str, str]:
    """(the DSN for asyncpg, the schema) from `postgresql://…[?schema=name&…]`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    rest = []
    for name, value in query:
        if name == "schema":
            schema = value
        else:
            rest.append((name, value))
    if not _SCHEMA_RE.fullmatch(schema):
        raise QuandaError(f"invalid PostgreSQL schema {schema!r}: letters, digits and _, at most 63")
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _channel(schema: str) -> str:
    name = "quanda" if schema == "public" else f"quanda_{schema}"
    if len(name) > 63:  # NOTIFY channel names are identifiers: at most 63 bytes
        name = "quanda_" + hashlib.sha1(schema.encode()).hexdigest()
    return name


class _NoResetConnection(asyncpg.Connection if asyncpg is not None else object):  # type: ignore[misc]
    """Pool connections never LISTEN, hold session locks or change settings: skip the reset query that
    asyncpg runs on every release (a round trip per pooled call)."""

    def get_reset_query(self) -> str:
        return ""


@dataclass(slots=True)
class _Append:
    message_id: str
    kind: str
    text: str
    estimate: str | None
    future: asyncio.Future


@dataclass(frozen=True, slots=True)
class _Written:
    """A token the batch committed (the writer's readers in this process get it pushed)."""

    token: QuandaToken


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Driver errors become QuandaStoreError, raised from the original."""
    try:
        yield
    except QuandaError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
        raise QuandaStoreError(f"PostgreSQL {what} failed: {type(exc).__name__}: {exc}") from exc


class PostgresStore(QuandaStore):
    _loop: asyncio.AbstractEventLoop  # the event loop the store was opened on

    def __init__(self, url: str, **limits: int):
        super().__init__(**limits)
        if asyncpg is None:
            raise QuandaError("the PostgreSQL store needs asyncpg: pip install -e '.[postgres]'")
        self.url = url
        self._dsn, self.schema = split_url(url)
        self._s = _quote(self.schema)
        self.channel = _channel(self.schema)
        s = self._s
        self._sql_append = (f"SELECT statuses, vals FROM {s}.quanda_append($1, $2, $3::text[], $4::text[], "
                            f"$5::bytea[], $6::bytea[], $7, $8, $9)")
        self._sql_message = _MESSAGE_SELECT.format(s=s)
        self._pool: Any = None
        # the writer task and its connection
        self._queue: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._writer_conn: Any = None
        # the listener: one connection per store (per process), LISTENing on the channel
        self._listener: asyncio.Task | None = None
        self._listener_conn: Any = None
        self._listening = False
        self._listener_gen = 0  # counts the times LISTEN came into effect
        self._listener_up = asyncio.Event()
        self._watch_wake = asyncio.Event()  # wakes a parked watcher: the listener was lost or came back
        self._latest_remote: dict[str, int] = {}  # subscribed message → highest seq another process notified
        # facts
        self._fact_lock = asyncio.Lock()
        self._published = 0
        self._fact_start = 0  # facts with ids up to this were published before anyone here listened
        self._fact_floor = 0  # the poll reads ids above this
        self._facts_seen: dict[int, float] = {}
        self._fact_backlog: deque[tuple[int, str]] = deque()
        self._fact_drainer: asyncio.Task | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def open(self) -> "PostgresStore":
        self._loop = asyncio.get_running_loop()
        try:
            with _translated(f"connecting to {self._safe_url()}"):
                self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=POOL_MAX,
                                                       timeout=CONNECT_TIMEOUT_S, connection_class=_NoResetConnection)
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
        """Create the tables and functions unless this schema has them at this version; several processes
        opening at once are serialised by an advisory lock."""
        lock_key = int.from_bytes(hashlib.sha1(f"quanda:{self.schema}".encode()).digest()[:8], "big", signed=True)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
                exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{self._s}.quanda_meta")
                if exists:
                    version = await conn.fetchval(f"SELECT value FROM {self._s}.quanda_meta WHERE key = 'version'")
                    if version == SCHEMA_VERSION:
                        return
                if self.schema != "public":
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
                await conn.execute(_DDL.format(s=self._s))
                await conn.execute(f"INSERT INTO {self._s}.quanda_meta VALUES ('version', $1) ON CONFLICT (key) "
                                   f"DO UPDATE SET value = EXCLUDED.value", SCHEMA_VERSION)

    async def _close(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._queue.put_nowait(_STOP)  # the writes already queued are committed first
            with contextlib.suppress(Exception):
                await self._writer
        for task in (self._listener, self._fact_drainer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer_conn.close(), CONNECT_TIMEOUT_S)
            self._writer_conn = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), CONNECT_TIMEOUT_S)
            except (Exception, asyncio.TimeoutError):
                self._pool.terminate()
            self._pool = None

    @contextlib.asynccontextmanager
    async def _conn(self, what: str) -> AsyncIterator[Any]:
        """A pooled connection, with driver errors translated."""
        if self._pool is None or self._closed:
            raise QuandaStoreError("the store is closed")
        with _translated(what):
            async with self._pool.acquire() as conn:
                yield conn

    # -- the writer task ------------------------------------------------------------------------------

    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken:
        if self._closed:
            raise QuandaStoreError("the store is closed")
        future = self._loop.create_future()
        self._queue.put_nowait(_Append(message_id, kind, text, estimate, future))
        if self._writer is None or self._writer.done():
            self._writer = self._loop.create_task(self._write_loop())
        return await future

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            item = await queue.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH and not queue.empty():
                item = queue.get_nowait()
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            try:
                outcomes = await self._commit_batch(batch)
            except Exception as exc:  # noqa: BLE001 - whatever broke, no write may wait forever
                log.error("PostgreSQL writer failed a batch", exc_info=exc)
                error = QuandaStoreError(f"PostgreSQL write failed: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                outcomes = [error] * len(batch)
            self._settle(batch, outcomes)
            if stop:
                return

    async def _writer_connection(self) -> Any:
        conn = self._writer_conn
        if conn is None or conn.is_closed():
            with _translated(f"connecting to {self._safe_url()}"):
                conn = self._writer_conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
        return conn

    async def _commit_batch(self, batch: list[_Append]) -> list[Any]:
        """One transaction for the batch. A driver error on a batch of several is retried write by write,
        so only a write that fails alone fails."""
        try:
            return await self._call_append(batch)
        except QuandaStoreError as exc:
            if len(batch) == 1 or not isinstance(exc.__cause__, asyncpg.PostgresError):
                return [exc] * len(batch)
        outcomes: list[Any] = []
        for entry in batch:
            try:
                outcomes.extend(await self._call_append([entry]))
            except QuandaStoreError as exc:
                outcomes.append(exc)
        return outcomes

    async def _call_append(self, batch: list[_Append]) -> list[Any]:
        order = sorted(range(len(batch)), key=lambda j: batch[j].message_id)  # stable: per message, in order
        entries = [batch[j] for j in order]
        conn = await self._writer_connection()
        try:
            with _translated("append"):
                statuses, vals = await conn.fetchrow(
                    self._sql_append, self.channel, self.origin, [e.message_id for e in entries],
                    [e.kind for e in entries], [e.text.encode() for e in entries],
                    [None if e.estimate is None else e.estimate.encode() for e in entries],
                    self.max_message_bytes, CHECKPOINT_EVERY, time.time())
        except QuandaStoreError as exc:
            if not isinstance(exc.__cause__, asyncpg.PostgresError):  # the connection may be gone: renew it
                self._writer_conn = None
                conn.terminate()
            raise
        outcomes: list[Any] = [None] * len(batch)
        for j, entry, status, value in zip(order, entries, statuses, vals):
            outcomes[j] = _Written(QuandaToken(entry.kind, entry.text, entry.estimate, value)) if status == _OK \
                else self._refusal(entry, status, value)
        return outcomes

    def _refusal(self, entry: _Append, status: int, value: int) -> Any:
        """What a write that added no token returns or raises."""
        if status == _SEALED:
            return QuandaToken(IMMUTABLE, "", None, value)
        if status == _NOT_FOUND:
            return QuandaNotFoundError(f"no message with id {entry.message_id!r}")
        if status == _IMMUTABLE:
            return QuandaImmutableError(f"message {entry.message_id} is immutable; nothing was written")
        if status == _OVER_LIMIT:
            return self._over_message_limit(entry.message_id, value)
        return QuandaStoreError(f"PostgreSQL append returned an unknown status {status}")

    def _settle(self, batch: list[_Append], outcomes: list[Any]) -> None:
        """Hand committed tokens to this process's readers, then answer the writers."""
        for entry, outcome in zip(batch, outcomes):
            if isinstance(outcome, _Written):
                self._publish(entry.message_id, [outcome.token])
        for entry, outcome in zip(batch, outcomes):
            if entry.future.done():
                continue
            if isinstance(outcome, _Written):
                entry.future.set_result(outcome.token)
            elif isinstance(outcome, BaseException):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)

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

    # -- records --------------------------------------------------------------------------------------

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

    # -- facts ----------------------------------------------------------------------------------------

    async def _publish_fact(self, topic: str, blob: str) -> None:
        topic_json = json.dumps(topic)  # ASCII, and no U+0000 (a notification payload cannot carry one)
        body = f"{len(topic_json)}:{topic_json}{blob}"
        if len(body.encode("utf-8")) > NOTIFY_BODY_MAX:
            body = ""  # too large for a notification: listeners read it from the table by its id
        async with self._fact_lock:  # one at a time: facts of this process commit in publishing order
            self._published += 1
            async with self._conn("publish") as conn:
                await conn.execute(
                    f"WITH f AS (INSERT INTO {self._s}.quanda_facts (origin, topic, data) VALUES ($1::text, $2, $3) "
                    f"RETURNING id) SELECT pg_notify($4::text, 'f' || $1::text || f.id || ':' || $5::text) FROM f",
                    self.origin, topic.encode(), blob, self.channel, body)
                if self._published % PRUNE_EVERY == 0:
                    await conn.execute(f"DELETE FROM {self._s}.quanda_facts WHERE at < now() - make_interval(secs => $1)",
                                       float(FACTS_KEPT_S))

    async def _start_facts(self) -> None:
        self._ensure_listener()
        try:  # not needed for correctness (the watcher polls from the cursor until LISTEN is in effect)
            await asyncio.wait_for(self._listener_up.wait(), LISTEN_WAIT_S)
        except asyncio.TimeoutError:
            log.warning("PostgreSQL listener not connected yet: facts are polled until it is")
        async with self._conn("listen") as conn:
            self._fact_start = self._fact_floor = await conn.fetchval(
                f"SELECT coalesce(max(id), 0) FROM {self._s}.quanda_facts")

    async def _poll_facts(self) -> list[tuple[str, str]]:
        """Facts of other processes after the floor not yet delivered (a fallback: NOTIFY brings them)."""
        async with self._conn("poll facts") as conn:
            rows = await conn.fetch(
                f"SELECT id, origin, topic, data, at < now() - make_interval(secs => $2) AS settled "
                f"FROM {self._s}.quanda_facts WHERE id > $1 ORDER BY id", self._fact_floor, float(FACT_SETTLED_S))
        facts = []
        for fact_id, origin, topic, data, settled in rows:
            if settled:
                self._fact_floor = fact_id  # an uncommitted fact below a settled one would be stuck for long
            if origin != self.origin and self._first_sight(fact_id):
                facts.append((topic.decode("utf-8"), data))
        return facts

    def _first_sight(self, fact_id: int) -> bool:
        """True the first time a fact id is seen (through a notification or a poll)."""
        if fact_id <= self._fact_start or fact_id in self._facts_seen:
            return False
        now = time.monotonic()
        self._facts_seen[fact_id] = now
        if len(self._facts_seen) % 1024 == 0:
            horizon = now - 2 * FACTS_KEPT_S
            self._facts_seen = {k: t for k, t in self._facts_seen.items() if t > horizon}
        return True

    def _on_fact(self, payload: str) -> None:
        """`f` + origin + id + ':' + body, body = `len(topic JSON)` ':' topic JSON, fact JSON — or empty."""
        if payload[1:25] == self.origin or not self._fact_listeners:
            return
        fact_id, _, body = payload[25:].partition(":")
        if not self._first_sight(int(fact_id)):
            return
        if body and not self._fact_backlog:
            self._remote_facts([_parse_body(body)])
            return
        self._fact_backlog.append((int(fact_id), body))  # behind a fact being read from the table: keep order
        if self._fact_drainer is None or self._fact_drainer.done():
            self._fact_drainer = self._loop.create_task(self._drain_facts())

    async def _drain_facts(self) -> None:
        while self._fact_backlog:
            fact_id, body = self._fact_backlog[0]
            facts = []
            if body:
                facts.append(_parse_body(body))
            else:
                try:
                    async with self._conn("read fact") as conn:
                        row = await conn.fetchrow(f"SELECT topic, data FROM {self._s}.quanda_facts WHERE id = $1",
                                                  fact_id)
                except QuandaError as exc:
                    log.warning("fact %d could not be read: %s", fact_id, exc)
                    row = None
                if row is not None:
                    facts.append((row["topic"].decode("utf-8"), row["data"]))
            self._fact_backlog.popleft()
            self._remote_facts(facts)

    # -- the listener and the watcher -------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        self._ensure_listener()
        super()._ensure_watcher()

    def _ensure_listener(self) -> None:
        if not self._closed and (self._listener is None or self._listener.done()):
            self._listener = asyncio.get_running_loop().create_task(self._listen_loop())

    def _set_listening(self, up: bool) -> None:
        self._listening = up
        if up:
            self._listener_gen += 1
            self._listener_up.set()
        else:
            self._listener_up.clear()
        self._watch_wake.set()

    async def _listen_loop(self) -> None:
        """Keep one connection LISTENing; while it is down, the watcher polls."""
        delay = RECONNECT_S[0]
        while not self._closed:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn: lost.set())
                await conn.add_listener(self.channel, self._on_notify)
                self._listener_conn = conn
                self._set_listening(True)
                delay = RECONNECT_S[0]
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), HEARTBEAT_S)
                    except asyncio.TimeoutError:
                        await conn.execute("SELECT 1", timeout=HEARTBEAT_S)
                if not self._closed:
                    log.warning("PostgreSQL listener connection lost: polling until it is back")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, asyncio.TimeoutError) as exc:
                if not self._closed:
                    log.warning("PostgreSQL listener: %s: %s (polling; reconnecting in %.2fs)",
                                type(exc).__name__, exc, delay)
            finally:
                self._listener_conn = None
                self._set_listening(False)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            if payload.startswith("m"):
                # `m` + origin + message id + ':' + last seq
                if payload[1:25] != self.origin:
                    message_id = payload[25:49]
                    if message_id in self._subscriptions:
                        self._remote_progress({message_id: int(payload[50:])})
            elif payload.startswith("f"):
                self._on_fact(payload)
        except (ValueError, IndexError):
            log.warning("unreadable notification dropped: %.80r", payload)

    def _remote_progress(self, last_seqs: dict[str, int]) -> bool:
        for message_id, last_seq in last_seqs.items():
            if message_id in self._subscriptions and last_seq > self._latest_remote.get(message_id, 0):
                self._latest_remote[message_id] = last_seq
        return super()._remote_progress(last_seqs)

    def _recheck_remote(self, message_id: str) -> None:
        seq = self._latest_remote.get(message_id)
        if seq is not None:
            super()._remote_progress({message_id: seq})

    def _unsubscribe(self, sub: Any) -> None:
        super()._unsubscribe(sub)
        if sub.message_id not in self._subscriptions:
            self._latest_remote.pop(sub.message_id, None)

    async def _watch(self) -> None:
        """Polls only while the listener is down. Once LISTEN is in effect, one more poll covers what was
        committed before it, and the watcher parks until the listener is lost."""
        delay = self.poll_min
        while True:
            if not self._watching:
                self._watcher_exiting = True  # a subscribe() from now on starts a new watcher
                return
            generation = self._listener_gen if self._listening else None
            woke = False
            try:
                if self._subscriptions:
                    changed = await self._poll_last_seqs(list(self._subscriptions))
                    woke = self._remote_progress(changed) if changed else False
                if self._fact_listeners:
                    facts = await self._poll_facts()
                    if facts:
                        self._remote_facts(facts)
                        woke = True
            except QuandaError as exc:
                log.warning("watcher: %s", exc)
                delay = self.poll_max
            if generation is not None and self._listening and generation == self._listener_gen:
                self._watch_wake.clear()
                await self._watch_wake.wait()
                delay = self.poll_min
                continue
            delay = self.next_poll_delay(delay, woke=woke)
            await asyncio.sleep(delay)


def _parse_body(body: str) -> tuple[str, str]:
    length, _, rest = body.partition(":")
    n = int(length)
    return json.loads(rest[:n]), rest[n:]


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)
