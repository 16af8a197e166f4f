"""Answers asked through the HTTP API with a bearer token, on both wires: reasoning streams (Ollama
`thinking`, `<think>` tags, `reasoning_content`, `reasoning`) complete with the answer and the reasoning
apart; the commands in an API-asked answer change the token owner's todos, once."""

import json
import re

import httpx
import pytest

from tests.llm_server import SSE, Chunk, LLMTestServer, Reply
from tests.servers import AppServer

TOKEN = "answers-token"


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


@pytest.fixture(scope="module", params=["ollama", "openai"])
def server(request, tmp_path_factory, llm):
    wire = {"OLLAMA_HOST": llm.url} if request.param == "ollama" else {"QUANDA_LLM_URL": llm.openai_url}
    server = AppServer(tmp_path_factory.mktemp(request.param), QUANDA_API_TOKEN=TOKEN, **wire).start()
    server.wire = request.param
    yield server
    server.stop()


async def ask(server, question):
    """Ask through the API; (the answer's state, its thinking's content or None)."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30) as api:
        q = (await api.post("/api/messages", json={"role": "q", "content": question})).json()["id"]
        response = await api.post(f"/api/messages/{q}/answer", json={})
        assert response.status_code == 202, response.text
        answer = response.json()["answer_id"]
        async with api.stream("GET", f"/api/messages/{answer}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith(("event: thread.run.completed", "event: thread.run.warning")):
                    break
        state = (await api.get(f"/api/messages/{answer}")).json()
        page = (await api.get("/", headers={"Authorization": ""})).text
    thinking = page.split(f'id="msg-{answer}-thinking"', 1)[1].split('class="msg-warning"')[0] \
        if f'id="msg-{answer}-thinking"' in page else None
    return state, thinking, page


@pytest.mark.parametrize("style", ["field", "tags"])
async def test_reasoning_streams_complete_with_the_reasoning_apart(server, llm, style):
    if style == "field":
        chunks = [Chunk(thinking="Let me think. "), Chunk(thinking="Four."), "The answer ", "is 4."]
    else:
        chunks = ["<thi", "nk>Let me think. Four.</th", "ink>The answer ", "is 4."]
    fields = ["reasoning_content", "reasoning"] if server.wire == "openai" and style == "field" else [None]
    for field in fields:
        llm.script = Reply(chunks=chunks, sse=SSE(reasoning_field=field or "reasoning_content"))
        state, thinking, page = await ask(server, f"2+2? ({style} {field})")
        assert state["content"] == "The answer is 4." and state["immutable"] and state["warning"] == ""
        assert thinking is not None and "Let me think. Four." in thinking, (field, page[-2000:])
        assert "think>" not in state["content"]


async def test_an_api_answers_commands_change_the_owners_todos_once(server, llm):
    llm.script = Reply(chunks=['Adding it. {"action": "insert", "target": "todo", ',
                               '"args": {"name": "from the api answer"}}'])
    state, _thinking, page = await ask(server, "add a todo please")
    assert state["immutable"]
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as browser:
        todos = (await browser.get("/p/todo")).text
        sidebar = (await browser.get("/")).text
    todo_list = todos.split('id="todo-list"', 1)[1].split("</ul>", 1)[0]
    assert len(re.findall(r'<li [^>]*id="todo-\d+"', todo_list)) == 1 and "from the api answer" in todo_list  # the token owner's list
    assert sidebar.count("✓ Added the todo &#x27;from the api answer&#x27;") + \
        sidebar.count("✓ Added the todo 'from the api answer'") == 1
    assert json.dumps("add a todo please")[1:-1] in sidebar  # the question shows in the sidebar
