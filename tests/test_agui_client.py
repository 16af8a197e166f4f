"""AG-UI with the official client: `@ag-ui/client` (npm, tests/agui/) run by Node against a real server and the
scripted LLM — a plain answer, an answer with one of our tools (run once, reported with its result), a frontend
tool round trip, an aborted run (the LLM's stream is closed), a resumed stream (nothing twice).

Node and the package are required where QUANDA_TEST_AGUI=1 (.ci/run sets it after `npm ci` in tests/agui): a
missing one fails the run there; elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import httpx
import pytest
from bs4 import BeautifulSoup

from quanda.components.ids import TODO_LIST
from tests.llm_server import Chunk, Reply, Rounds, ToolCall
from tests.servers import ROOT, AppServer

TOKEN = "agui-client-token"
# the module's app server (tests/conftest.py)
SERVER_ENV = {"QUANDA_API_TOKEN": TOKEN, "QUANDA_AGUI_STOP_GRACE_S": "0.5"}
CLIENT_DIR = ROOT / "tests" / "agui"
REQUIRED = os.environ.get("QUANDA_TEST_AGUI") == "1"
RUN_S = 60


def client_problem() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (Node 20+ runs the official @ag-ui/client)"
    if not (CLIENT_DIR / "node_modules" / "@ag-ui" / "client" / "package.json").exists():
        return "@ag-ui/client is not installed: run `npm ci` in tests/agui"
    return None


@pytest.fixture(scope="module", autouse=True)
def _client_installed():
    problem = client_problem()
    if problem and REQUIRED:
        pytest.fail(f"QUANDA_TEST_AGUI=1 but {problem}", pytrace=False)
    if problem:
        pytest.skip(problem)



async def scenario(server: AppServer, name: str, thread: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        "node", str(CLIENT_DIR / "scenario.mjs"), name, server.url, TOKEN, thread, cwd=CLIENT_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "SUPPRESS_TRANSFORMATION_WARNINGS": "1"})
    try:
        out, err = await asyncio.wait_for(process.communicate(), RUN_S)
    except asyncio.TimeoutError:
        process.kill()
        raise AssertionError(f"the {name} scenario did not end within {RUN_S} s") from None
    assert process.returncode == 0, err.decode()
    return json.loads(out.decode().strip().splitlines()[-1])


def types(run: dict) -> list[str]:
    return [event["type"] for event in run["events"]]


def assistant_texts(messages: list[dict]) -> list[str]:
    return [m.get("content") or "" for m in messages if m["role"] == "assistant"]


async def conversation(server: AppServer) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        return (await api.get("/api/chat/conversation")).json()["entries"]


async def test_plain_answer_streams_into_the_thread_and_the_conversation(server, llm):
    llm.script = Reply(chunks=[Chunk(thinking="Greeting. "), "Hello ", "from ", "Quanda."], delay=0.01)
    report = await scenario(server, "plain", "thread-plain")
    run = report["runs"][0]
    assert run["error"] is None
    seen = types(run)
    assert seen[0] == "RUN_STARTED" and seen[-1] == "RUN_FINISHED"
    assert "MESSAGES_SNAPSHOT" in seen and "REASONING_MESSAGE_CONTENT" in seen
    assert seen.index("TEXT_MESSAGE_START") < seen.index("TEXT_MESSAGE_CONTENT") < seen.index("TEXT_MESSAGE_END")
    assert run["events"][-1]["outcome"]["type"] == "success"
    messages = run["messages"]
    assert [m["role"] for m in messages if m["role"] in ("user", "assistant")] == ["user", "assistant"]
    assert assistant_texts(messages) == ["Hello from Quanda."]
    assert [m["content"] for m in messages if m["role"] == "reasoning"] == ["Greeting. "]
    entries = await conversation(server)  # the same question and answer, in the workspace's conversation
    assert [(e["type"], e["message"]["content"]) for e in entries[-2:]] == [("q", "Say hello"),
                                                                            ("assistant", "Hello from Quanda.")]
    assert entries[-1]["message_id"] == next(m["id"] for m in messages if m["role"] == "assistant")


async def test_our_tool_runs_once_and_is_reported_with_its_result(server, llm):
    llm.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", {"name": "milk"})])]),
                        Reply(chunks=["Added milk."]))
    asked = len(llm.chat_requests)
    report = await scenario(server, "tool", "thread-tool")
    run = report["runs"][0]
    assert run["error"] is None and run["events"][-1]["type"] == "RUN_FINISHED"
    start = next(e for e in run["events"] if e["type"] == "TOOL_CALL_START")
    assert start["toolCallName"] == "todo_insert"
    args = "".join(e["delta"] for e in run["events"] if e["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args) == {"name": "milk"}
    result = next(e for e in run["events"] if e["type"] == "TOOL_CALL_RESULT")
    assert result["toolCallId"] == start["toolCallId"] and result["content"].startswith("✓")
    assert "pendingToolCallIds" not in run["events"][-1]["outcome"]  # ours ran here: nothing for the client
    tool_messages = [m for m in run["messages"] if m["role"] == "tool"]
    assert [m["toolCallId"] for m in tool_messages] == [start["toolCallId"]]
    assert assistant_texts(run["messages"])[-1].endswith("Added milk.")
    assert len(llm.chat_requests) - asked == 2  # the call, then the answer after its result
    async with httpx.AsyncClient(base_url=server.url) as page:  # the todo exists once
        html = (await page.get("/p/todo", headers={"Authorization": f"Bearer {TOKEN}"})).text
    todos = BeautifulSoup(html, "html.parser").select(f"#{TODO_LIST} li")  # (the answer's result card shows it too)
    assert [li.get_text(" ", strip=True).count("milk") for li in todos] == [1]


async def test_frontend_tool_ends_the_run_and_its_result_continues_the_answer(server, llm):
    llm.script = Rounds(Reply(chunks=["Let me check. ", Chunk(tool_calls=[
                            ToolCall("confirm_with_user", {"question": "Delete everything?"})])]),
                        Reply(chunks=["You confirmed: done."]))
    report = await scenario(server, "frontend", "thread-frontend")
    first, second = report["runs"]
    assert first["error"] is None and second["error"] is None
    finished = first["events"][-1]
    assert finished["type"] == "RUN_FINISHED"
    start = next(e for e in first["events"] if e["type"] == "TOOL_CALL_START")
    assert start["toolCallName"] == "confirm_with_user"
    assert finished["outcome"]["pendingToolCallIds"] == [start["toolCallId"]]
    assert "TOOL_CALL_RESULT" not in types(first)  # the client runs its own tool
    request = llm.chat_requests[-1].json  # the second run went on from the client's result
    last = request["messages"][-1]
    assert last["role"] == "tool" and last["content"] == "The user said: yes"
    assert request["messages"][-2]["tool_calls"][0]["function"]["name"] == "confirm_with_user"
    assert any(t["function"]["name"] == "confirm_with_user" for t in llm.chat_requests[-2].json["tools"])
    assert assistant_texts(second["messages"])[-1] == "You confirmed: done."
    assert types(second)[-1] == "RUN_FINISHED"


async def test_abort_stops_the_answer_and_closes_the_llm_stream(server, llm):
    llm.script = Reply(chunks=[f"word{i} " for i in range(400)], delay=0.05)
    before = llm.disconnects
    report = await scenario(server, "abort", "thread-abort")
    run = report["runs"][0]
    assert "TEXT_MESSAGE_CONTENT" in types(run) and "RUN_FINISHED" not in types(run)
    assert await llm.wait_disconnect(before + 1, timeout=20), "the LLM's stream was not closed after abortRun()"
    entries = await conversation(server)
    for _ in range(100):
        if entries[-1]["status"] == "stopped":
            break
        await asyncio.sleep(0.1)  # the stop lands in the store just after the LLM stream closes
        entries = await conversation(server)
    assert entries[-1]["type"] == "assistant" and entries[-1]["status"] == "stopped"


async def test_a_cut_stream_resumes_by_last_event_id_with_nothing_twice(server, llm):
    words = [f"w{i} " for i in range(30)]
    llm.script = Reply(chunks=words, delay=0.05)
    report = await scenario(server, "resume", "thread-resume")
    first, again = report["runs"]
    assert report["lastEventId"], "the cut came before any event with an id"
    assert "RUN_FINISHED" not in types(first)
    assert types(again)[0] == "RUN_STARTED" and types(again)[-1] == "RUN_FINISHED"
    assert "MESSAGES_SNAPSHOT" not in types(again)  # resumed: what came before the id is not sent again
    assert assistant_texts(again["messages"]) == ["".join(words)]
    ids = [m["id"] for m in again["messages"]]
    assert len(ids) == len(set(ids))
    entries = await conversation(server)  # the answer was not stopped by the cut: it was resumed in time
    assert entries[-1]["status"] == "done" and entries[-1]["message"]["content"] == "".join(words)
