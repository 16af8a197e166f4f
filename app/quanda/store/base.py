"""The store interface every backend implements, and what they share: validation, limits and wake-ups.

Backends implement the `_`-prefixed verbs; the public verbs validate their input first, so a bad call
reaches no database. Ids are 24-hex strings (BSON ObjectIds) on every backend.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from ..errors import QuandaError, QuandaLimitError, QuandaNotFoundError, QuandaStoreError
from ..token import IMMUTABLE, KINDS, OVERRIDE, QuandaToken
from ..validation import check_seq, check_text, encode_record
from .subscription import Subscription

log = logging.getLogger("quanda.store")

DEFAULT_MAX_TOKEN_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 16 << 20
_ID_RE = re.compile(r"[0-9a-fA-F]{24}")
_RECORD_KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


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



def new_id() -> str:
    return str(ObjectId())


def check_id(message_id: object) -> str:
    """The canonical form of an id, or QuandaNotFoundError for anything that is not one."""
    if not isinstance(message_id, str) or not _ID_RE.fullmatch(message_id):
        raise QuandaNotFoundError(f"no message with id {message_id!r} (ids are 24 hex characters)")
    return message_id.lower()


def check_record_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _RECORD_KIND_RE.fullmatch(kind):
        raise QuandaError(f"invalid record kind {kind!r}: use lowercase letters, digits and _")
    return kind


def utf8_len(text: str | None) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if text else 0


class QuandaStore(ABC):
    """A backend: messages with their token logs, plus keyed records for higher-level data."""

    #: cross-process watcher: poll interval bounds (seconds), tightened on change, doubled when idle
    poll_min = 0.001
    poll_max = 0.025

    def __init__(self, *, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES):
        self.max_token_bytes = max_token_bytes
        self.max_message_bytes = max_message_bytes
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._watcher: asyncio.Task | None = None
        self._closed = False

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
        again returns its existing `immutable` token and writes nothing."""
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
        return await self._append(message_id, kind, text, estimate)

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

    async def insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        """Store `data` under (kind, key) unless the key exists; True if written. The exactly-once primitive."""
        self._check_open()
        return await self._insert_record(check_record_kind(kind), _check_key(key), _check_data(data))

    async def put_record(self, kind: str, key: str, data: dict[str, Any]) -> None:
        self._check_open()
        await self._put_record(check_record_kind(kind), _check_key(key), _check_data(data))

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        self._check_open()
        return await self._get_record(check_record_kind(kind), _check_key(key))

    async def delete_record(self, kind: str, key: str) -> bool:
        self._check_open()
        return await self._delete_record(check_record_kind(kind), _check_key(key))

    async def list_records(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(key, data) pairs whose key starts with `prefix`, in key order."""
        self._check_open()
        if not isinstance(prefix, str):
            raise TypeError("prefix must be str")
        check_text(prefix, "record key prefix")
        return await self._list_records(check_record_kind(kind), prefix)

    # -- live delivery ------------------------------------------------------------------------------------

    def subscribe(self, message_id: str) -> Subscription:
        """Register before reading a snapshot, so no commit can fall between the two."""
        message_id = check_id(message_id)
        sub = Subscription(message_id, self._unsubscribe)
        self._subscriptions.setdefault(message_id, set()).add(sub)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscriptions.get(sub.message_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscriptions[sub.message_id]

    def _publish(self, message_id: str, tokens: list[QuandaToken]) -> None:
        """Hand tokens this process committed to the local readers (on the event loop)."""
        for sub in self._subscriptions.get(message_id, ()):
            sub.push(tokens)

    def _remote_progress(self, last_seqs: dict[str, int]) -> bool:
        """Mark stale the subscriptions behind the given last seqs; True if any was."""
        woke = False
        for message_id, last_seq in last_seqs.items():
            for sub in self._subscriptions.get(message_id, ()):
                if last_seq > sub.known_seq:
                    sub.mark_stale()
                    woke = True
        return woke

    async def _watch(self) -> None:
        """Adaptive polling for commits by other processes, while anyone subscribes."""
        delay = self.poll_min
        while self._subscriptions and not self._closed:
            try:
                changed = await self._poll_last_seqs(list(self._subscriptions))
            except QuandaError as exc:
                log.warning("watcher: %s", exc)
                changed = None
                delay = self.poll_max
            delay = self.next_poll_delay(delay, woke=bool(changed) and self._remote_progress(changed))
            await asyncio.sleep(delay)

    @classmethod
    def next_poll_delay(cls, delay: float, woke: bool) -> float:
        """Tight while other processes write, doubling up to `poll_max` while they are idle."""
        return cls.poll_min if woke else min(delay * 2, cls.poll_max)

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
    async def _append(self, message_id: str, kind: str, text: str, estimate: str | None) -> QuandaToken: ...

    @abstractmethod
    async def _select_tokens(self, message_id: str, gt: int, limit: int) -> list[QuandaToken]: ...

    @abstractmethod
    async def _select_messages(self, role: str | None, immutable: bool | None,
                               limit: int) -> list[MessageRecord]: ...

    @abstractmethod
    async def _poll_last_seqs(self, message_ids: list[str]) -> dict[str, int] | None:
        """last_seq of the given messages if anything may have changed since the last call, else None."""

    @abstractmethod
    async def _insert_record(self, kind: str, key: str, data: dict[str, Any]) -> bool: ...

    @abstractmethod
    async def _put_record(self, kind: str, key: str, data: dict[str, Any]) -> None: ...

    @abstractmethod
    async def _get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    @abstractmethod
    async def _delete_record(self, kind: str, key: str) -> bool: ...

    @abstractmethod
    async def _list_records(self, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]: ...

    @abstractmethod
    async def _close(self) -> None: ...


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > 200:
        raise QuandaError(f"invalid record key {str(key)[:60]!r}: a non-empty string of at most 200 characters")
    return check_text(key, "record key")


def _check_data(data: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TypeError(f"record data must be a dict, not {type(data).__name__}")
    encode_record(data)  # JSON-serialisable and valid UTF-8 throughout, or QuandaError
    return data
