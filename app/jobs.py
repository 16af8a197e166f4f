"""Jobs: the background tasks that write messages (an answer, a simulator run), each held by a lease.

A job runs on one server and outlives the request and the tab that started it. Its lease (the store's lease
keyed by the message id: `QuandaStore.acquire_lease`) names the server, and its expiry is decided by the
database's clock, never by a server's own: a server whose clock is off by minutes neither loses its jobs nor
takes others'. The server renews its leases every `lease_s / 4` seconds. A lease that expired belongs to a
server that died (or stalled): whichever live server takes it first (the store makes sure one does) hands
the job to the plugin that runs its kind (`Plugin.recover`), which marks the message interrupted or finishes
what the job left (its commands). Each lease has a fence, higher than any before, and the job runs fenced
(`quanda.core.store.fencing`): once another server has taken its lease and written, the store refuses the old
job's writes — its tokens and its records — so one message is never written by two jobs, whatever the job's
code does. A job that finds its lease gone (a renewal refused) is cancelled; so is one whose write was fenced.

A job that ends on a store error (the database went away under it) is not finished: its lease is left to
expire, and the job is recovered then, by this server or another. At start-up, mutable messages of the job
kinds with no lease at all (left by a version without leases, or by a crash before the lease was taken) are
recovered the same way, through their lease. Stop reaches a job on any server: the fact `job.stop` is
published and the server holding it cancels it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Mapping

from quanda import logs, metrics
from quanda.core import QuandaError, QuandaFencedError, QuandaStore, QuandaStoreError
from quanda.core.store.fencing import fenced, unfenced
from quanda.ownership import owner_of

log = logging.getLogger("quanda.jobs")

STOP_TOPIC = "job.stop"


@dataclass(frozen=True)
class Job:
    kind: str  # the role of the message it writes: "assistant", "simulator"
    message_id: str
    owner: str


class JobBusy(QuandaError):
    """The message is being written by a job that holds a live lease."""


@dataclass
class _Held:
    job: Job
    fence: int
    task: asyncio.Task | None = None


Recover = Callable[[Job], Awaitable[None]]


class Jobs:
    def __init__(self, store: QuandaStore, lease_s: float, recoverers: Mapping[str, Recover], health: Any = None):
        self.store, self.lease_s, self.recoverers, self.health = store, lease_s, dict(recoverers), health
        self.tasks: dict[str, asyncio.Task] = {}
        self._held: dict[str, _Held] = {}  # the leases this server holds: its jobs and its recoveries
        self._loop_task: asyncio.Task | None = None

    async def open(self) -> None:
        """Recover what died before this start, then keep leases fresh and reap expired ones."""
        await self.store.listen(self._on_fact)
        await self.recover_orphans()
        await self.reap()
        self._loop_task = asyncio.create_task(self._maintain(), name="jobs-leases")

    async def start(self, kind: str, message_id: str, owner: str, work: Coroutine[Any, Any, Any],
                    name: str | None = None) -> asyncio.Task:
        """Run `work` in the background under a lease; returns its task. JobBusy when another job holds it."""
        job = Job(kind, message_id, owner)
        try:
            lease = await self._acquire(job)
        except BaseException:
            work.close()
            raise
        if lease is None:
            work.close()
            raise JobBusy("that message is being written by a job on another server")
        held = self._held[message_id] = _Held(job, lease.fence)
        held.task = asyncio.create_task(self._run(held, work), name=name or f"job-{kind}-{message_id}")
        metrics.LEASES_HELD.inc()
        self.tasks[message_id] = held.task
        return held.task

    async def _acquire(self, job: Job, recovering: bool = False) -> Any:
        data = {"kind": job.kind, "owner": job.owner, **({"recovering": True} if recovering else {})}
        return await self.store.acquire_lease(job.message_id, self.store.origin, self.lease_s, data)

    async def _run(self, held: _Held, work: Coroutine[Any, Any, Any]) -> None:
        job = held.job
        logs.in_job(job.message_id, job.kind)
        release = True
        try:
            with fenced(job.message_id, held.fence):
                await work
        except QuandaFencedError as exc:
            release = False  # not ours any more: the server that took the lease finishes the job
            log.warning("job %s lost its lease (fence %d) to another server: stopped (%s)", job.message_id,
                        held.fence, exc)
        except QuandaError as exc:  # a failure the job could not even record (the store gone): its lease is
            release = False         # left to expire, and whichever server then recovers the job finishes it
            log.error("job %s ended early: %s; it is recovered once its lease expires", job.message_id, exc)
            self._store_failed(exc)
        except asyncio.CancelledError:
            if self._held.get(job.message_id) is not held:  # cancelled because its lease was lost
                release = False
            raise
        except Exception:  # noqa: BLE001 - a plugin's bug: logged here, since no one awaits a job
            log.exception("job %s failed", job.message_id)
        finally:
            metrics.LEASES_HELD.dec()
            if self.tasks.get(job.message_id) is held.task:
                self.tasks.pop(job.message_id, None)
            if self._held.get(job.message_id) is held:
                self._held.pop(job.message_id, None)
            if release:
                try:
                    await asyncio.shield(self.store.release_lease(job.message_id, held.fence))
                except (QuandaError, asyncio.CancelledError) as exc:
                    log.warning("could not release the lease of %s: %s", job.message_id, exc)

    async def settle(self, message_id: str, timeout: float) -> None:
        """Give a job of this server that is ending (its last writes done) up to `timeout` s to end."""
        task = self.tasks.get(message_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    def running_here(self, message_id: str) -> bool:
        return message_id in self.tasks

    async def running(self, message_id: str, settle_s: float = 0.0) -> bool:
        """Whether a live server (this one or another) holds the job (by the database's clock). A recovery
        (the marking of a dead server's job: milliseconds) is given up to `settle_s` seconds to end."""
        if message_id in self.tasks:
            return True
        deadline = asyncio.get_running_loop().time() + settle_s
        while True:
            lease = await self.store.get_lease(message_id)
            if lease is None or lease.expired:
                return False
            if not lease.data.get("recovering") or asyncio.get_running_loop().time() >= deadline:
                return True
            await asyncio.sleep(0.05)  # another server's lease: there is no event to wait on

    async def stop(self, message_id: str) -> bool:
        """Cancel the job wherever it runs; False when no live server holds it."""
        task = self.tasks.get(message_id)
        if task is not None:
            task.cancel()
            return True
        if not await self.running(message_id):
            return False
        await self.store.publish(STOP_TOPIC, {"message_id": message_id})
        return True

    def _on_fact(self, topic: str, fact: dict) -> None:
        if topic == STOP_TOPIC:
            task = self.tasks.get(fact.get("message_id", ""))
            if task is not None:
                task.cancel()

    # -- leases ---------------------------------------------------------------------------------------------

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)
            try:
                await self.renew()
                await self.reap()
            except QuandaError as exc:
                log.warning("job leases: %s", exc)
                self._store_failed(exc)

    async def renew(self) -> None:
        """Renew every lease held here; a job whose lease was taken meanwhile is cancelled (its writes would
        be refused anyway)."""
        for message_id, held in list(self._held.items()):
            if await self.store.renew_lease(message_id, held.fence, self.lease_s):
                continue
            if self._held.get(message_id) is held:
                del self._held[message_id]
                log.warning("job %s lost its lease (fence %d) to another server: stopping it", message_id, held.fence)
                if held.task is not None:
                    held.task.cancel()

    def _store_failed(self, exc: QuandaError) -> None:
        if isinstance(exc, QuandaStoreError) and self.health is not None:
            self.health.failed(exc)

    async def reap(self) -> None:
        """Recover every job whose lease expired (its server died or stalled past it), once across servers:
        the first server to take the expired lease does, fenced by the lease it took."""
        for lease in await self.store.expired_leases():
            if lease.key in self._held:
                continue  # ours (this loop ran late): renewed at the next round, or lost then
            job = Job(lease.data.get("kind", ""), lease.key, lease.data.get("owner", ""))
            taken = await self._acquire(job, recovering=True)
            if taken is None:
                continue  # another server took it, or its holder renewed it meanwhile
            log.warning("job %s of server %s expired: recovering it", job.message_id, lease.holder)
            metrics.LEASES_TAKEN_OVER.inc()
            await self._recover_held(_Held(job, taken.fence))

    async def recover_orphans(self) -> None:
        """Mutable messages of a job kind with no lease: written before leases existed, or a crash before
        the lease was taken. Each is recovered through its lease, so only one server does, and not while a
        job that is just starting holds it."""
        quiet_since = time.time() - self.lease_s  # (a job just starting has its lease a moment later)
        for kind in self.recoverers:
            for record in await self.store.select_messages(role=kind, immutable=False):
                if record.id in self.tasks or record.updated_at > quiet_since or \
                        await self.store.get_lease(record.id) is not None:
                    continue
                mine = await owner_of(self.store, record.id)
                job = Job(kind, record.id, mine["owner"] if mine else "")
                taken = await self._acquire(job, recovering=True)
                if taken is not None:
                    await self._recover_held(_Held(job, taken.fence))

    async def _recover_held(self, held: _Held) -> None:
        """Run the plugin's recovery of `held.job` under the lease this server took for it, then give it up."""
        job = held.job
        recover = self.recoverers.get(job.kind)
        self._held[job.message_id] = held  # renewed while it runs
        released = False
        try:
            if recover is None:
                log.warning("no plugin recovers jobs of kind %r (message %s)", job.kind, job.message_id)
            else:
                with fenced(job.message_id, held.fence):
                    await recover(job)
            released = True
        except QuandaFencedError as exc:
            log.warning("recovery of job %s lost its lease: %s", job.message_id, exc)
        except QuandaError as exc:
            log.warning("could not recover job %s: %s", job.message_id, exc)  # its lease expires: tried again
        finally:
            if self._held.get(job.message_id) is held:
                del self._held[job.message_id]
        if released:
            with unfenced():
                await self.store.release_lease(job.message_id, held.fence)

    async def close(self) -> None:
        """Stop maintaining leases and cancel this server's jobs (each marks its message as it stops)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
