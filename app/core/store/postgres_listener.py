"""Wake-ups from other processes on PostgreSQL, mixed into `PostgresStore`: one listening connection,
polling only while it is down.

One listening connection per process (`LISTEN` on the store's channel) dispatches token notifications to
the subscribed readers and facts to the fact listeners (`postgres_facts.py`); notifications this process
sent itself are skipped (its readers were handed the tokens directly). When that connection is lost the
watcher polls (`_poll_last_seqs`, `_poll_facts`) with the base class's adaptive delays while the listener
reconnects with backoff; once `LISTEN` is back, one last poll covers what was committed meanwhile and the
watcher parks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..errors import QuandaError
from .base import QuandaStore
from .postgres_client import DRIVER_ERRORS, asyncpg, keep_alive

log = logging.getLogger("quanda.store.postgres")

HEARTBEAT_S = 2.0  # the listener pings its connection this often (a silently dead socket is noticed)
RECONNECT_S = (0.05, 5.0)  # the listener's reconnection backoff, doubling


class PostgresListener(QuandaStore):
    """The listener and the watcher for `PostgresStore` (see the module docstring)."""

    _listen_dsn: str  # PostgresStore's: the database server itself (never PgBouncer in transaction mode)
    channel: str
    _on_fact: Callable[[str], None]  # PostgresFacts'

    def __init__(self, **limits: int) -> None:
        super().__init__(**limits)
        # one connection per store (per process), LISTENing on the channel
        self._listener: asyncio.Task | None = None
        self._listener_conn: Any = None
        self._listening = False
        self._listener_gen = 0  # counts the times LISTEN came into effect
        self._listener_up = asyncio.Event()
        self._watch_wake = asyncio.Event()  # wakes a parked watcher: the listener was lost or came back
        self._latest_remote: dict[str, int] = {}  # subscribed message → highest seq another process notified

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
            timeout = self.timeout_s
            try:
                async with asyncio.timeout(timeout):
                    conn = await asyncpg.connect(self._listen_dsn, timeout=timeout, command_timeout=timeout)
                    keep_alive(conn, timeout)
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
                        async with asyncio.timeout(timeout):  # a silent network: no answer, no error either
                            await conn.execute("SELECT 1")
                if not self._closed:
                    log.warning("PostgreSQL listener connection lost: polling until it is back")
            except DRIVER_ERRORS as exc:
                if not self._closed:
                    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                        problem = f"PostgreSQL did not answer the listener within {timeout:g} s"
                    else:
                        problem = f"PostgreSQL listener: {type(exc).__name__}: {exc}"
                    log.warning("%s (polling; reconnecting in %.2fs)", problem, delay)
                    self._trouble(problem)
            finally:
                self._listener_conn = None
                self._set_listening(False)
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            if self._closed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    def _on_notify(self, _conn: Any, _pid: int, channel_name: str, payload: str) -> None:
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
                woke = await self._poll_once()
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
