"""When a request may be sent to an LLM server: `LLMGate`.

Some servers run one request at a time and end the answer that is streaming as soon as any other request
arrives (llama-cpp-python's server, `--interrupt_requests` on by default: a `GET /v1/models` from a status
badge cuts the answer). For such a server — and for one not known yet — answers take **turns**: one streams,
the next waits for it; and while an answer streams, no other request of this process goes to the server
(status checks, model listings, capability questions get `LLMBusy` instead), except those the answer makes
itself inside its turn (counting tokens before its request). A server known to serve several requests at
once (llama.cpp's `llama-server`, Ollama, vLLM) gets its requests whenever they come.

Within one process this gate is the whole story; several app servers sharing one LLM also take a lease in
the store (the chat's `turns` module).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .base import LLMUnavailable


class LLMBusy(LLMUnavailable):
    """The server is answering and would end that answer if asked anything else now (an `LLMUnavailable`
    for the moment: code that copes with an unreachable server copes with this)."""


class LLMGate:
    """Turns for answers, and whether a side request may go out now.

    ``exclusive``: True when the server serves one request at a time (and cuts a running answer at any
    other request), False when it serves several, None while unknown (treated as True)."""

    def __init__(self, exclusive: bool | None = None) -> None:
        self.exclusive = exclusive
        self._streams = 0
        self._lock: asyncio.Lock | None = None
        self._holders: set[asyncio.Task] = set()  # the tasks inside a turn (one, for a one-at-a-time server)

    @property
    def one_at_a_time(self) -> bool:
        return self.exclusive is not False

    @property
    def busy(self) -> bool:
        """Whether an answer streams and the server cannot take another request meanwhile."""
        return self._streams > 0 and self.one_at_a_time

    def holding(self) -> bool:
        """Whether the running code is inside a turn of this gate (tasks it starts are not)."""
        return asyncio.current_task() in self._holders

    def may_send(self) -> bool:
        """Whether a side request may go to the server now."""
        return not self.busy or self.holding()

    def would_wait(self) -> bool:
        """Whether a turn asked for now would wait for another answer."""
        return self.one_at_a_time and self._lock is not None and self._lock.locked()

    def learned_exclusive(self) -> None:
        """The server cut an answer: from now on it is asked one request at a time."""
        self.exclusive = True

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One answer's turn (re-entrant: a turn inside a turn is the same turn)."""
        if self.holding():
            yield
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock if self.one_at_a_time else None
        if lock is not None:
            await lock.acquire()
        task = asyncio.current_task()
        assert task is not None
        self._holders.add(task)
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1
            self._holders.discard(task)
            if lock is not None:
                lock.release()
