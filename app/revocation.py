"""Revocation that reaches what is open: every WebSocket and event stream is watched with the credential it was
let in with, and closed, with the reason, once that credential is no longer valid — on every server.

Whoever revokes something (a server at logout; the command line, in a process of its own, for `users passwd`,
`users remove`, `users disable`, `tokens revoke`) stores the change, then publishes the fact REVOKED
{"owner", "reason"} through the store (app/accounts.py). Every server hears it within its bus's latency
(PostgreSQL NOTIFY, SQLite's data_version poll, MongoDB's poll: milliseconds) and checks the credential of
each connection of that owner it has open: those no longer valid are closed and told the reason ("signed
out: your password was changed"); the others — another session, a token when the password changed — stay.
The store stays the truth: a fact lost on the way (a server's listener reconnecting at that moment) is made
up for by checking every open connection again every RECHECK_S, and a connection let in just before a
revocation that arrives just after is checked when it is registered.

A WebSocket is closed with code 1008 and the reason (the page shows it and does not reconnect); an event
stream ends with the event `signed-out` (`data: {"reason": …}`; an AG-UI run with RUN_ERROR, code
`signed_out`) and a reconnect gets 401.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from contextlib import aclosing
from typing import Any, AsyncIterator, Callable

from quanda import metrics
from quanda.access import LOGIN_KEY
from quanda.accounts import REVOKED, Accounts, Credential, token_id
from quanda.core import QuandaError

log = logging.getLogger("quanda.revocation")

RECHECK_S = 30.0  # every open connection's credential is checked again this often, whatever was heard
RECENT_S = 10.0  # a connection registered this soon after a revocation of its owner is checked at once
SIGNED_OUT_EVENT = "signed-out"
SESSION_ENDED = "signed out: your session ended"

OnRevoked = Callable[[str], None]


class Revocations:
    """This server's open connections by owner, each with its credential and what to do when it is revoked."""

    def __init__(self, store: Any, accounts: Accounts, recheck_s: float = RECHECK_S):
        self.store, self.accounts, self.recheck_s = store, accounts, recheck_s
        self._watches: dict[str, dict[int, tuple[Credential, OnRevoked]]] = {}
        self._ids = itertools.count()
        self._recent: dict[str, tuple[float, str]] = {}  # owner -> (when, reason) of the last revocation heard
        self._tasks: set[asyncio.Task] = set()
        self._stop_listening: Callable[[], None] | None = None

    async def open(self) -> None:
        self._stop_listening = await self.store.listen(self._on_fact)
        self._spawn(self._recheck_forever())

    async def close(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def watch(self, owner: str, credential: Credential, on_revoked: OnRevoked) -> Callable[[], None]:
        """Call `on_revoked(reason)` once when `credential` no longer lets its holder act for `owner`; returns
        the function that stops watching (the connection closed)."""
        key = next(self._ids)
        self._watches.setdefault(owner, {})[key] = (credential, on_revoked)
        recent = self._recent.get(owner)
        if recent is not None and time.monotonic() - recent[0] < RECENT_S:
            self._spawn(self._check(owner, recent[1]))

        def unwatch() -> None:
            watches = self._watches.get(owner)
            if watches is not None:
                watches.pop(key, None)
                if not watches:
                    del self._watches[owner]
        return unwatch

    def open_count(self, owner: str) -> int:
        return len(self._watches.get(owner, ()))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_fact(self, topic: str, fact: dict) -> None:
        owner = fact.get("owner") if topic == REVOKED else None
        if not isinstance(owner, str):
            return
        reason = fact.get("reason") if isinstance(fact.get("reason"), str) else SESSION_ENDED
        now = time.monotonic()
        self._recent = {o: r for o, r in self._recent.items() if now - r[0] < RECENT_S}
        self._recent[owner] = (now, reason[:120])
        if owner in self._watches:
            self._spawn(self._check(owner, reason[:120]))

    async def _check(self, owner: str, reason: str) -> int:
        """Close what `owner` has open here with a credential no longer valid; how many were closed."""
        valid: dict[Credential, bool] = {}
        closed = 0
        for key, (credential, on_revoked) in list(self._watches.get(owner, {}).items()):
            if credential not in valid:
                try:
                    valid[credential] = await self.accounts.credential_valid(owner, credential)
                except QuandaError as exc:  # the database is away: nobody is signed out for that
                    log.warning("could not check the credentials of %s: %s", owner[:8], exc)
                    return closed
            if not valid[credential] and self._watches.get(owner, {}).pop(key, None) is not None:
                closed += 1
                try:
                    on_revoked(reason)
                except Exception:  # noqa: BLE001 - one connection's failure must not keep the others open
                    log.exception("closing a revoked connection failed")
        if closed:
            log.info("closed %d connection(s) of %s: %s", closed, owner[:8], reason)
            metrics.REVOKED.inc(closed)
        if not self._watches.get(owner, True):
            self._watches.pop(owner, None)
        return closed

    async def _recheck_forever(self) -> None:
        while True:
            await asyncio.sleep(self.recheck_s)
            for owner in list(self._watches):
                await self._check(owner, SESSION_ENDED)


def request_credential(request: Any) -> Credential | None:
    """What an HTTP request was let in with, in accounts mode (local mode has nothing to revoke)."""
    if not request.app.state.ctx.settings.accounts:
        return None
    authorization = request.headers.get("authorization", "")
    if authorization:
        found = token_id(authorization[7:].strip()) if authorization.startswith("Bearer ") else None
        return ("token", found) if found else None
    login = (request.scope.get("session") or {}).get(LOGIN_KEY)
    return ("login", login) if isinstance(login, str) else None


def signed_out_event(reason: str) -> str:
    return f"event: {SIGNED_OUT_EVENT}\ndata: {json.dumps({'reason': reason})}\n\n"


async def revocable(request: Any, owner: str, events: AsyncIterator[str], backlog: int = 16,
                    farewell: Callable[[str], str] = signed_out_event) -> AsyncIterator[str]:
    """An event stream's text, ended by `farewell(reason)` (a `signed-out` event, or what the stream's own
    protocol says instead) as soon as the credential it was opened with is revoked (the stream's own reading
    is cancelled at once, wherever it waits)."""
    revocations: Revocations | None = getattr(request.app.state, "revocations", None)
    credential = request_credential(request)
    if revocations is None or credential is None:
        async with aclosing(events) as same:
            async for text in same:
                yield text
        return
    queue: asyncio.Queue = asyncio.Queue(maxsize=backlog)
    end = object()
    reason: list[str] = []

    async def pump() -> None:
        try:
            async with aclosing(events) as source:
                async for text in source:
                    await queue.put(text)
        except Exception as exc:  # noqa: BLE001 - handed to the response, which raises it
            await queue.put(exc)
        await queue.put(end)

    task = asyncio.create_task(pump(), name="event-stream")

    def on_revoked(why: str) -> None:
        reason.append(why)
        task.cancel()
        while not queue.empty():  # what was not sent yet is not sent: the reader's access ended
            queue.get_nowait()
        queue.put_nowait(end)

    unwatch = revocations.watch(owner, credential, on_revoked)
    try:
        while (item := await queue.get()) is not end:
            if isinstance(item, Exception):
                raise item
            yield item
        if reason:
            yield farewell(reason[0])
    finally:
        unwatch()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
