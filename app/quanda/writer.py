"""QuandaWriter: appends tokens to one message. Any number of writers may share a message."""

from __future__ import annotations

from .message import QuandaMessage
from .store.base import QuandaStore
from .token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken


class QuandaWriter:
    def __init__(self, message: QuandaMessage):
        self.store = message.store
        self.message_id = message.id

    @classmethod
    async def from_id(cls, store: QuandaStore, message_id: str) -> "QuandaWriter":
        return cls(await QuandaMessage.from_id(store, message_id))

    async def chunk(self, text: str, estimate: str | None = None) -> QuandaToken:
        """Append text; `estimate` is the transient suffix shown after the content until the next token."""
        return await self.store.append(self.message_id, CHUNK, text, estimate)

    async def override(self, text: str) -> QuandaToken:
        """Replace the whole content (and clear the estimate)."""
        return await self.store.append(self.message_id, OVERRIDE, text)

    async def warning(self, text: str) -> QuandaToken:
        """Set the warning shown with a mutable message ("" clears it)."""
        return await self.store.append(self.message_id, WARNING, text)

    async def make_immutable(self) -> QuandaToken:
        """Seal the message: later writes raise QuandaImmutableError. Idempotent."""
        return await self.store.append(self.message_id, IMMUTABLE)
