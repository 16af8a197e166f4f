"""Commands as native tool calls, through the app: the real server in its own process, the scripted LLM server
speaking each wire (Ollama's whole calls, OpenAI's streamed argument fragments), tabs on WebSockets.

Each test gets its own app server (its own data directory), so todo ids and conversations start afresh."""

import asyncio
import html
import json
import re

import httpx
import pytest

from quanda.core import open_store
from tests.llm_server import SSE, Chunk, LLMTestServer, Reply, Rounds, ToolCall
from tests.servers import AppServer, open_tab

TIMEOUT = 20
MILK = {"name": "buy milk"}
ADDED = "✓ Added the todo 'buy milk' (id 1)."


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


@pytest.fixture
def fresh_llm(llm):
    llm.script, llm.capabilities, llm.reject_tools, llm.disconnects = Reply(chunks=["ok"]), {}, None, 0
    llm.requests.clear()
    return llm


def wire_env(wire: str, llm: LLMTestServer) -> dict:
    if wire == "ollama":
        return {"OLLAMA_HOST": llm.url, "OLLAMA_MODEL": "quanda-test"}
    return {"QUANDA_LLM_URL": llm.openai_url, "QUANDA_LLM_MODEL": "quanda-test"}


@pytest.fixture(params=["ollama", "openai"])
def wire(request):
    return request.param


@pytest.fixture
def app(tmp_path, fresh_llm, wire):
    server = AppServer(tmp_path, **wire_env(wire, fresh_llm)).start()
    server.workdir = tmp_path
    yield server
    server.stop()


class Chat:
    """A browser session on the app: questions through the HTTP API, Stop and Retry as the page sends them."""

    def __init__(self, server: AppServer, cookies: dict | None = None):
        self.server, self.cookies = server, cookies

    async def __aenter__(self) -> "Chat":
        self.client = httpx.AsyncClient(base_url=self.server.url, timeout=TIMEOUT, cookies=self.cookies,
                                        headers={"Origin": self.server.url})  # as a browser says
        await self.client.get("/")
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()

    def tab(self, page: str = "todo"):
        return open_tab(self.server, self.cookie, page)

    async def ask(self, text: str) -> str:
        question = (await self.client.post("/api/messages", json={"role": "q", "content": text})).json()["id"]
        return (await self.client.post(f"/api/messages/{question}/answer", json={})).json()["answer_id"]

    async def state(self, answer_id: str) -> dict:
        return (await self.client.get(f"/api/messages/{answer_id}")).json()

    async def settled(self, answer_id: str, warning: bool = True) -> dict:
        """The answer once it is sealed (or, with `warning`, carries a warning)."""
        event = ""
        try:
            async with asyncio.timeout(TIMEOUT):
                async with self.client.stream("GET", f"/api/messages/{answer_id}/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and (event == "thread.run.completed" or (
                                warning and event == "thread.run.warning" and json.loads(line[6:])["text"])):
                            break
        except TimeoutError:
            raise AssertionError(f"answer {answer_id} not settled within {TIMEOUT} s: "
                                 f"{await self.state(answer_id)}") from None
        return await self.state(answer_id)

    async def content_until(self, answer_id: str, text: str) -> str:
        """The answer's content once it holds `text` (read from its event stream as it grows)."""
        content = ""
        try:
            async with asyncio.timeout(TIMEOUT):
                async with self.client.stream("GET", f"/api/messages/{answer_id}/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            token = json.loads(line[6:])
                            content = content + token["text"] if token["kind"] == "chunk" else (
                                token["text"] if token["kind"] == "override" else content)
                            if text in content:
                                return content
        except TimeoutError:
            pass
        raise AssertionError(f"{text!r} not in answer {answer_id} within {TIMEOUT} s: {content!r}")

    async def send(self, ws, action: str, **data) -> None:
        await ws.send(json.dumps({"action": action, **data}))

    async def retry(self, answer_id: str) -> None:
        """Press Retry (in a tab opened now, so every frame it gets is an answer to it), again if the failed
        answer's job was still finishing (the server says so)."""
        try:
            async with asyncio.timeout(TIMEOUT), self.tab("chat") as ws:
                while True:
                    await self.send(ws, "chat.retry", message_id=answer_id)
                    while True:
                        frame = html_text(await ws.recv())
                        if 'data-testid="stop"' in frame:  # generating again
                            return
                        if "still being written" in frame:
                            break
        except TimeoutError:
            raise AssertionError(f"Retry of {answer_id} was not accepted within {TIMEOUT} s") from None

    async def todos(self) -> list[str]:
        page = (await self.client.get("/p/todo")).text
        return [html_text(name) for name in re.findall(r'class="todo-name[^"]*"[^>]*>([^<]*)<', page)]

    async def sidebar(self) -> str:
        return html_text((await self.client.get("/")).text)


def html_text(text: str) -> str:
    return html.unescape(text)


async def frame_with(ws, text: str, what: str) -> str:
    """The first frame a tab receives that holds `text`; fails with a message after TIMEOUT seconds."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = html_text(await ws.recv())
                if text in frame:
                    return frame
    except TimeoutError:
        raise AssertionError(f"the tab never showed {what} ({text!r}) within {TIMEOUT} s") from None


def tool_names(request) -> list[str]:
    return sorted(t["function"]["name"] for t in request.json.get("tools") or [])


async def claims(server: AppServer, answer_id: str) -> dict:
    """The command claims the app recorded for an answer's tool calls (read from its SQLite file)."""
    store = await open_store(f"sqlite:///{server.workdir}/data/quanda.db")
    try:
        return dict(await store.list_records("command", prefix=f"{answer_id}:tool:"))
    finally:
        await store.close()


async def test_a_tool_call_adds_a_todo_once_in_every_tab_and_the_answer_goes_on(app, fresh_llm, wire):
    fresh_llm.script = Rounds(Reply(chunks=["Adding it. ", Chunk(tool_calls=[ToolCall("todo_insert", MILK)])]),
                              Reply(chunks=["Done: ", "it is on your list."]))
    async with Chat(app) as chat, chat.tab() as tab1, chat.tab() as tab2:
        answer = await chat.ask("add buy milk")
        state = await chat.settled(answer)
        for tab in (tab1, tab2):
            await frame_with(tab, "buy milk", "the new todo")
        assert state["content"] == f"Adding it. \n\n{ADDED}\n\nDone: it is on your list."
        assert state["immutable"] is True and state["warning"] == ""
        assert await chat.todos() == ["buy milk"]
        assert (await chat.sidebar()).count("Added the todo 'buy milk'") == 1  # in the bubble, once
    first, second = fresh_llm.chat_requests
    assert tool_names(first) == ["todo_delete", "todo_insert", "todo_list", "todo_toggle", "todo_update"]
    insert = next(t for t in first.json["tools"] if t["function"]["name"] == "todo_insert")["function"]
    assert insert["parameters"] == {"type": "object", "required": ["name"], "additionalProperties": False,
                                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200}}}
    system = first.json["messages"][0]["content"]
    assert "call the tools you are given" in system and '"action": "insert"' not in system
    assistant, result = second.json["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["function"]["name"] == "todo_insert"
    assert result["role"] == "tool" and result["content"] == ADDED
    [(key, claim)] = (await claims(app, answer)).items()
    assert key == f"{answer}:tool:0:0" and claim["state"] == "done" and claim["after"]["name"] == "buy milk"
    assert claim["command"]["command"] == {"action": "insert", "target": "todo", "args": MILK}


async def test_several_calls_in_one_turn_with_split_argument_fragments(app, fresh_llm, wire):
    calls = [ToolCall("todo_insert", {"name": "bread"}), ToolCall("todo_insert", {"name": "eggs and ham"}),
             ToolCall("todo_list")]
    fresh_llm.script = Rounds(Reply(chunks=[Chunk(tool_calls=calls)], sse=SSE(tool_fragment=3)),
                              Reply(chunks=["Both added."]))
    async with Chat(app) as chat:
        state = await chat.settled(await chat.ask("bread and eggs"))
        assert await chat.todos() == ["bread", "eggs and ham"]
    lines = ["✓ Added the todo 'bread' (id 1).", "✓ Added the todo 'eggs and ham' (id 2).",
             "✓ Listed the todos: 1: bread; 2: eggs and ham"]
    assert state["content"] == "\n\n".join(lines) + "\n\nBoth added."
    results = [m for m in fresh_llm.chat_requests[-1].json["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in results] == lines


async def test_malformed_and_unknown_calls_run_nothing_and_say_why(app, fresh_llm, wire):
    calls = [ToolCall("todo_insert", '{"name": "half'), ToolCall("todo_drop_all", {}),
             ToolCall("todo_insert", {"name": "x" * 201}), ToolCall("todo_delete", {}),
             ToolCall("todo_insert", {"name": "ok", "sudo": True})]
    fresh_llm.script = Rounds(Reply(chunks=["Trying. ", Chunk(tool_calls=calls)]), Reply(chunks=["Sorry."]))
    async with Chat(app) as chat:
        state = await chat.settled(await chat.ask("do odd things"))
        assert await chat.todos() == []
    lines = state["content"].split("\n\n")
    assert lines[0] == "Trying. " and lines[-1] == "Sorry." and len(lines) == 7
    assert all(line.startswith("✗ ") for line in lines[1:6]), lines
    assert "todo_insert not run: the arguments are not valid JSON" in lines[1]
    assert "todo_drop_all not run: unknown tool 'todo_drop_all'" in lines[2]
    assert "'name' is too long (201 > 200 characters)" in lines[3]
    assert "delete todo needs 'id'" in lines[4]
    assert "insert todo takes no sudo" in lines[5]
    results = [m["content"] for m in fresh_llm.chat_requests[-1].json["messages"] if m["role"] == "tool"]
    assert len(results) == 5 and all(r.startswith("✗ ") and "not run" in r for r in results)


async def test_stop_between_rounds_runs_no_further_call(app, fresh_llm, wire):
    later = ToolCall("todo_insert", {"name": "never"})
    fresh_llm.script = Rounds(Reply(chunks=["Adding. ", Chunk(tool_calls=[ToolCall("todo_insert", MILK)])]),
                              Reply(chunks=[*(f"w{i} " for i in range(200)), Chunk(tool_calls=[later])], delay=0.05))
    async with Chat(app) as chat, chat.tab("chat") as tab:
        answer = await chat.ask("add milk, then more")
        await chat.content_until(answer, "w3 ")
        await chat.send(tab, "chat.stop", message_id=answer)
        assert await fresh_llm.wait_disconnect(timeout=10), "the LLM stream was not closed"
        state = await chat.settled(answer)
        assert state["warning"] == "stopped" and state["immutable"] is False
        assert state["content"].startswith(f"Adding. \n\n{ADDED}\n\nw0 w1 w2 w3 ")
        assert "w199" not in state["content"]
        assert await chat.todos() == ["buy milk"]
    assert len(fresh_llm.chat_requests) == 2


async def test_stop_before_the_round_completed_runs_none_of_its_calls(app, fresh_llm, wire):
    fresh_llm.script = Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", MILK)]), "Still going."],
                             end="stall")
    async with Chat(app) as chat, chat.tab("chat") as tab:
        answer = await chat.ask("add milk")
        await chat.content_until(answer, "Still going.")  # the call streamed before this text
        await chat.send(tab, "chat.stop", message_id=answer)
        state = await chat.settled(answer)
        assert state["warning"] == "stopped" and state["content"] == "Still going."
        assert await chat.todos() == []
    assert await claims(app, answer) == {}


async def test_retry_after_the_calls_ran_replays_their_results_and_runs_nothing_again(app, fresh_llm, wire):
    fresh_llm.script = [Reply(chunks=["Adding. ", Chunk(tool_calls=[ToolCall("todo_insert", MILK)])]),
                        Reply(chunks=["Half"], end="error", error="CUDA out of memory"),
                        Reply(chunks=["All done."])]
    async with Chat(app) as chat:
        answer = await chat.ask("add milk")
        failed = await chat.settled(answer)
        assert "CUDA out of memory" in failed["warning"] and failed["content"] == f"Adding. \n\n{ADDED}\n\nHalf"
        await chat.retry(answer)
        state = await chat.settled(answer, warning=False)
        assert state["content"] == f"Adding. \n\n{ADDED}\n\nAll done." and state["warning"] == ""
        assert await chat.todos() == ["buy milk"]
        assert (await chat.sidebar()).count("Added the todo 'buy milk'") == 1
    first, _, retried = fresh_llm.chat_requests  # the round that ran is not asked again
    assert tool_names(retried) == tool_names(first)
    assistant, result = retried.json["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "todo_insert" and result["content"] == ADDED
    assert list(await claims(app, answer)) == [f"{answer}:tool:0:0"]


async def test_a_reload_mid_round_shows_the_answer_and_its_result_line_once(app, fresh_llm, wire):
    words = [f"w{i} " for i in range(40)]
    fresh_llm.script = Rounds(Reply(chunks=["Adding. ", Chunk(tool_calls=[ToolCall("todo_insert", MILK)])]),
                              Reply(chunks=words, delay=0.05))
    async with Chat(app) as chat:
        answer = await chat.ask("add milk")
        await chat.content_until(answer, "w2 ")
        page = await chat.sidebar()  # what a reload renders, mid-round
        assert page.count("Added the todo 'buy milk'") == 1 and "w2" in page
        assert page.count('class="msg assistant"') == 1
        state = await chat.settled(answer)
        page = await chat.sidebar()
        assert page.count("Added the todo 'buy milk'") == 1 and "w39" in page
        assert state["content"] == f"Adding. \n\n{ADDED}\n\n" + "".join(words)
        assert await chat.todos() == ["buy milk"]


JSON_INSERT = json.dumps({"action": "insert", "target": "todo", "args": MILK})


@pytest.mark.parametrize("wire", ["ollama"])
async def test_a_model_without_tools_works_through_json_in_the_text(app, fresh_llm, wire):
    fresh_llm.capabilities["quanda-test"] = ["completion"]  # what /api/show says of a model without tools
    fresh_llm.script = Reply(chunks=["Sure.\n\n```json\n", JSON_INSERT, "\n```\n"])
    async with Chat(app) as chat, chat.tab() as tab:
        await chat.ask("add milk")
        await frame_with(tab, ADDED, "the JSON command's result line")
        assert await chat.todos() == ["buy milk"]
    [request] = fresh_llm.chat_requests
    assert "tools" not in request.json
    assert '"action": "insert", "target": "todo"' in request.json["messages"][0]["content"]


async def test_a_server_that_rejects_tools_falls_back_to_json_in_the_text(app, fresh_llm, wire):
    fresh_llm.reject_tools = 400  # llama.cpp without --jinja says "tools param requires --jinja flag"
    fresh_llm.script = Reply(chunks=["Sure: ", JSON_INSERT])
    async with Chat(app) as chat, chat.tab() as tab:
        await chat.ask("add milk")
        await frame_with(tab, ADDED, "the JSON command's result line")
        refused, answered = fresh_llm.chat_requests
        assert refused.json.get("tools") and "tools" not in answered.json
        assert '"action": "insert", "target": "todo"' in answered.json["messages"][0]["content"]
        fresh_llm.script = Reply(chunks=["Noted."])
        state = await chat.settled(await chat.ask("thanks"))
        assert state["content"] == "Noted."
        assert await chat.todos() == ["buy milk"]
    assert len(fresh_llm.chat_requests) == 3 and "tools" not in fresh_llm.chat_requests[-1].json  # remembered


async def test_a_server_killed_after_a_call_ran_leaves_the_answer_interrupted_and_retry_runs_it_not_again(
        tmp_path, fresh_llm, wire):
    fresh_llm.script = Rounds(Reply(chunks=["Adding. ", Chunk(tool_calls=[ToolCall("todo_insert", MILK)])]),
                              Reply(chunks=["Done."]))
    env = {**wire_env(wire, fresh_llm), "QUANDA_JOB_LEASE_S": "2"}
    first = AppServer(tmp_path, QUANDA_TEST_CRASH_AT="after_claim", **env).start()
    try:
        async with Chat(first) as chat:
            answer = await chat.ask("add milk")
            cookies = dict(chat.client.cookies)
        assert await asyncio.to_thread(first.proc.wait, TIMEOUT) == 137  # killed itself once the call ran
    finally:
        first.stop()
    second = AppServer(tmp_path, **env).start()
    second.workdir = tmp_path
    try:
        async with Chat(second, cookies) as chat:
            interrupted = await chat.settled(answer)  # once the dead server's lease expired
            assert "interrupted" in interrupted["warning"] and interrupted["content"] == "Adding. "
            await chat.retry(answer)
            state = await chat.settled(answer, warning=False)
            assert state["content"] == f"Adding. \n\n{ADDED}\n\nDone."
            assert await chat.todos() == ["buy milk"]
        assert list(await claims(second, answer)) == [f"{answer}:tool:0:0"]
        assert len(fresh_llm.chat_requests) == 2  # the round whose call ran is not asked again
    finally:
        second.stop()
