"""An answer's turn at the LLM server, across every app server that shares it.

Within one process the driver's gate (app/llm/gate.py) makes answers to a server that serves one request at
a time take turns, and keeps every other request of the process (status checks, model listings) away from
it while one streams. Several app servers on one database may share one LLM server too: then the turn is
also a lease in the store (record kind "llm_turn", keyed by the server's URL, naming the app server and
until when it holds it; renewed every third of QUANDA_JOB_LEASE_S while the answer streams, deleted when
it ends). Another app server's answer waits for it, its status checks say "busy answering" instead of
asking, and a lease whose holder died expires. For a server known to serve several requests at once no
lease is taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from quanda.core import QuandaError
from quanda.context import Handle

log = logging.getLogger("quanda.chat.turns")

KIND = "llm_turn"
WAITING = ("waiting for the LLM server: it answers one question at a time and is answering another one "
           "(this answer starts as soon as it is done)")


async def held_elsewhere(store, llm) -> bool:
    """Whether another app server holds a turn at this LLM server now (a lease not expired)."""
    gate = getattr(llm, "gate", None)
    if gate is None or not gate.one_at_a_time:
        return False
    try:
        lease = await store.get_record(KIND, llm.base_url)
    except QuandaError:
        return False
    return bool(lease) and lease.get("until", 0) > time.time() and lease.get("server") != store.origin


@asynccontextmanager
async def turn(h: Handle, on_wait: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """The answer's turn: `on_wait` is awaited first when it has to wait for another answer."""
    llm, store, lease_s = h.ctx.llm, h.store, h.settings.job_lease_s
    if llm.gate.would_wait() or await held_elsewhere(store, llm):
        await on_wait()
    async with llm.gate.turn():
        renewing = await _take(store, llm, lease_s) if llm.gate.one_at_a_time else None
        try:
            async with llm.turn():  # the first turn finds out what kind of server it is
                if renewing is not None and not llm.gate.one_at_a_time:  # it serves several: no lease needed
                    renewing = await _give_back(store, llm, renewing)
                yield
        finally:
            if renewing is not None:
                await _give_back(store, llm, renewing)


async def _take(store, llm, lease_s: float) -> asyncio.Task:
    """Wait until this app server holds the lease; returns the task that renews it."""
    key, delay = llm.base_url, 0.05
    while True:
        now = time.time()
        if await store.insert_record(KIND, key, {"server": store.origin, "until": now + lease_s}):
            break
        lease = await store.get_record(KIND, key)
        if lease is not None and lease.get("until", 0) < now:  # its app server died holding it
            log.warning("the turn at %s held by %s expired: taken over", key, lease.get("server"))
            await store.delete_record(KIND, key)
            continue
        if lease is not None:
            await asyncio.sleep(delay)  # another app server's answer streams: poll until it ends
            delay = min(delay * 2, 0.5)
    return asyncio.create_task(_renew(store, key, lease_s), name=f"llm-turn-{key}")


async def _renew(store, key: str, lease_s: float) -> None:
    while True:
        await asyncio.sleep(lease_s / 3)
        try:
            await store.put_record(KIND, key, {"server": store.origin, "until": time.time() + lease_s})
        except QuandaError as exc:
            log.warning("could not renew the turn at %s: %s", key, exc)


async def _give_back(store, llm, renewing: asyncio.Task) -> None:
    renewing.cancel()
    with suppress(asyncio.CancelledError):
        await renewing
    try:
        await store.delete_record(KIND, llm.base_url)
    except QuandaError as exc:  # it expires on its own
        log.warning("could not give back the turn at %s: %s", llm.base_url, exc)
    return None
