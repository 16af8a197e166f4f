"""Approvals, in-process on every store backend against the scripted LLM: a call that needs the user's Approve
runs nothing before it, the answer's job ends "waiting", one decision (however many tabs or servers press at
once) resumes it; Reject is told to the model; a timeout counts as not approved; JSON commands wait too."""

import asyncio

import pytest

from quanda import approvals
from quanda.api import Change, CommandResult, CommandSpec, Plugin, apply_change
from quanda.chat import answers, conversation
from quanda.config import Settings
from quanda.context import ClientError
from quanda.plugins.todo import plan_add, todos
from tests.llm_server import Chunk, Reply, Rounds, ToolCall
from tests.test_tool_rounds import (MODEL, TIMEOUT, answer, content, entry, finished, make_handle, srv,  # noqa: F401
                                    tool_results, wire)

DELETE = Rounds(Reply(chunks=["Deleting. ", Chunk(tool_calls=[ToolCall("todo_delete", {"id": 1})])]),
                Reply(chunks=["Over."]))
WAITING = "… todo_delete waits for your approval"


async def with_milk(h) -> None:
    await apply_change(h, await plan_add(h, "buy milk"))


async def waiting_delete(h) -> str:
    """A todo, and an answer whose tool call deletes it: waiting for approval once its job ended."""
    await with_milk(h)
    answer_id, job = await answer(h)
    await finished(job)
    return answer_id


async def resumed(h, answer_id: str) -> None:
    """Until the job the decision started has ended."""
    task = h.ctx.jobs.tasks.get(answer_id)
    if task is not None:
        await finished(task)


async def test_a_delete_waits_for_approve_then_runs_once_and_the_answer_goes_on(make_handle, srv):
    h = make_handle()
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    assert [t["name"] for t in await todos(h)] == ["buy milk"]  # nothing ran before approval
    assert (await entry(h, answer_id))["status"] == "waiting"
    waiting = await content(h, answer_id)
    assert not waiting.immutable and WAITING in waiting.content and not waiting.warning
    assert not await h.job_running(answer_id)  # no job, no lease held while the user thinks
    [question] = await approvals.of_answer(h, answer_id)
    assert question["decision"] is None and "once approved: Deleted the todo 'buy milk' (id 1)" in question["what"]
    assert len(srv.chat_requests) == 1

    assert await approvals.decide(h, question["key"], approve=True) == "approved"
    await resumed(h, answer_id)
    assert await todos(h) == []
    final = await content(h, answer_id)
    assert final.immutable and final.content == "Deleting. \n\n✓ Deleted the todo 'buy milk' (id 1).\n\nOver."
    assert (await entry(h, answer_id))["status"] == "done"
    assert tool_results(srv.chat_requests[-1]) == ["✓ Deleted the todo 'buy milk' (id 1)."]
    [question] = await approvals.of_answer(h, answer_id)
    assert question["decision"] == "approved" and question["settled"]
    with pytest.raises(ClientError, match="already approved"):
        await approvals.decide(h, question["key"], approve=False)


async def test_reject_leaves_the_todo_and_tells_the_model(make_handle, srv):
    h = make_handle()
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    [question] = await approvals.of_answer(h, answer_id)
    assert await approvals.decide(h, question["key"], approve=False) == "rejected"
    await resumed(h, answer_id)
    assert [t["name"] for t in await todos(h)] == ["buy milk"]
    rejected = "✗ todo_delete not run: the user rejected it"
    assert tool_results(srv.chat_requests[-1]) == [rejected]
    final = await content(h, answer_id)
    assert final.immutable and final.content == f"Deleting. \n\n{rejected}\n\nOver."


async def test_two_servers_deciding_at_once_make_one_decision_and_one_effect(make_handle, srv, store):
    h = make_handle()
    other = make_handle()  # a second app context on the same store: another server
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    [question] = await approvals.of_answer(h, answer_id)
    outcomes = await asyncio.gather(approvals.decide(h, question["key"], True),
                                    approvals.decide(other, question["key"], True), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ClientError", "str"], outcomes
    await resumed(h, answer_id)
    await resumed(other, answer_id)
    assert await todos(h) == []
    final = await content(h, answer_id)
    assert final.content.count("✓ Deleted") == 1 and final.immutable
    assert len(await store.list_records("command", prefix=f"{answer_id}:")) == 1


async def test_only_the_owner_can_decide(make_handle, srv):
    h = make_handle()
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    [question] = await approvals.of_answer(h, answer_id)
    stranger = h.ctx.handle("owner-2")
    for key in (question["key"], "nope", None, 3):
        with pytest.raises(ClientError, match="no such approval"):
            await approvals.decide(stranger if key == question["key"] else h, key, True)
    assert await approvals.decision(h, question["key"]) is None


async def test_a_question_not_answered_in_time_counts_as_not_approved(make_handle, srv):
    h = make_handle(Settings(approval_timeout_s=0.0))
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    await approvals.sweep_once(h.ctx)
    await resumed(h, answer_id)
    assert [t["name"] for t in await todos(h)] == ["buy milk"]
    assert tool_results(srv.chat_requests[-1]) == ["✗ todo_delete not run: it was not approved in time"]
    events = [e["text"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == "event"]
    assert any("waited too long for approval" in e for e in events)
    [question] = await approvals.of_answer(h, answer_id)
    assert question["decision"] == "expired" and question["settled"]


async def test_a_decision_left_behind_by_a_crash_is_carried_out_by_the_sweeper(make_handle, srv, store):
    h = make_handle()
    srv.script = DELETE
    answer_id = await waiting_delete(h)
    [question] = await approvals.of_answer(h, answer_id)
    # a server killed right after recording the decision, before it resumed the answer
    await store.insert_record(approvals.DECISION, question["key"], {"decision": "approved", "at": 0})
    await approvals.sweep_once(h.ctx)
    await resumed(h, answer_id)
    await approvals.sweep_once(h.ctx)  # nothing left to do: nothing runs twice
    await resumed(h, answer_id)
    assert await todos(h) == []
    assert (await content(h, answer_id)).content.count("✓ Deleted") == 1


async def test_a_json_command_waits_for_approval_too(make_handle, srv, store):
    h = make_handle(Settings(llm_tools="off"))
    await with_milk(h)
    srv.script = Reply(chunks=['Deleting: {"action": "delete", "target": "todo", "args": {"id": 1}}'])
    answer_id, job = await answer(h)
    await finished(job)
    assert [t["name"] for t in await todos(h)] == ["buy milk"]
    [question] = await approvals.of_answer(h, answer_id)
    assert question["source"] == "command" and question["decision"] is None
    assert (await entry(h, answer_id))["approvals"] is True
    await approvals.decide(h, question["key"], approve=True)
    assert await todos(h) == []
    await approvals.sweep_once(h.ctx)  # carried out already: not again
    events = [e["text"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == "event"]
    assert events.count("✓ Deleted the todo 'buy milk' (id 1).") == 1


async def test_a_predicate_decides_which_calls_wait(make_handle, srv):
    async def remove(h, args) -> Change:
        return Change(CommandResult(True, f"Removed {args['n']}."))

    from quanda.api import Field
    spec = CommandSpec("rows", "remove", {"n": Field(int, required=True)}, run=remove, description="Remove rows.",
                       approval=lambda args: args["n"] > 1)
    h = make_handle(extra=[Plugin(name="rows", label="Rows", commands=[spec])])
    srv.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("rows_remove", {"n": 1}),
                                                        ToolCall("rows_remove", {"n": 5})])]), Reply(chunks=["Ok."]))
    answer_id, job = await answer(h)
    await finished(job)
    text = (await content(h, answer_id)).content
    assert "✓ Removed 1." in text and "✓ Removed 5." not in text  # one row: no question; five: waits
    [question] = await approvals.of_answer(h, answer_id)
    assert "rows_remove(n=5)" in question["what"]
    assert approvals.needs_approval(spec, {"n": 2}) and not approvals.needs_approval(spec, {"n": 1})
    assert approvals.needs_approval(CommandSpec("a", "b", approval=lambda args: 1 / 0), {})  # a bug asks
