"""Is the store working? One answer per server, kept up to date.

A failure of the store that anyone here meets — a job writing an answer, a tab's action, a lease renewal,
`/-/health` — marks it down (`failed`), and every listener hears it once: the hub tells every tab on this
server that the database is unavailable. Every store call has a deadline (`QUANDA_DB_TIMEOUT_S`), so a
database that went silent fails the next call within it; when nobody calls, the store's own background work
(PostgreSQL's listener pings its connection every 2 s) reports trouble, and a round trip checks at once
(`suspect`): a blackholed PostgreSQL is told to every tab within about 2 s + twice the deadline. From then on a probe writes a record and reads it back every
PROBE_EVERY_S until that works again; the listeners then hear that it is back (the tabs are told so), and
the jobs cut short meanwhile are marked by the usual lease expiry (app/jobs.py), so Retry is offered.
Nothing polls the store while it works.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from typing import Any, Awaitable, Callable

from quanda.core import QuandaTimeoutError

log = logging.getLogger("quanda.health")

PROBE_EVERY_S = 1.0
Listener = Callable[[bool], "Awaitable[None] | None"]


async def store_round_trip(store: Any) -> str | None:
    """None when a record written to the store reads back the same, else what went wrong (details logged)."""
    probe = {"at": time.time(), "nonce": secrets.token_hex(8)}
    timeout = getattr(store, "timeout_s", 5.0)
    try:  # every store call has its deadline; the guard is for a store that would not keep it
        await asyncio.wait_for(store.put_record("health", store.origin, probe), timeout + 1)
        if await asyncio.wait_for(store.get_record("health", store.origin), timeout + 1) != probe:
            return "the database did not return what was written to it"
    except (asyncio.TimeoutError, QuandaTimeoutError) as exc:
        log.error("health: the store did not answer within %g s: %s", timeout, exc)
        return f"the database did not answer within {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure makes the app unhealthy; the detail goes to the log
        log.error("health: store round trip failed: %r", exc)
        return "the database does not accept writes"
    return None


_CAUSES = (  # what a failure's text says of its cause -> how a user is told (never the driver's own words)
    (("disk is full", "no space left", "enospc"), "its disk is full"),
    (("readonly", "read-only", "read only", "disk i/o error", "permission denied"), "it does not accept writes"),
    (("connection refused", "connect call failed", "connection was closed", "connection reset", "cannotconnectnow",
      "server closed", "connectiondoesnotexist", "serverselectiontimeout", "cannot reach"),
     "the connection to it was refused or lost"),
)


def user_reason(problem: object, timeout_s: float) -> str:
    """Why the database is unavailable, as a user may be told (our own words, not the driver's)."""
    text = str(problem).lower()
    if isinstance(problem, QuandaTimeoutError) or "did not answer" in text:
        return f"it did not answer within {timeout_s:g} s"
    for needles, reason in _CAUSES:
        if any(needle in text for needle in needles):
            return reason
    if isinstance(problem, str) and problem.startswith("the database "):
        return "it " + problem[len("the database "):]
    return "it failed a request"


class StoreHealth:
    def __init__(self, store: Any):
        self.store = store
        self.ok = True
        self.reason = ""  # while down: why, in words fit for a user (never a driver's text)
        self._listeners: list[Listener] = []
        self._probe: asyncio.Task | None = None
        self._suspicion: asyncio.Task | None = None
        self._telling: set[asyncio.Future] = set()
        if hasattr(store, "on_trouble"):
            store.on_trouble(self.suspect)

    def listen(self, listener: Listener) -> None:
        """`listener(ok)` is called when the store goes down and when it comes back."""
        self._listeners.append(listener)

    def failed(self, problem: object) -> None:
        """The store just failed someone: if it was thought to work, it is down until a probe succeeds."""
        if not self.ok:
            return
        self.ok = False
        self.reason = user_reason(problem, getattr(self.store, "timeout_s", 5.0))
        log.error("the database is unavailable (%s): probing it every %g s", problem, PROBE_EVERY_S)
        self._tell(False)
        self._probe = asyncio.get_running_loop().create_task(self._watch(), name="store-health")

    def suspect(self, problem: str) -> None:
        """The store's background work found the database failing: a round trip decides, now."""
        if self.ok and (self._suspicion is None or self._suspicion.done()):
            self._suspicion = asyncio.get_running_loop().create_task(self.check(), name="store-health-check")

    async def check(self) -> str | None:
        """A round trip now (for `/-/health`): None when it works, else what is wrong (and the store is down)."""
        problem = await store_round_trip(self.store)
        if problem is not None:
            self.failed(problem)
        return problem

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY_S)  # probing a dead store: there is nothing to wait on but time
            if await store_round_trip(self.store) is None:
                self.ok = True
                log.warning("the database is back")
                self._tell(True)
                return

    def _tell(self, ok: bool) -> None:
        for listener in self._listeners:
            try:
                result = listener(ok)
                if inspect.isawaitable(result):
                    telling = asyncio.ensure_future(result)
                    self._telling.add(telling)
                    telling.add_done_callback(self._telling.discard)
            except Exception:  # noqa: BLE001 - a listener's bug must not hide the news from the others
                log.exception("a store-health listener failed")

    async def close(self) -> None:
        for task in (self._probe, self._suspicion):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
