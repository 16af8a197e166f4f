"""The app on SQLite over a slow disk (`disk.SlowDisk` preloaded into the server): an answer being written
slows down with the disk, while everyone else's round trips keep their latency (the event loop never waits on
the disk); once the disk is fast again the answer ends whole, nothing acknowledged lost."""

from __future__ import annotations

import pytest

from tests.faults.disk import SlowDisk
from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import (TOKEN, Acks, SSEReader, api_client, browser_cookie, check_store,
                                       percentile, short)
from tests.reliability.test_dead_database import tracebacks
from tests.reliability.test_protocol_abuse import Others
from tests.servers import AppServer

pytestmark = pytest.mark.faults
REPLY = [f"w{i} " for i in range(300)]
DELAY_MS = 200
TIMEOUT = 60


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=REPLY, delay=0.01)) as server:
        yield server


async def test_a_slow_disk_slows_the_answer_not_the_other_tabs(tmp_path, llm):
    disk = SlowDisk(tmp_path, "quanda.db")
    server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
                       **disk.env()).start()
    acks = Acks()
    try:
        cookie = await browser_cookie(server.url)
        async with api_client(server.url) as client, Others(server, [cookie], tabs=2) as others:
            idle = await others.measure(2.0)
            q = (await client.post("/api/messages", json={"role": "q", "content": "count"})).json()["id"]
            answer = (await client.post(f"/api/messages/{q}/answer", json={})).json()["answer_id"]
            reader = SSEReader(client, answer, acks)
            assert await acks.wait_count(20, TIMEOUT), f"only {acks.count} tokens"
            disk.slow(DELAY_MS)
            slow_from = acks.count
            during = await others.measure(3.0)
            slow_tokens = acks.count - slow_from
            disk.heal()
            await reader.wait(TIMEOUT, "the answer, once the disk is fast again")
            state = (await client.get(f"/api/messages/{answer}")).json()
            assert state["immutable"] and state["content"] == "".join(REPLY), short(state)
    finally:
        server.stop()
    p99_idle, p99_during = percentile(idle, 99), percentile(during, 99)
    print(f"\n[faults] SQLite {DELAY_MS} ms per write mid-answer: the others' round trips p99 "
          f"{1000 * p99_idle:.1f} ms idle, {1000 * p99_during:.1f} ms during ({len(during)} probes); "
          f"{slow_tokens} tokens acknowledged while slow")
    assert p99_during <= max(3 * p99_idle, 0.1), (p99_idle, p99_during)
    assert not (found := tracebacks(server.log_text())), found[0][:4000]
    await check_store(f"sqlite:///{tmp_path}/data/quanda.db", acks)
