"""The store interface every backend implements: messages, records, counters and leases, each verb with its
validation (live delivery and the fact bus are in `live.py`, fencing in `fencing.py`).

Backends implement the `_`-prefixed verbs; the public verbs validate their input first, so a bad call
reaches no database. Ids are 24-hex strings (BSON ObjectIds) on every backend. Writes made inside a job
(`fencing.fenced`) carry its fence and are refused once its lease has a newer holder.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

from bson import ObjectId

from ..errors import QuandaError, QuandaLimitError, QuandaStoreError
from ..token import IMMUTABLE, KINDS, OVERRIDE, QuandaToken
from ..validation import check_data, check_id, check_key, check_record_kind, check_seq, check_text, encode_record
from .deadline import DEFAULT_TIMEOUT_S
from .fencing import LEASE_FENCE_KIND, Fence, current_fence
from .live import MAX_FACT_BYTES, FactListener, LiveStore

DEFAULT_MAX_TOKEN_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
RECORD_VERBS = ("insert", "put", "delete")
RecordOp = tuple[str, str, str, "dict[str, Any] | None"]
__all__ = ["FactListener", "Lease", "MAX_FACT_BYTES", "MessageRecord", "QuandaStore", "RecordOp"]


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message's stored state at one moment."""

    id: str
    role: str
    content: str
    estimate: str | None
    warning: str
    immutable: bool
    last_seq: int
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as the database holds it: who has it, with which fence, and how long it has to run by the
    database's clock when it was read (negative: expired)."""

    key: str
    fence: int
    holder: str
    expires_in: float
    data: dict[str, Any]

    @property
    def expired(self) -> bool:
        return self.expires_in < 0


def prefix_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with `prefix` (None: there is none), in code point
    order — which is SQLite's BINARY order of UTF-8 text, PostgreSQL's order of UTF-8 bytes and MongoDB's
    order of strings — so `prefix <= key < bound` is a range scan of the key's index on every backend."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not text: the next code point there is
        last = 0xE000
    return stripped[:-1] + chr(last)


def new_id() -> str:
    return str(ObjectId())


def utf8_len(text: str | None) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if text else 0


class QuandaStore(LiveStore):
    """A backend: messages with their token logs, plus keyed records for higher-level data."""

    #: whether `commit_records` is all-or-nothing (a transaction) on this backend
    atomic_records = True

    def __init__(self, *, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S):
        super().__init__()
        self.max_token_bytes = max_token_bytes
        self.max_message_bytes = max_message_bytes
        self.timeout_s = timeout_s  # every call fails within this when the database does not answer
        self.origin = new_id()  # this process's name on the fact bus (its own facts it delivers directly)

    # -- messages -------------------------------------------------------------------------------------

    async def create_message(self, role: str, content: str = "") -> MessageRecord:
        """A new mutable message; non-empty initial content is logged as an `override` token (seq 1)."""
        self._check_open()
        if not isinstance(role, str) or not isinstance(content, str):
            raise TypeError("role and content must be str")
        if not role or len(role) > 64:
            raise QuandaError("role must be 1 to 64 characters")
        check_text(role, "role")
        check_text(content, "content")
        self._check_token_size(content, None)
        return await self._create_message(role, content, time.time())

    async def get_message(self, message_id: str) -> MessageRecord:
        self._check_open()
        return await self._get_message(check_id(message_id))

    async def append(self, message_id: str, kind: str, text: str = "",
                     estimate: str | None = None) -> QuandaToken:
        """Append one token atomically; returns it with its seq. Making an immutable message immutable
        again returns its existing `immutable` token and writes nothing. Inside a job, the job's fence goes
        with it: QuandaFencedError (nothing written) once a newer lease holder has written the message."""
        self._check_open()
        message_id = check_id(message_id)
        if kind not in KINDS:
            raise QuandaError(f"unknown token kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(text, str):
            raise TypeError(f"token text must be str, not {type(text).__name__}")
        if estimate is not None and not isinstance(estimate, str):
            raise TypeError(f"estimate must be str or None, not {type(estimate).__name__}")
        if kind == IMMUTABLE:
            text, estimate = "", None
        elif kind == OVERRIDE:
            estimate = None
        check_text(text, "token text")
        if estimate is not None:
            check_text(estimate, "estimate")
        self._check_token_size(text, estimate)
        return await self._append(message_id, kind, text, estimate, current_fence())

    async def select_tokens(self, message_id: str, gt: int = 0, limit: int = 1000) -> list[QuandaToken]:
        """Tokens with seq > gt, in seq order, at most `limit`."""
        self._check_open()
        message_id = check_id(message_id)
        gt = check_seq(gt, "gt")
        limit = check_seq(limit, "limit")
        return await self._select_tokens(message_id, gt, max(1, limit))

    async def select_messages(self, *, role: str | None = None, immutable: bool | None = None,
                              limit: int = 1000) -> list[MessageRecord]:
        """Messages (newest first) filtered by role and mutability."""
        self._check_open()
        return await self._select_messages(role, immutable, limit)

    def _check_open(self) -> None:
        if self._closed:
            raise QuandaStoreError("the store is closed")

    def _check_token_size(self, text: str, estimate: str | None) -> None:
        size = utf8_len(text) + utf8_len(estimate)
        if size > self.max_token_bytes:
            raise QuandaLimitError(
                f"token of {size} bytes is over the {self.max_token_bytes}-byte limit; nothing was written")

    def _over_message_limit(self, message_id: str, size: int) -> QuandaLimitError:
        return QuandaLimitError(f"message {message_id} would grow to {size} bytes, over its "
                                f"{self.max_message_bytes}-byte limit; nothing was written")

    # -- records: conversations, todos, plugin state ------------------------------------------------------
    # Inside a job (`fencing.fenced`), every write also checks the job's lease in the same unit.

    async def insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        """Store `data` under (kind, key) unless the key exists; True if written. The exactly-once primitive."""
        self._check_open()
        op = ("insert", check_record_kind(kind), check_key(key), check_data(data))
        if current_fence() is not None:
            return await self._commit_fenced([op])
        return await self._insert_record(*op[1:])

    async def put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        self._check_open()
        op = ("put", check_record_kind(kind), check_key(key), check_data(data))
        if current_fence() is not None:
            await self._commit_fenced([op])
        else:
            await self._put_record(*op[1:])

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        self._check_open()
        return await self._get_record(check_record_kind(kind), check_key(key))

    async def delete_record(self, kind: str, key: str) -> bool:
        """Delete the record; whether it was there (inside a job: True, the unit does not count)."""
        self._check_open()
        kind, key = check_record_kind(kind), check_key(key)
        if current_fence() is not None:
            return await self._commit_fenced([("delete", kind, key, None)])
        return await self._delete_record(kind, key)

    async def list_records(self, kind: str, prefix: str = "", *, limit: int | None = None, last: bool = False,
                           after: str | None = None, before: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(key, data) pairs whose key starts with `prefix` (and is above `after`, below `before`), in key
        order; with `limit`, the first `limit` of them — or with `last`, the last `limit`, still in key order.
        A range scan of the key on every backend: it reads what it returns."""
        self._check_open()
        for name, value in (("prefix", prefix), ("after", after), ("before", before)):
            if value is not None:
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be str")
                check_text(value, f"record key {name}")
        if limit is not None:
            limit = max(1, check_seq(limit, "limit"))
        return await self._list_records(check_record_kind(kind), prefix, limit=limit, last=last, after=after,
                                        before=before)

    async def list_last_records(self, kind: str, prefix: str, count: int) -> list[tuple[str, dict[str, Any]]]:
        """The last `count` records whose key starts with `prefix`, in key order (reading `count`, not all):
        `list_records(kind, prefix, limit=count, last=True)`."""
        self._check_open()
        if not isinstance(prefix, str) or not isinstance(count, int) or count < 1:
            raise TypeError("prefix must be str and count a positive int")
        check_text(prefix, "record key prefix")
        return await self._list_records(check_record_kind(kind), prefix, limit=count, last=True)

    async def delete_messages(self, message_ids: Sequence[str]) -> int:
        """Delete messages with their tokens (a deleted conversation's; none may still be written). Unknown
        ids are skipped; returns how many were deleted."""
        self._check_open()
        return await self._delete_messages(sorted({check_id(m) for m in message_ids}))

    async def commit_records(self, ops: Sequence[RecordOp]) -> bool:
        """Apply record operations as one unit: `("insert", kind, key, data)` (insert-if-absent),
        `("put", kind, key, data)`, `("delete", kind, key, None)`. An insert whose key exists rejects the
        unit and the call returns False. SQLite and PostgreSQL run the unit in one transaction (taking the
        records' row locks in (kind, key) order, so that two units never deadlock): all or nothing. MongoDB
        runs it in a transaction where it has them (a replica set, `atomic_records`); without, it applies the
        ops in order and stops at a rejected insert (earlier ops stay), so put the claim first and make the
        rest idempotent (puts of whole values, deletes)."""
        self._check_open()
        checked: list[RecordOp] = []
        for op in ops:
            if not isinstance(op, tuple) or len(op) != 4 or op[0] not in RECORD_VERBS:
                raise QuandaError(f"a record op is (verb, kind, key, data) with verb in {RECORD_VERBS}, not {op!r:.80}")
            verb, kind, key, data = op
            checked.append((verb, check_record_kind(kind), check_key(key),
                            None if verb == "delete" else check_data(data)))
        if not checked:
            return True
        if current_fence() is not None:
            return await self._commit_fenced(checked)
        return await self._commit_records(checked)

    async def _commit_fenced(self, ops: list[RecordOp]) -> bool:
        """The unit, refused as a whole (QuandaFencedError) unless the job's lease still has its fence."""
        fence = current_fence()
        check = ("check", LEASE_FENCE_KIND, fence.lease_key, {"fence": fence.fence})
        return await self._commit_records([check, *ops])

    async def bump_counter(self, key: str) -> int:
        """Atomically add one to the counter `key` (starting at 0) and return the new value."""
        self._check_open()
        return await self._bump_counter(check_key(key))

    # -- leases: who runs a job, decided on the database's clock ------------------------------------------

    async def acquire_lease(self, key: str, holder: str, ttl_s: float, data: dict[str, Any]) -> Lease | None:
        """Take the lease `key` for `holder` for `ttl_s` seconds of the database's clock, with a fence higher
        than any lease's before, unless someone holds it and it has not expired (None). Free, released and
        expired leases are taken: of several takers at once, one gets it."""
        self._check_open()
        return await self._acquire_lease(check_key(key), _check_holder(holder), _check_ttl(ttl_s),
                                         encode_record(check_data(data)))

    async def renew_lease(self, key: str, fence: int, ttl_s: float) -> bool:
        """Make the lease run `ttl_s` seconds from now (the database's clock) if it still has this fence —
        even if it expired meanwhile, as long as nobody took it; False when it is lost."""
        self._check_open()
        return await self._renew_lease(check_key(key), check_seq(fence, "fence"), _check_ttl(ttl_s))

    async def release_lease(self, key: str, fence: int) -> bool:
        """Give the lease up if it still has this fence; False when it was not (any longer) ours."""
        self._check_open()
        return await self._release_lease(check_key(key), check_seq(fence, "fence"))

    async def get_lease(self, key: str) -> Lease | None:
        self._check_open()
        return await self._get_lease(check_key(key))

    async def expired_leases(self, limit: int = 100) -> list[Lease]:
        """Leases whose time ran out on the database's clock (their holders died, or stalled), oldest first."""
        self._check_open()
        return await self._expired_leases(max(1, check_seq(limit, "limit")))

    # -- lifecycle ----------------------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
        await self._close()

    async def __aenter__(self) -> "QuandaStore":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what a backend implements ------------------------------------------------------------------------

    @abstractmethod
    async def _create_message(self, role: str, content: str, now: float) -> MessageRecord: ...

    @abstractmethod
    async def _get_message(self, message_id: str) -> MessageRecord: ...

    @abstractmethod
    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None,
                      fence: Fence | None) -> QuandaToken:
        """With a fence (a job's write): refused (QuandaFencedError, nothing written) unless the job's lease
        still has it — checked in the append's transaction on SQLite and PostgreSQL — and unless the message
        was written by no higher fence; the message then remembers it."""

    @abstractmethod
    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]: ...

    @abstractmethod
    async def _select_messages(self, role: str | None, immutable: bool | None,
                               limit: int) -> list[MessageRecord]: ...

    @abstractmethod
    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool: ...

    @abstractmethod
    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def _delete_record(self, kind: str, key: str) -> bool: ...

    @abstractmethod
    async def _list_records(self, kind: str, prefix: str, *, limit: int | None = None, last: bool = False,
                            after: str | None = None, before: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        ...

    @abstractmethod
    async def _delete_messages(self, message_ids: list[str]) -> int: ...

    @abstractmethod
    async def _commit_records(self, ops: list[RecordOp]) -> bool:
        """The unit; a leading ("check", "lease", key, {"fence": n}) op refuses it (QuandaFencedError) unless the
        lease `key` has that fence, checked in the same transaction."""

    @abstractmethod
    async def _acquire_lease(self, key: str, holder: str, ttl_s: float, data: str) -> Lease | None: ...

    @abstractmethod
    async def _renew_lease(self, key: str, fence: int, ttl_s: float) -> bool: ...

    @abstractmethod
    async def _release_lease(self, key: str, fence: int) -> bool: ...

    @abstractmethod
    async def _get_lease(self, key: str) -> Lease | None: ...

    @abstractmethod
    async def _expired_leases(self, limit: int) -> list[Lease]: ...

    @abstractmethod
    async def _bump_counter(self, key: str) -> int: ...

    @abstractmethod
    async def _close(self) -> None: ...


def _check_holder(holder: object) -> str:
    if not isinstance(holder, str) or not 1 <= len(holder) <= 64:
        raise QuandaError("a lease holder is a string of 1 to 64 characters")
    return check_text(holder, "lease holder")


def _check_ttl(ttl_s: object) -> float:
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not math.isfinite(ttl_s) or \
            not 0 < ttl_s <= 86400:
        raise QuandaError(f"a lease runs for more than 0 and at most 86,400 seconds, not {ttl_s!r:.40}")
    return float(ttl_s)
