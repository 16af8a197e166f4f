"""The HTTP API against a real server: JSON in and out, SSE with Last-Event-ID, errors, access rules."""

import json

import httpx
import pytest

from tests.llm_server import Reply
from tests.servers import AppServer

TOKEN = "s3cret-token-for-tests"
# the module's app server (tests/conftest.py)
SERVER_ENV = {"QUANDA_API_TOKEN": TOKEN}
LLM_REPLY = Reply(chunks=["Four", "."])



@pytest.fixture
async def browser_session(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as client:
        await client.get("/")  # as a browser does: a session cookie, and its Origin on every POST
        yield client


@pytest.fixture
async def bearer(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


async def read_sse(lines, count):
    """`count` events from an SSE line iterator."""
    events, current = [], {}
    async for line in lines:
        if not line:
            events.append(current)
            current = {}
            if len(events) == count:
                break
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    return events


async def test_create_write_read_seal(browser_session):
    c = browser_session
    created = await c.post("/api/messages", json={"role": "assistant", "content": "Hi"})
    assert created.status_code == 201
    mid = created.json()["id"]
    assert created.json() == {"id": mid, "role": "assistant"}
    assert (await c.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": " there", "estimate": "…"})
            ).json() == {"seq": 2, "kind": "chunk"}
    assert (await c.post(f"/api/messages/{mid}/tokens", json={"kind": "warning", "text": "busy"})).json()["seq"] == 3
    assert (await c.get(f"/api/messages/{mid}")).json() == {
        "id": mid, "role": "assistant", "content": "Hi there", "estimate": "…", "warning": "busy",
        "immutable": False, "last_seq": 3}
    assert (await c.post(f"/api/messages/{mid}/immutable")).status_code == 204
    late = await c.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "x"})
    assert late.status_code == 409 and "immutable" in late.json()["error"]
    assert (await c.get(f"/api/messages/{mid}")).json()["content"] == "Hi there"


@pytest.mark.parametrize("body, message", [
    ({"kind": "delete", "text": "x"}, "kind must be"),
    ({"kind": "chunk", "text": 5}, "text must be a string"),
    ({"kind": "override", "text": "x", "estimate": "e"}, "only a chunk"),
])
async def test_invalid_tokens_are_400_and_write_nothing(browser_session, body, message):
    mid = (await browser_session.post("/api/messages", json={"role": "assistant"})).json()["id"]
    response = await browser_session.post(f"/api/messages/{mid}/tokens", json=body)
    assert response.status_code == 400 and message in response.json()["error"]
    assert (await browser_session.get(f"/api/messages/{mid}")).json()["last_seq"] == 0


async def test_malformed_and_oversized_bodies(browser_session):
    mid = (await browser_session.post("/api/messages", json={"role": "assistant"})).json()["id"]
    bad = await browser_session.post(f"/api/messages/{mid}/tokens", content=b"{not json",
                                     headers={"Content-Type": "application/json"})
    assert bad.status_code == 400
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
        headers = {"Content-Type": content_type} if content_type else {}
        wrong = await browser_session.post(f"/api/messages/{mid}/tokens", headers=headers,
                                           content=b'{"kind": "chunk", "text": "x"}')
        assert wrong.status_code == 415 and "application/json" in wrong.json()["error"], content_type
    huge = await browser_session.post(f"/api/messages/{mid}/tokens",
                                      json={"kind": "chunk", "text": "x" * ((1 << 20) + 1)})
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    assert (await browser_session.post("/api/messages", json={"role": "root"})).status_code == 400


@pytest.mark.parametrize("mid", ["0123456789abcdef01234567", "nope", "$where"])
async def test_unknown_or_malformed_ids_are_404(browser_session, mid):
    for response in [await browser_session.get(f"/api/messages/{mid}"),
                     await browser_session.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "x"}),
                     await browser_session.post(f"/api/messages/{mid}/immutable")]:
        assert response.status_code == 404


async def test_local_mode_every_browser_is_the_same_workspace_and_strangers_get_nothing(server, browser_session):
    mid = (await browser_session.post("/api/messages", json={"role": "assistant"})).json()["id"]
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as other:
        await other.get("/")  # another browser on this machine: the same person, the same workspace
        assert (await other.get(f"/api/messages/{mid}")).status_code == 200
        assert (await other.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "x"})
                ).status_code == 200
    async with httpx.AsyncClient(base_url=server.url) as nobody:
        assert (await nobody.get(f"/api/messages/{mid}")).status_code == 401
        assert (await nobody.post("/api/messages", json={"role": "q"})).status_code == 401
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": "Bearer wrong"}) as wrong:
        assert (await wrong.get(f"/api/messages/{mid}")).status_code == 401


async def test_the_local_api_token_acts_for_the_local_workspace(bearer, browser_session):
    mid = (await browser_session.post("/api/messages", json={"role": "assistant"})).json()["id"]
    assert (await bearer.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "ok"})).json()["seq"] == 1
    mine = (await bearer.post("/api/messages", json={"role": "q", "content": "hello"})).json()["id"]
    assert (await bearer.get(f"/api/messages/{mine}")).json()["content"] == "hello"


async def test_sse_snapshot_live_and_last_event_id_resume(bearer):
    mid = (await bearer.post("/api/messages", json={"role": "assistant"})).json()["id"]
    for text in ["a", "b", "c"]:
        await bearer.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": text})
    async with bearer.stream("GET", f"/api/messages/{mid}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        [snapshot] = await read_sse(lines, 1)
        assert snapshot["event"] == "thread.message.snapshot" and snapshot["id"] == "3"
        assert json.loads(snapshot["data"])["text"] == "abc"
        await bearer.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "d"})
        [live] = await read_sse(lines, 1)
        assert (live["event"], live["id"], json.loads(live["data"])["text"]) == ("thread.message.delta", "4", "d")
    await bearer.post(f"/api/messages/{mid}/immutable")
    async with bearer.stream("GET", f"/api/messages/{mid}/events", headers={"Last-Event-ID": "2"}) as response:
        events = await read_sse(response.aiter_lines(), 3)
    assert [(e["id"], e["event"]) for e in events] == [("3", "thread.message.delta"), ("4", "thread.message.delta"),
                                                       ("5", "thread.run.completed")]
    bad = await bearer.get(f"/api/messages/{mid}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


async def test_answer_generates_in_the_background(bearer, llm):
    llm.script = Reply(chunks=["Four", "."])
    question = (await bearer.post("/api/messages", json={"role": "q", "content": "2+2?"})).json()["id"]
    response = await bearer.post(f"/api/messages/{question}/answer", json={})
    assert response.status_code == 202
    answer = response.json()["answer_id"]
    async with bearer.stream("GET", f"/api/messages/{answer}/events") as stream:
        events = []
        async for event in _until_completed(stream):
            events.append(event)
    assert (await bearer.get(f"/api/messages/{answer}")).json()["content"] == "Four."
    assert llm.chat_requests[-1].json["messages"][-1] == {"role": "user", "content": "2+2?"}
    not_a_question = await bearer.post(f"/api/messages/{answer}/answer", json={})
    assert not_a_question.status_code == 400


async def _until_completed(response):
    current = {}
    async for line in response.aiter_lines():
        if not line:
            yield current
            if current.get("event") == "thread.run.completed":
                return
            current = {}
            continue
        field, _, value = line.partition(": ")
        current[field] = value


async def test_openai_compatible_server_at_quanda_llm_url(tmp_path, llm):
    llm.script = Reply(chunks=["Via ", "OpenAI ", "wire."])
    server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, QUANDA_LLM_URL=llm.openai_url,
                       QUANDA_LLM_MODEL="quanda-test").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            question = (await c.post("/api/messages", json={"role": "q", "content": "hi"})).json()["id"]
            answer = (await c.post(f"/api/messages/{question}/answer", json={})).json()["answer_id"]
            async with c.stream("GET", f"/api/messages/{answer}/events") as stream:
                async for _event in _until_completed(stream):
                    pass
            assert (await c.get(f"/api/messages/{answer}")).json()["content"] == "Via OpenAI wire."
        assert llm.chat_requests[-1].path == "/v1/chat/completions"
    finally:
        server.stop()
