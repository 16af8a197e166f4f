"""Jobs under faults, in process (issue 21): a command claimed without transactions and recovered right away
runs once (item 1); a store error while an answer finishes leaves its commands to recovery, not to oblivion
(item 2); a job that stalled past its lease is fenced out by the store the moment another server has taken
the lease over (item 8)."""

from __future__ import annotations

import asyncio

import pytest

from quanda.config import Settings
from quanda.context import AppContext
from quanda.core import QuandaMessage, QuandaStoreError, QuandaWriter
from quanda.core.store.fencing import fenced
from quanda.jobs import Jobs
from quanda.llm import OllamaDriver
from quanda.plugin import load_plugins
from quanda.chat import ChatState, answers, conversation
from quanda.plugins.todo import todos
from quanda.server import PluginHost
from tests.backends import make_store
from tests.crashes import crash_at
from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import eventually

ANSWER = ['Adding it. {"action": "insert", "target": "todo", "args": {"name": "exactly once"}} ',
          '{"action": "toggle", "target": "todo", "args": {"id": 1}}']
OWNER = "local"
TIMEOUT = 15


class Crashed(BaseException):
    """What `os._exit` does at a crash point, as an exception this test can catch."""


def context(store, llm_url: str | None = None, **settings) -> AppContext:
    ctx = AppContext(Settings(**settings), store, load_plugins(entry_point_group=None))
    ctx.llm = OllamaDriver(llm_url or "http://127.0.0.1:9")
    ctx.state["chat"] = ChatState(ctx)
    return ctx


def jobs_of(ctx: AppContext, lease_s: float) -> Jobs:
    ctx.jobs = Jobs(ctx.store, lease_s, PluginHost(ctx.plugins).recoverers(ctx))
    return ctx.jobs


async def lease_expired(store, key: str) -> None:
    async def gone():
        return any(lease.key == key for lease in await store.expired_leases())
    await eventually(gone, TIMEOUT, f"the lease of {key} expired")


def check_once(found: list[dict], lines: list[str]) -> None:
    assert [(t["name"], t["done"]) for t in found] == [("exactly once", True)]  # inserted once, toggled once
    assert sum(line.startswith("✓ Added") for line in lines) == 1
    assert sum(line.startswith("✓ Marked") for line in lines) == 1


async def event_lines(store) -> list[str]:
    return [e["text"] for _k, e in await conversation.entries(store, OWNER) if e["type"] == "event"]


@pytest.mark.parametrize("point", ["after_claim", "after_effect", "before_result_line"])
async def test_without_transactions_a_recovery_right_after_a_crash_runs_each_command_once(tmp_path, monkeypatch,
                                                                                            point):
    """Item 1: without transactions (MongoDB standalone, mongomock) a claim is written before its effect. A
    recovery less than `job_lease_s` after the claim re-applied nothing, yet the answer's commands were
    marked done: no todo, the claim "applying" for ever. The recovering job now holds the lease after the
    claimer's, so it finishes the claim."""
    store = await make_store("mongomock", tmp_path)
    try:
        assert not store.atomic_records
        ctx = context(store, job_lease_s=10.0)
        h = ctx.handle(OWNER)
        answer = await QuandaMessage.create(store, role="assistant", content="".join(ANSWER))
        await QuandaWriter(answer).make_immutable()  # finished normally, then its server died running commands
        await h.own(answer.id, "assistant")
        key = await conversation.add_entry(store, OWNER, {"type": "assistant", "message_id": answer.id,
                                                          "status": "done", "commands": "pending"})
        lease = await store.acquire_lease(answer.id, "the-dead-server", 0.05, {"kind": "assistant", "owner": OWNER})
        crashing = context(store, job_lease_s=10.0)
        with fenced(answer.id, lease.fence), crash_at(point, Crashed), pytest.raises(Crashed):
            await answers.run_commands(crashing.handle(OWNER), key, answer.id)
        await lease_expired(store, answer.id)  # a short lease stands in for the 10 s: the claim is seconds old
        await jobs_of(context(store, job_lease_s=10.0), 10.0).reap()  # another server recovers the job
        check_once(await todos(h), await event_lines(store))
        assert (await conversation.find_answer(store, OWNER, answer.id))[1]["commands"] == "done"
        claims = await store.list_records("command", prefix=f"{answer.id}:")
        assert [c["state"] for _k, c in claims] == ["done", "done"]
        assert await store.get_lease(answer.id) is None  # given up once recovered
    finally:
        await store.close()


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=ANSWER)) as server:
        yield server


async def test_a_store_error_while_an_answer_finishes_leaves_its_commands_to_recovery(store, llm, monkeypatch):
    """Item 2: a store error in `finish` (outside generate's try) ended the job, which released its lease: the
    answer sealed with its commands "pending", and nothing would ever run them."""
    ctx = context(store, llm.url, job_lease_s=0.5, ollama_model="quanda-test")
    jobs = jobs_of(ctx, 0.5)
    h = ctx.handle(OWNER)
    real_update = conversation.update_entry
    failed = []

    async def update_entry(store_, key, **changes):
        if changes.get("status") == "done" and not failed:  # the database fails once, as the answer finishes
            failed.append(key)
            raise QuandaStoreError("the database went away")
        return await real_update(store_, key, **changes)
    monkeypatch.setattr(conversation, "update_entry", update_entry)
    try:
        answer_id = await answers.start_answer(h, "quanda-test")
        await asyncio.wait_for(asyncio.shield(jobs.tasks[answer_id]), TIMEOUT)
        assert failed and (await store.get_message(answer_id)).immutable and await todos(h) == []
        assert await store.get_lease(answer_id) is not None  # left to expire: the job is not finished

        async def recovered():
            await jobs.reap()
            return await todos(h)
        await eventually(recovered, TIMEOUT, "the commands run by the recovery of the expired lease")
        check_once(await todos(h), await event_lines(store))
        assert (await conversation.find_answer(store, OWNER, answer_id))[1]["commands"] == "done"
    finally:
        await jobs.close()
        await ctx.llm.aclose()


async def test_a_job_stalled_past_its_lease_is_fenced_out_once_another_server_took_it(store):
    """Item 8: a job whose server stalled for longer than its lease (no renewal) was marked interrupted by
    another server — and then, resumed, went on writing the same message. Now the store refuses it."""
    msg = await QuandaMessage.create(store, role="assistant")
    stalled, resumed, outcome = asyncio.Event(), asyncio.Event(), []

    async def work():
        writer = QuandaWriter(msg)
        await writer.chunk("before the stall ")
        stalled.set()
        await resumed.wait()  # the server's loop stalls here: no renewals while it does
        try:
            await writer.chunk("after the stall")
            await store.put_record("todo", f"{OWNER}:000000001", {"by": "the stalled job"})
        except QuandaStoreError as exc:
            outcome.append(exc)
            raise

    async def mark(job):
        await QuandaWriter(await QuandaMessage.from_id(store, job.message_id)).warning("interrupted")

    server_a = Jobs(store, 0.3, {})
    server_b = Jobs(store, 0.3, {"assistant": mark})
    task = await server_a.start("assistant", msg.id, OWNER, work())
    await asyncio.wait_for(stalled.wait(), TIMEOUT)

    async def taken_over():
        await server_b.reap()
        return (await store.get_message(msg.id)).warning == "interrupted"
    await eventually(taken_over, TIMEOUT, "the other server marks the job whose lease expired")
    resumed.set()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), TIMEOUT)
    record = await store.get_message(msg.id)
    assert record.content == "before the stall " and record.warning == "interrupted", record
    assert outcome and "fence" in str(outcome[0])
    assert await store.get_record("todo", f"{OWNER}:000000001") is None
    await server_a.close()
    await server_b.close()
