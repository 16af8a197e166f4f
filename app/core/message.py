"""QuandaMessage: a handle on one stored message and the state last read from the store."""

from __future__ import annotations

from .replay import MessageState
from .store.base import MessageRecord, QuandaStore


class QuandaMessage:
    """Create or load a message; `refresh()` re-reads its state. Writing goes through `QuandaWriter`,
    following through `QuandaReader`."""

    def __init__(self, store: QuandaStore, record: MessageRecord):
        self.store = store
        self._record = record

    @classmethod
    async def create(cls, store: QuandaStore, role: str, content: str = "") -> "QuandaMessage":
        return cls(store, await store.create_message(role, content))

    @classmethod
    async def from_id(cls, store: QuandaStore, message_id: str) -> "QuandaMessage":
        return cls(store, await store.get_message(message_id))

    async def refresh(self) -> "QuandaMessage":
        self._record = await self.store.get_message(self.id)
        return self

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def role(self) -> str:
        return self._record.role

    @property
    def content(self) -> str:
        return self._record.content

    @property
    def estimate(self) -> str | None:
        return self._record.estimate

    @property
    def warning(self) -> str:
        return self._record.warning

    @property
    def immutable(self) -> bool:
        return self._record.immutable

    @property
    def last_seq(self) -> int:
        return self._record.last_seq

    @property
    def created_at(self) -> float:
        return self._record.created_at

    @property
    def state(self) -> MessageState:
        r = self._record
        return MessageState(r.content, r.estimate, r.warning, r.immutable, r.last_seq)

    @property
    def display(self) -> str:
        return self.state.display

    def __str__(self) -> str:
        return str(self.state)

    def __repr__(self) -> str:
        return f"QuandaMessage(id={self.id!r}, role={self.role!r}, last_seq={self.last_seq}, immutable={self.immutable})"
