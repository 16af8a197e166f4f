"""Two servers on one PostgreSQL database whose wall clocks are three minutes apart (`clock.skewed`): leases
are decided by the database's clock, so the server ahead never takes the other's live answer for dead, and
the one behind never holds a dead one for live. Then the server writing an answer is killed (`kill -9`)
mid-stream: the other marks it interrupted within the lease (by the database's clock), Retry completes it
there, nothing acknowledged is lost and no token of the answer was written by two jobs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.backends import postgres_test_url
from tests.faults.clock import skewed
from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import TOKEN, Acks, SSEReader, api_client, check_store, short, wait_token
from tests.reliability.test_dead_database import tracebacks
from tests.servers import AppServer

pytestmark = pytest.mark.faults
REPLY = [f"w{i} " for i in range(150)]
LEASE_S = 2.0
TIMEOUT = 60


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=REPLY, delay=0.03)) as server:  # 4.5 s: more than two leases
        yield server


def server(workdir, url, llm, offset_s: int) -> AppServer:
    workdir.mkdir()
    return AppServer(workdir, QUANDA_DB_URL=url, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url,
                     OLLAMA_MODEL="quanda-test", QUANDA_JOB_LEASE_S=str(LEASE_S), **skewed(offset_s)).start()


async def ask(client) -> str:
    q = (await client.post("/api/messages", json={"role": "q", "content": "count"})).json()["id"]
    return (await client.post(f"/api/messages/{q}/answer", json={})).json()["answer_id"]


def written_once(tokens: list) -> bool:
    """The log of one answer written by one job at a time: after the last override (a Retry's rebuild), the
    chunks are the reply in order, then the seal."""
    last = max((i for i, t in enumerate(tokens) if t.kind == "override"), default=-1)
    chunks = "".join(t.text for t in tokens[last + 1:] if t.kind == "chunk")
    return chunks == "".join(REPLY) and tokens[-1].kind == "immutable"


async def test_skewed_clocks_and_a_killed_server_leave_every_answer_written_once(tmp_path, postgres, llm):
    url = postgres_test_url()
    behind = server(tmp_path / "behind", url, llm, -90)
    ahead = server(tmp_path / "ahead", url, llm, +90)
    acks = Acks()
    try:
        async with api_client(behind.url) as on_behind, api_client(ahead.url) as on_ahead:
            live = await ask(on_behind)  # written by the server whose clock is behind ...
            await SSEReader(on_ahead, live, acks).wait(TIMEOUT, "the answer, followed on the server ahead")
            state = (await on_ahead.get(f"/api/messages/{live}")).json()
            assert state["immutable"] and state["content"] == "".join(REPLY), short(state)  # ... never taken over

            cut = await ask(on_behind)
            SSEReader(on_ahead, cut, acks)
            assert await acks.wait_count(acks.count + 30, TIMEOUT), "the second answer does not stream"
            os.kill(behind.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            marked = await wait_token(on_ahead, cut, lambda tok, st: "interrupted" in st["warning"], TIMEOUT,
                                      "the killed server's answer marked by the other")
            took = time.monotonic() - killed
            assert took <= 2 * LEASE_S + 2, f"marked {took:.1f} s after the kill (lease {LEASE_S} s)"
            assert (await on_ahead.post(f"/api/chat/answers/{cut}/retry")).status_code == 202
            await SSEReader(on_ahead, cut, acks).wait(TIMEOUT, "the retried answer")
            state = (await on_ahead.get(f"/api/messages/{cut}")).json()
            assert state["immutable"] and state["content"] == "".join(REPLY), short(state)
    finally:
        behind.stop()
        ahead.stop()
    assert not (found := tracebacks(ahead.log_text())), found[0][:4000]
    logs = await check_store(url, acks)
    assert written_once(logs[live]) and written_once(logs[cut]), "an answer's log shows two writers"
    assert not any(t.kind == "warning" and t.text for t in logs[live]), "the live answer was marked"
    print(f"\n[faults] clocks 180 s apart: the live answer untouched; the killed server's answer marked "
          f"{took:.1f} s after the kill ({marked['warning'][:40]}…) and retried whole")
