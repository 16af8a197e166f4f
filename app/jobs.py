"""Jobs: the background tasks that write messages (an answer, a simulator run), each held by a lease.

A job runs on one server and outlives the request and the tab that started it. Its lease (a record of kind
"job", keyed by the message id) names the server and when it expires; the server renews its leases every
`lease_s / 4` seconds. A lease that expired belongs to a server that died: whichever live server sees it
first claims it and hands the job to the plugin that runs its kind (`Plugin.recover`), which marks the
message interrupted (a claim whose server died before it was done is open again `lease_s` later). At
start-up, mutable messages of those kinds with no lease at all (left by a version without leases, or by a
crash before the lease was written) are recovered the same way. Stop reaches a job on any server: the fact
`job.stop` is published and the server holding it cancels it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, Mapping

from quanda import logs, metrics
from quanda.ownership import owner_of
from quanda.core import QuandaError, QuandaStore, QuandaStoreError

log = logging.getLogger("quanda.jobs")

LEASE_KIND = "job"
REAP_KIND = "job_reaped"
STOP_TOPIC = "job.stop"


@dataclass(frozen=True)
class Job:
    kind: str  # the role of the message it writes: "assistant", "simulator"
    message_id: str
    owner: str


Recover = Callable[[Job], Awaitable[None]]


class Jobs:
    def __init__(self, store: QuandaStore, lease_s: float, recoverers: Mapping[str, Recover], health: Any = None):
        self.store, self.lease_s, self.recoverers, self.health = store, lease_s, dict(recoverers), health
        self.tasks: dict[str, asyncio.Task] = {}
        self._jobs: dict[str, Job] = {}
        self._loop_task: asyncio.Task | None = None

    async def open(self) -> None:
        """Recover what died before this start, then keep leases fresh and reap expired ones."""
        await self.store.listen(self._on_fact)
        await self.recover_orphans()
        await self.reap()
        self._loop_task = asyncio.create_task(self._maintain(), name="jobs-leases")

    async def start(self, kind: str, message_id: str, owner: str, work: Coroutine[Any, Any, Any],
                    name: str | None = None) -> asyncio.Task:
        """Run `work` in the background under a lease; returns its task."""
        job = Job(kind, message_id, owner)
        await self._renew(job)
        task = asyncio.create_task(self._run(job, work), name=name or f"job-{kind}-{message_id}")
        metrics.LEASES_HELD.inc()
        self.tasks[message_id] = task
        self._jobs[message_id] = job
        return task

    async def _run(self, job: Job, work: Coroutine[Any, Any, Any]) -> None:
        logs.in_job(job.message_id, job.kind)
        try:
            await work
        except QuandaError as exc:  # a failure the job could not even record (the store gone): its lease,
            log.error("job %s ended early: %s", job.message_id, exc)  # left behind, has it marked later
            self._store_failed(exc)
        except Exception:  # noqa: BLE001 - a plugin's bug: logged here, since no one awaits a job
            log.exception("job %s failed", job.message_id)
        finally:
            metrics.LEASES_HELD.dec()
            self.tasks.pop(job.message_id, None)
            self._jobs.pop(job.message_id, None)
            try:
                await asyncio.shield(self.store.delete_record(LEASE_KIND, job.message_id))
            except (QuandaError, asyncio.CancelledError) as exc:
                log.warning("could not release the lease of %s: %s", job.message_id, exc)

    async def settle(self, message_id: str, timeout: float) -> None:
        """Give a job of this server that is ending (its last writes done) up to `timeout` s to end."""
        task = self.tasks.get(message_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    def running_here(self, message_id: str) -> bool:
        return message_id in self.tasks

    async def running(self, message_id: str) -> bool:
        """Whether a live server (this one or another) holds the job."""
        if message_id in self.tasks:
            return True
        lease = await self.store.get_record(LEASE_KIND, message_id)
        return lease is not None and lease["expires"] >= time.time()

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

    async def _renew(self, job: Job) -> None:
        await self.store.put_record(LEASE_KIND, job.message_id, {
            "kind": job.kind, "owner": job.owner, "server": self.store.origin,
            "expires": time.time() + self.lease_s})

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 4)
            try:
                for job in list(self._jobs.values()):
                    await self._renew(job)
                await self.reap()
            except QuandaError as exc:
                log.warning("job leases: %s", exc)
                self._store_failed(exc)

    def _store_failed(self, exc: QuandaError) -> None:
        if isinstance(exc, QuandaStoreError) and self.health is not None:
            self.health.failed(exc)

    async def reap(self) -> None:
        """Recover every job whose lease expired (its server died), once across all servers."""
        now = time.time()
        for message_id, lease in await self.store.list_records(LEASE_KIND):
            if lease["expires"] >= now or message_id in self.tasks:
                continue
            if await self._claim(message_id, lease, now):
                log.warning("job %s of server %s expired: recovering it", message_id, lease["server"])
                metrics.LEASES_TAKEN_OVER.inc()
                await self._recover(Job(lease["kind"], message_id, lease["owner"]))
                if await self.store.get_record(LEASE_KIND, message_id) == lease:  # not a new job's (a Retry)
                    await self.store.delete_record(LEASE_KIND, message_id)

    async def _claim(self, message_id: str, lease: dict, now: float) -> bool:
        """Whether this server recovers the job of this expired lease: once across servers, unless the server
        that claimed it died before it was done (the lease still there `lease_s` after the claim), when the
        next claim (one attempt later) is open to all."""
        base = f"{message_id}:{lease['expires']}"
        claims = [data for key, data in await self.store.list_records(REAP_KIND, prefix=base)
                  if key == base or key.startswith(base + ":")]
        attempt = 0
        if claims:
            last = max(claims, key=lambda c: c.get("attempt", 0))
            if last["at"] > now - self.lease_s:
                return False  # being recovered right now
            attempt = last.get("attempt", 0) + 1
        key = base if attempt == 0 else f"{base}:{attempt}"
        return await self.store.insert_record(REAP_KIND, key, {"by": self.store.origin, "at": now,
                                                               "attempt": attempt})

    async def recover_orphans(self) -> None:
        """Mutable messages of a job kind with no lease: written before leases existed, or a crash before
        the lease was stored."""
        leased = {key for key, _ in await self.store.list_records(LEASE_KIND)}
        quiet_since = time.time() - self.lease_s
        for kind in self.recoverers:
            for record in await self.store.select_messages(role=kind, immutable=False):
                if record.id in leased or record.id in self.tasks or record.updated_at > quiet_since:
                    continue
                mine = await owner_of(self.store, record.id)
                await self._recover(Job(kind, record.id, mine["owner"] if mine else ""))

    async def _recover(self, job: Job) -> None:
        recover = self.recoverers.get(job.kind)
        if recover is None:
            log.warning("no plugin recovers jobs of kind %r (message %s)", job.kind, job.message_id)
            return
        try:
            await recover(job)
        except QuandaError as exc:
            log.warning("could not recover job %s: %s", job.message_id, exc)

    async def close(self) -> None:
        """Stop maintaining leases and cancel this server's jobs (each marks its message as it stops)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
