"""Undo of what the LLM did, in-process on every store backend: the records come back as they were, once;
the model is told; an Undo after the data changed is refused with the reason; two servers at once undo once;
actions that changed nothing or are marked not undoable offer none."""

import asyncio

import pytest

from quanda import undo
from quanda.api import Change, CommandResult, CommandSpec, Plugin, apply_change
from quanda.approvals import decide, of_answer
from quanda.chat import conversation
from quanda.context import ClientError
from quanda.plugins.todo import plan_add, plan_update, todos
from tests.llm_server import Chunk, Reply, Rounds, ToolCall
from tests.test_tool_rounds import answer, finished, make_handle, srv, wire  # noqa: F401


def calling(*calls: ToolCall) -> Rounds:
    return Rounds(Reply(chunks=[Chunk(tool_calls=list(calls))]), Reply(chunks=["Ok."]))


async def ran(h) -> str:
    """An answer to the scripted calls, ended."""
    answer_id, job = await answer(h)
    await finished(job)
    return answer_id


async def events(h) -> list[str]:
    return [e["text"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == "event"]


async def test_undo_of_an_add_removes_it_once_and_tells_the_model(make_handle, srv):
    h = make_handle()
    srv.script = calling(ToolCall("todo_insert", {"name": "buy milk"}), ToolCall("todo_list", {}))
    answer_id = await ran(h)
    [result] = await undo.results_of(h, answer_id)  # the listing changed nothing: no card
    assert result["text"] == "Added the todo 'buy milk' (id 1)." and result["undoable"] and not result["undone"]
    assert await undo.undo(h, result["key"]) == "The user undid: Added the todo 'buy milk' (id 1)."
    assert await todos(h) == []
    assert (await events(h)).count("The user undid: Added the todo 'buy milk' (id 1).") == 1
    with pytest.raises(ClientError, match="undone already"):
        await undo.undo(h, result["key"])
    [result] = await undo.results_of(h, answer_id)
    assert result["undone"] and not result["undoable"]


async def test_undo_of_an_approved_delete_brings_the_todo_back_as_it_was(make_handle, srv):
    h = make_handle()
    await apply_change(h, await plan_add(h, "buy milk"))
    before = await todos(h)
    srv.script = calling(ToolCall("todo_delete", {"id": 1}))
    answer_id = await ran(h)
    [question] = await of_answer(h, answer_id)
    await decide(h, question["key"], True)
    await finished(h.ctx.jobs.tasks[answer_id])
    assert await todos(h) == []
    [result] = await undo.results_of(h, answer_id)
    await undo.undo(h, result["key"])
    assert await todos(h) == before


async def test_undo_after_the_user_renamed_the_todo_is_refused_with_the_reason(make_handle, srv):
    h = make_handle()
    srv.script = calling(ToolCall("todo_insert", {"name": "buy milk"}))
    answer_id = await ran(h)
    await apply_change(h, await plan_update(h, 1, name="buy oat milk"))
    [result] = await undo.results_of(h, answer_id)
    with pytest.raises(ClientError, match="the todo it changed was changed since"):
        await undo.undo(h, result["key"])
    assert [t["name"] for t in await todos(h)] == ["buy oat milk"]  # no silent overwrite
    assert not any("undid" in e for e in await events(h))


async def test_two_servers_undoing_at_once_undo_once(make_handle, srv):
    h, other = make_handle(), make_handle()
    srv.script = calling(ToolCall("todo_insert", {"name": "buy milk"}))
    answer_id = await ran(h)
    [result] = await undo.results_of(h, answer_id)
    outcomes = await asyncio.gather(undo.undo(h, result["key"]), undo.undo(other, result["key"]),
                                    return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["ClientError", "str"], outcomes
    assert (await events(h)).count("The user undid: Added the todo 'buy milk' (id 1).") == 1


async def test_an_action_marked_not_undoable_offers_no_undo_and_strangers_cannot(make_handle, srv):
    async def stamp(h, args) -> Change:
        return Change(CommandResult(True, "Stamped."), (("put", "stamp", h.owner, {"n": 1}),), undoable=False)

    h = make_handle(extra=[Plugin(name="stamp", label="Stamp",
                                  commands=[CommandSpec("stamp", "now", {}, run=stamp, description="Stamp.")])])
    srv.script = calling(ToolCall("stamp_now", {}), ToolCall("todo_insert", {"name": "x"}))
    answer_id = await ran(h)
    stamped, added = await undo.results_of(h, answer_id)
    assert stamped["text"] == "Stamped." and not stamped["undoable"]
    with pytest.raises(ClientError, match="cannot be undone"):
        await undo.undo(h, stamped["key"])
    for key in (added["key"], "nope", None):
        with pytest.raises(ClientError, match="no such action"):
            await undo.undo(h.ctx.handle("owner-2") if key == added["key"] else h, key)
    assert [t["name"] for t in await todos(h)] == ["x"]


async def test_a_result_shows_as_the_plugins_component_linking_to_the_row(make_handle, srv):
    from fasthtml.common import to_xml

    from quanda.components.answer import ResultCard
    h = make_handle()
    srv.script = calling(ToolCall("todo_insert", {"name": "buy <milk>"}))
    answer_id = await ran(h)
    [result] = await undo.results_of(h, answer_id)
    card = to_xml(ResultCard(result))
    assert 'href="/p/todo#todo-1"' in card and "buy &lt;milk&gt;" in card and 'data-testid="undo"' in card
    await undo.undo(h, result["key"])
    [result] = await undo.results_of(h, answer_id)
    card = to_xml(ResultCard(result))
    assert "Undone" in card and 'data-testid="undo"' not in card


async def test_a_result_view_that_fails_shows_the_text(make_handle, srv):
    async def stamp(h, args) -> Change:
        return Change(CommandResult(True, "Stamped."), (("put", "stamp", h.owner, {"n": 1}),))

    spec = CommandSpec("stamp", "now", {}, run=stamp, description="Stamp.", result_view=lambda result: 1 / 0)
    h = make_handle(extra=[Plugin(name="stamp", label="Stamp", commands=[spec])])
    srv.script = calling(ToolCall("stamp_now", {}))
    [result] = await undo.results_of(h, await ran(h))
    assert result["view"] is None and result["text"] == "Stamped."
