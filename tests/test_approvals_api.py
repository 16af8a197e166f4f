"""Approvals against a real server (`python main.py`) and the scripted LLM, over the HTTP API: a delete the
model asks for waits; Approve runs it once and the answer goes on, Reject leaves the todo and tells the model;
two Approves at once make one decision; a pending approval survives a restart; a server killed between the
decision and the effect, or between the effect and its result line, leaves after restart one effect, one
result line and no pending card."""

import asyncio

import httpx
import pytest

from tests.llm_server import Chunk, Reply, Rounds, ToolCall
from tests.servers import AppServer
from tests.test_chat_tools import Chat, claims, fresh_llm, frame_with, wire_env  # noqa: F401

WAITS = "todo_delete waits for your approval"
DELETED = "✓ Deleted the todo 'buy milk' (id 1)."
REJECTED = "✗ todo_delete not run: the user rejected it"
DELETE = Rounds(Reply(chunks=["Deleting. ", Chunk(tool_calls=[ToolCall("todo_delete", {"id": 1})])]),
                Reply(chunks=["Over."]))


def env_of(llm) -> dict:
    return {**wire_env("ollama", llm), "QUANDA_JOB_LEASE_S": "2"}


@pytest.fixture
def app(tmp_path, fresh_llm):
    server = AppServer(tmp_path, **env_of(fresh_llm)).start()
    server.workdir = tmp_path
    yield server
    server.stop()


async def add_milk(chat: Chat) -> None:
    async with chat.tab() as ws:
        await chat.send(ws, "todo.add", name="buy milk")
        await frame_with(ws, "buy milk", "the todo added by hand")


async def asked_delete(chat: Chat) -> tuple[str, dict]:
    """An answer that waits for the approval of its delete, and the approval as the API lists it."""
    await add_milk(chat)
    answer = await chat.ask("delete milk")
    await chat.content_until(answer, WAITS)
    listed = (await chat.client.get("/api/chat/approvals")).json()["approvals"]
    assert [q["answer_id"] for q in listed] == [answer], listed
    return answer, listed[0]


async def test_approve_over_http_runs_the_delete_once_and_the_answer_goes_on(app, fresh_llm):
    fresh_llm.script = DELETE
    async with Chat(app) as chat:
        answer, question = await asked_delete(chat)
        assert question["decision"] is None and "Deleted the todo 'buy milk'" in question["what"]
        assert await chat.todos() == ["buy milk"]  # nothing ran before the decision
        assert len(fresh_llm.chat_requests) == 1
        decided = await chat.client.post(f"/api/chat/approvals/{question['key']}/approve")
        assert decided.status_code == 200 and decided.json() == {"key": question["key"], "decision": "approved"}
        state = await chat.settled(answer, warning=False)
        assert state["content"] == f"Deleting. \n\n{DELETED}\n\nOver." and state["immutable"]
        assert await chat.todos() == []
        again = await chat.client.post(f"/api/chat/approvals/{question['key']}/reject")
        assert again.status_code == 409 and "already approved" in again.json()["error"]
        assert (await chat.client.get("/api/chat/approvals")).json() == {"approvals": []}
        [entry] = [e for e in (await chat.client.get("/api/chat/conversation")).json()["entries"]
                   if e.get("message_id") == answer]
        assert entry["approvals"][0]["decision"] == "approved" and entry["approvals"][0]["settled"]
    assert list(await claims(app, answer)) == [f"{answer}:tool:0:0"]


async def test_reject_over_http_leaves_the_todo_and_the_answer_says_so(app, fresh_llm):
    fresh_llm.script = DELETE
    async with Chat(app) as chat:
        answer, question = await asked_delete(chat)
        decided = await chat.client.post(f"/api/chat/approvals/{question['key']}/reject")
        assert decided.json()["decision"] == "rejected"
        state = await chat.settled(answer, warning=False)
        assert state["content"] == f"Deleting. \n\n{REJECTED}\n\nOver."
        assert await chat.todos() == ["buy milk"]
        convs = (await chat.client.get("/p/chat")).text
        cid = convs.split('data-cid="', 1)[1].split('"', 1)[0]
        exported = (await chat.client.get(f"/chat/export/{cid}.json")).json()
        [mine] = [m for m in exported["messages"] if m.get("id") == answer]
        assert mine["approvals"] == [{"what": question["what"], "source": "tool", "decision": "rejected"}]
        markdown = (await chat.client.get(f"/chat/export/{cid}.md")).text
        assert f"> Rejected: {question['what']}" in markdown
    tool_messages = [m["content"] for m in fresh_llm.chat_requests[-1].json["messages"] if m["role"] == "tool"]
    assert tool_messages == [REJECTED]


async def test_two_approves_at_once_make_one_decision_and_one_effect(app, fresh_llm):
    fresh_llm.script = DELETE
    async with Chat(app) as chat:
        answer, question = await asked_delete(chat)
        url = f"/api/chat/approvals/{question['key']}/approve"
        first, second = await asyncio.gather(chat.client.post(url), chat.client.post(url))
        assert sorted([first.status_code, second.status_code]) == [200, 409]
        state = await chat.settled(answer, warning=False)
        assert state["content"].count(DELETED) == 1
    assert len(await claims(app, answer)) == 1


async def test_unknown_or_foreign_approvals_are_404_and_the_api_needs_access(app, fresh_llm):
    async with Chat(app) as chat:
        assert (await chat.client.post("/api/chat/approvals/nope:tool:0:0/approve")).status_code == 404
    async with httpx.AsyncClient(base_url=app.url) as anonymous:
        assert (await anonymous.get("/api/chat/approvals")).status_code in (401, 403)


async def test_a_pending_approval_survives_a_restart(tmp_path, fresh_llm):
    fresh_llm.script = DELETE
    first = AppServer(tmp_path, **env_of(fresh_llm)).start()
    try:
        async with Chat(first) as chat:
            answer, question = await asked_delete(chat)
            cookies = dict(chat.client.cookies)
    finally:
        first.stop()
    second = AppServer(tmp_path, **env_of(fresh_llm)).start()
    second.workdir = tmp_path
    try:
        async with Chat(second, cookies) as chat:
            assert "Approve" in (await chat.client.get("/")).text  # the card, with its buttons, after the restart
            listed = (await chat.client.get("/api/chat/approvals")).json()["approvals"]
            assert [q["key"] for q in listed] == [question["key"]]
            await chat.client.post(f"/api/chat/approvals/{question['key']}/approve")
            state = await chat.settled(answer, warning=False)
            assert state["content"] == f"Deleting. \n\n{DELETED}\n\nOver."
            assert await chat.todos() == []
    finally:
        second.stop()


@pytest.mark.parametrize("point", ["after_decision", "after_effect", "before_result_line"])
async def test_a_server_killed_between_approval_effect_and_result_leaves_one_of_each(tmp_path, fresh_llm, point):
    fresh_llm.script = DELETE
    dying = AppServer(tmp_path, QUANDA_TEST_CRASH_AT=point, **env_of(fresh_llm)).start()
    try:
        async with Chat(dying) as chat:
            answer, question = await asked_delete(chat)
            cookies = dict(chat.client.cookies)
            with pytest.raises(httpx.HTTPError):  # the server dies before it answers (after_decision) or soon after
                await chat.client.post(f"/api/chat/approvals/{question['key']}/approve")
                await chat.settled(answer, warning=False)
        assert await asyncio.to_thread(dying.proc.wait, 20) == 137
    finally:
        dying.stop()
    second = AppServer(tmp_path, **env_of(fresh_llm)).start()
    second.workdir = tmp_path
    try:
        async with Chat(second, cookies) as chat:
            state = await chat.settled(answer, warning=False)  # resumed by the restarted server
            assert state["content"] == f"Deleting. \n\n{DELETED}\n\nOver.", state
            assert await chat.todos() == []
            page = (await chat.client.get("/")).text
            assert 'data-testid="approve"' not in page and 'data-decision="approved"' in page
            assert (await chat.client.get("/api/chat/approvals")).json() == {"approvals": []}
        assert list(await claims(second, answer)) == [f"{answer}:tool:0:0"]
    finally:
        second.stop()


async def test_undo_over_http_restores_the_todo_once_and_a_second_undo_is_refused(app, fresh_llm):
    fresh_llm.script = DELETE
    async with Chat(app) as chat:
        answer, question = await asked_delete(chat)
        await chat.client.post(f"/api/chat/approvals/{question['key']}/approve")
        await chat.settled(answer, warning=False)
        [entry] = [e for e in (await chat.client.get("/api/chat/conversation")).json()["entries"]
                   if e.get("message_id") == answer]
        [result] = entry["results"]
        assert result["text"] == DELETED[2:] and result["undoable"] and not result["undone"]
        undone = await chat.client.post(f"/api/chat/actions/{result['key']}/undo")
        assert undone.status_code == 200 and undone.json()["text"] == f"The user undid: {DELETED[2:]}"
        assert await chat.todos() == ["buy milk"]
        again = await chat.client.post(f"/api/chat/actions/{result['key']}/undo")
        assert again.status_code == 409 and "undone already" in again.json()["error"]
        assert (await chat.client.post("/api/chat/actions/nope:0/undo")).status_code == 404
        assert (await chat.sidebar()).count(f"The user undid: {DELETED[2:]}") == 1  # the model is told, once
        convs = (await chat.client.get("/p/chat")).text
        cid = convs.split('data-cid="', 1)[1].split('"', 1)[0]
        [mine] = [m for m in (await chat.client.get(f"/chat/export/{cid}.json")).json()["messages"]
                  if m.get("id") == answer]
        assert mine["results"] == [{"text": DELETED[2:], "undone": True}]
        assert f"> Undone: {DELETED[2:]}" in (await chat.client.get(f"/chat/export/{cid}.md")).text


async def test_undo_after_the_user_renamed_the_todo_is_refused_with_the_reason(app, fresh_llm):
    fresh_llm.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", {"name": "buy milk"})])]),
                              Reply(chunks=["Added."]))
    async with Chat(app) as chat:
        answer = await chat.ask("add milk")
        await chat.settled(answer, warning=False)
        async with chat.tab() as ws:
            await chat.send(ws, "todo.edit", id="1", name="buy oat milk")
            await frame_with(ws, "buy oat milk", "the rename")
        [entry] = [e for e in (await chat.client.get("/api/chat/conversation")).json()["entries"]
                   if e.get("message_id") == answer]
        refused = await chat.client.post(f"/api/chat/actions/{entry['results'][0]['key']}/undo")
        assert refused.status_code == 409 and "changed since" in refused.json()["error"]
        assert await chat.todos() == ["buy oat milk"]
