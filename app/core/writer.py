"""QuandaWriter: appends tokens to one message. Any number of writers may share a message."""

from __future__ import annotations

import asyncio
from collections import deque

from .errors import QuandaError
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


class ChunkStream:
    """Text appended as fast as the store commits it, for a producer that should not wait on each token (an
    LLM stream): a piece is written at once unless a chunk went less than `MIN_INTERVAL_S` ago or a write is
    in flight; meanwhile later pieces gather and go together as the next chunk. At low rates every piece is
    its own chunk; at high rates a chunk holds what came in `MIN_INTERVAL_S`, so the work per chunk (a commit,
    waking every reader, a view's update) is paid a few hundred times a second, not once per token, for a
    delay well under a display frame. `add` is O(1); `flush()` waits until everything added is written,
    raising the first write error (after one, later pieces are dropped)."""

    MAX_CHUNK_CHARS = 64 * 1024
    #: the shortest time between two chunks (seconds); a quarter of a 60 Hz frame
    MIN_INTERVAL_S = 0.004

    def __init__(self, writer: QuandaWriter):
        self.writer = writer
        self._pending: deque[str] = deque()
        self._size = 0
        self._task: asyncio.Task | None = None
        self._error: QuandaError | None = None
        self._last = float("-inf")  # when the last chunk was handed to the store (loop time)

    def add(self, text: str) -> None:
        if self._error is not None:
            raise self._error
        if text:
            self._pending.append(text)
            self._size += len(text)
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            wait = self._last + self.MIN_INTERVAL_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            parts, size = [], 0
            while self._pending and (not parts or size + len(self._pending[0]) <= self.MAX_CHUNK_CHARS):
                size += len(self._pending[0])
                parts.append(self._pending.popleft())
            self._size -= size
            self._last = loop.time()
            try:
                await self.writer.chunk("".join(parts))
            except QuandaError as exc:
                self._error = exc
                self._pending.clear()
                return

    async def flush(self) -> None:
        """Until every piece added so far is written (a cancelled caller still lets the writes finish)."""
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._error is not None:
            raise self._error
