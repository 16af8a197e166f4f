"""One regression test for each bug the reliability suites found (each fails on the code before its fix)."""

from __future__ import annotations

import asyncio

import pytest

from app.jobs import LEASE_KIND, Jobs
from app.quanda import open_store
from tests.reliability.harness import eventually

pytestmark = pytest.mark.reliability


async def test_a_server_killed_while_it_recovers_a_dead_servers_job_leaves_it_to_the_next(tmp_path):
    """Crash loop: a server that claimed an expired lease and died before marking the job left the claim taken
    and the lease expired for good — no server ever marked the answer interrupted."""
    url = f"sqlite:///{tmp_path}/quanda.db"
    dead, dying, alive = [await open_store(url) for _ in range(3)]
    message_id = "0123456789abcdef01234567"
    await dead.put_record(LEASE_KIND, message_id, {"kind": "assistant", "owner": "o", "server": dead.origin,
                                                   "expires": 0.0})
    recovering = asyncio.Event()

    async def killed_midway(job):
        recovering.set()
        await asyncio.Event().wait()

    reap = asyncio.create_task(Jobs(dying, 0.3, {"assistant": killed_midway}).reap())
    await asyncio.wait_for(recovering.wait(), 5)
    reap.cancel()  # the server dies here, its recovery half done
    await asyncio.gather(reap, return_exceptions=True)
    recovered = []

    async def mark(job):
        recovered.append(job.message_id)

    survivor = Jobs(alive, 0.3, {"assistant": mark})
    await survivor.reap()
    assert recovered == []  # the dying server's own lease on the job has not expired yet

    async def reaped():
        await survivor.reap()
        return recovered

    assert await eventually(reaped, 5, "the job recovered by the next server") == [message_id]
    assert await alive.get_record(LEASE_KIND, message_id) is None
    for store in (dead, dying, alive):
        await store.close()
