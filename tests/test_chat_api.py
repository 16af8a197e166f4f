"""The chat's HTTP API against a real server and the scripted LLM: list the conversation, ask in it, follow it
as SSE and resume by Last-Event-ID with nothing missed or repeated, Stop and Retry over HTTP, the LLM status,
errors; in accounts mode, one user's conversation is nobody else's."""

import asyncio
import json

import httpx
import pytest

from tests.llm_server import Chunk, Reply
from tests.servers import ACCOUNTS, AppServer, add_user

TOKEN = "chat-api-token"
# the module's app server (tests/conftest.py)
SERVER_ENV = {"QUANDA_API_TOKEN": TOKEN}
WAIT_S = 20



@pytest.fixture
async def api(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=WAIT_S) as client:
        yield client


class Events:
    """The events of an SSE response, one at a time, each awaited with a timeout; comments are skipped."""

    def __init__(self, response):
        self.lines = response.aiter_lines()

    async def next(self, what: str = "an event") -> dict:
        async def read() -> dict:
            current: dict = {}
            async for line in self.lines:
                if line.startswith(":"):
                    continue
                if not line:
                    if current:
                        return current
                    continue
                field, _, value = line.partition(": ")
                current[field] = json.loads(value) if field == "data" else value
            raise AssertionError(f"the stream ended while waiting for {what}")
        try:
            return await asyncio.wait_for(read(), WAIT_S)
        except asyncio.TimeoutError:
            raise AssertionError(f"no event within {WAIT_S} s while waiting for {what}") from None

    async def change(self, what: str = "a change") -> dict:
        """The next event with an id (a change of the conversation; `chat.status` has none)."""
        while "id" not in (event := await self.next(what)):
            pass
        return event

    async def until(self, name: str, what: str, **data) -> dict:
        while True:
            event = await self.next(what)
            if event.get("event") == name and all(event["data"].get(k) == v for k, v in data.items()):
                return event


async def wait_status(api, answer_id: str, *states: str) -> dict:
    """The answer's entry once its status is one of `states` (read through the list)."""
    async def poll() -> dict:
        async with api.stream("GET", "/api/chat/events") as response:
            events = Events(response)
            first = await events.next("the snapshot")
            for entry in first["data"]["entries"]:
                if entry.get("message_id") == answer_id and entry["status"] in states:
                    return entry
            while True:
                event = await events.next(f"answer {answer_id} to be {states}")
                data = event["data"]
                if data.get("message_id") == answer_id and data.get("status") in states:
                    return data
    return await asyncio.wait_for(poll(), WAIT_S)


async def test_list_ask_and_follow_live(api, llm):
    llm.script = Reply(chunks=["Hello ", "*there*", "."], delay=0.02)
    async with api.stream("GET", "/api/chat/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        snapshot = await events.next("the snapshot")
        assert snapshot["event"] == "chat.snapshot" and snapshot["id"] == snapshot["data"]["cursor"]
        assert snapshot["data"]["status"]["ok"] and snapshot["data"]["status"]["model"] == "quanda-test"
        asked = await api.post("/api/chat/ask", json={"text": "  Say hello  "})
        assert asked.status_code == 201, asked.text
        ids = asked.json()
        question = await events.until("chat.entry", "the question", type="q")
        assert question["data"]["message_id"] == ids["question_id"]
        assert question["data"]["message"]["content"] == "Say hello" and question["data"]["message"]["immutable"]
        answer = await events.until("chat.entry", "the answer", type="assistant")
        assert answer["data"]["message_id"] == ids["answer_id"] and answer["data"]["model"] == "quanda-test"
        assert answer["data"]["status"] in ("generating", "done")
        if answer["data"]["status"] == "generating":
            done = await events.until("chat.state", "the answer done", message_id=ids["answer_id"])
            assert done["data"]["status"] == "done"
    listed = (await api.get("/api/chat/conversation")).json()
    mine = [e for e in listed["entries"] if e.get("message_id") in ids.values()]
    assert [(e["type"], e["message"]["content"]) for e in mine] == [("q", "Say hello"), ("assistant", "Hello *there*.")]
    assert mine[1]["status"] == "done" and mine[1]["message"]["immutable"] and isinstance(mine[1]["at"], float)
    assert llm.chat_requests[-1].json["messages"][-1] == {"role": "user", "content": "Say hello"}


async def test_resuming_from_any_event_id_sends_each_change_once(api, llm):
    llm.script = Reply(chunks=["One ", "two."], delay=0.02)
    async with api.stream("GET", "/api/chat/events") as response:
        events = Events(response)
        start = await events.next("the snapshot")
        asked = (await api.post("/api/chat/ask", json={"text": "count"})).json()
        changes: list[dict] = []
        while not any(c["data"].get("message_id") == asked["answer_id"] and c["data"].get("status") == "done"
                      for c in changes):
            event = await events.next("the answer done")
            if "id" in event:
                changes.append(event)
    assert [c["data"]["message_id"] for c in changes if c["event"] == "chat.entry"] == list(asked.values())
    cursors = [start["id"]] + [c["id"] for c in changes]
    later: list[tuple[str, str, str | None]] = []  # the entries asked since, by earlier rounds
    for i, cursor in enumerate(cursors):  # resuming after event i: exactly what changed since, folded
        rest = changes[i:]
        sent = {c["data"]["message_id"] for c in rest if c["event"] == "chat.entry"}
        states = {c["data"]["message_id"]: c["data"]["status"] for c in rest
                  if c["event"] == "chat.state" and c["data"]["message_id"] not in sent}
        expected = [("chat.state", mid, status) for mid, status in states.items()]
        expected += [("chat.entry", c["data"]["message_id"], c["data"].get("status") and "done")
                     for c in rest if c["event"] == "chat.entry"] + later
        async with api.stream("GET", "/api/chat/events", headers={"Last-Event-ID": cursor}) as response:
            events = Events(response)
            assert (await events.next("the status"))["event"] == "chat.status"
            got = []
            for _ in expected:
                event = await events.change()
                got.append((event["event"], event["data"]["message_id"], event["data"].get("status")))
            assert got == expected, i
            # and nothing else: the next change is a new question's entry, not a repeat
            ids = (await api.post("/api/chat/ask", json={"text": f"next {i}"})).json()
            nxt = await events.change("the next question")
            assert (nxt["event"], nxt["data"]["message_id"]) == ("chat.entry", ids["question_id"]), nxt
        await wait_status(api, ids["answer_id"], "done")
        later += [("chat.entry", ids["question_id"], None), ("chat.entry", ids["answer_id"], "done")]


async def test_a_cursor_it_cannot_use_gets_a_snapshot(api):
    for bad in ["nonsense", "v1.000000000000.0..", "v1.zz.1.2.3"]:
        async with api.stream("GET", "/api/chat/events", headers={"Last-Event-ID": bad}) as response:
            event = await Events(response).change("a snapshot")
        assert event["event"] == "chat.snapshot" and event["data"]["reason"], bad


async def test_stop_and_retry_over_http(api, llm):
    llm.script = [Reply(chunks=[f"w{i} " for i in range(300)], delay=0.03), Reply(chunks=["Fresh ", "answer."])]
    ids = (await api.post("/api/chat/ask", json={"text": "count slowly"})).json()
    answer = ids["answer_id"]
    busy = await api.post("/api/chat/ask", json={"text": "another"})
    assert busy.status_code == 409 and "still being written" in busy.json()["error"]
    assert (await api.get("/api/chat/status")).json()["answering"] == answer
    async with api.stream("GET", f"/api/messages/{answer}/events") as response:
        events = Events(response)
        while "w3" not in (await events.next("some words"))["data"]["text"]:
            pass
    stopped = await api.post(f"/api/chat/answers/{answer}/stop", json={})
    assert stopped.status_code == 202 and stopped.json() == {"answer_id": answer, "status": "stopping"}
    assert await llm.wait_disconnect(timeout=10)  # the HTTP stream to the LLM was closed: generation stops
    entry = await wait_status(api, answer, "stopped")
    assert entry["status"] == "stopped"
    state = (await api.get(f"/api/messages/{answer}")).json()
    assert state["warning"] == "stopped" and "w3" in state["content"] and "w299" not in state["content"]
    again = await api.post(f"/api/chat/answers/{answer}/stop", json={})
    assert again.status_code == 409 and "not being written" in again.json()["error"]
    retried = await api.post(f"/api/chat/answers/{answer}/retry", json={})
    assert retried.status_code == 202
    await wait_status(api, answer, "done")
    state = (await api.get(f"/api/messages/{answer}")).json()
    assert state["content"] == "Fresh answer." and state["immutable"] and state["warning"] == ""
    final = await api.post(f"/api/chat/answers/{answer}/retry", json={})
    assert final.status_code == 409 and "final" in final.json()["error"]


async def test_thinking_is_announced_with_its_message(api, llm):
    llm.script = Reply(chunks=[Chunk(thinking="Hmm. "), Chunk(thinking="Yes."), "Answer."], delay=0.05)
    async with api.stream("GET", "/api/chat/events") as response:
        events = Events(response)
        await events.next("the snapshot")
        answer = (await api.post("/api/chat/ask", json={"text": "think"})).json()["answer_id"]
        while True:
            event = await events.next("the thinking")
            data = event["data"]
            if event["event"] == "chat.thinking" and data["message_id"] == answer:
                thinking_id = data["thinking_id"]
                break
            if event["event"] == "chat.entry" and data.get("message_id") == answer and data.get("thinking_id"):
                thinking_id = data["thinking_id"]
                break
    await wait_status(api, answer, "done")
    assert (await api.get(f"/api/messages/{thinking_id}")).json()["content"] == "Hmm. Yes."
    listed = (await api.get("/api/chat/conversation?limit=2")).json()["entries"]
    assert listed[-1]["thinking"]["content"] == "Hmm. Yes." and listed[-1]["message"]["content"] == "Answer."


@pytest.mark.parametrize("path, body, status, says", [
    ("/api/chat/ask", {"text": "   "}, 400, "type a question"),
    ("/api/chat/ask", {"text": 5}, 400, "text must be a string"),
    ("/api/chat/ask", {"text": "x" * 32_001}, 400, "too long"),
    ("/api/chat/ask", {"text": "hi", "model": "nope"}, 400, "has no model 'nope'; it has: quanda-test"),
    ("/api/chat/ask", {"text": "hi", "model": 3}, 400, "model must be a string"),
    ("/api/chat/answers/0123456789abcdef01234567/stop", {}, 404, "no message"),
    ("/api/chat/answers/nope/retry", {}, 404, "no message"),
])
async def test_bad_requests_say_why(api, path, body, status, says):
    response = await api.post(path, json=body)
    assert response.status_code == status and says in response.json()["error"], response.text


async def test_a_question_is_not_an_answer_to_stop(api, llm):
    llm.script = Reply(chunks=["ok"])
    ids = (await api.post("/api/chat/ask", json={"text": "quick"})).json()
    assert (await api.post(f"/api/chat/answers/{ids['question_id']}/stop", json={})).status_code == 404
    await wait_status(api, ids["answer_id"], "done")


async def test_limits_and_new_conversation(api, llm):
    for bad in ("0", "201", "x", "-1"):
        response = await api.get(f"/api/chat/conversation?limit={bad}")
        assert response.status_code == 400 and "limit" in response.json()["error"]
    assert len((await api.get("/api/chat/conversation?limit=1")).json()["entries"]) <= 1
    llm.script = Reply(chunks=["ok"])
    ids = (await api.post("/api/chat/ask", json={"text": "quick"})).json()
    await wait_status(api, ids["answer_id"], "done")
    first = (await api.post("/api/chat/new", json={})).json()["conversation"]
    assert (await api.get("/api/chat/conversation")).json()["entries"] == []
    new = await api.post("/api/chat/new", json={})  # the current one is empty: it stays current
    assert new.status_code == 200 and new.json()["conversation"] == first
    llm.script = Reply(chunks=["still writing"], end="stall")
    asked = await api.post("/api/chat/ask", json={"text": "again"})
    assert asked.status_code == 201
    assert (await api.post("/api/chat/new", json={})).status_code == 409  # while an answer is being written
    assert (await api.post(f"/api/chat/answers/{asked.json()['answer_id']}/stop", json={})).status_code == 202


async def test_access_like_the_rest_of_the_api(server):
    async with httpx.AsyncClient(base_url=server.url) as nobody:
        assert (await nobody.get("/api/chat/conversation")).status_code == 401
        assert (await nobody.get("/api/chat/events")).status_code == 401
        assert (await nobody.post("/api/chat/ask", json={"text": "hi"})).status_code == 401
    async with httpx.AsyncClient(base_url=server.url) as page:  # a browser of this machine: its session
        await page.get("/")
        assert (await page.get("/api/chat/status")).status_code == 200
        refused = await page.post("/api/chat/ask", json={"text": "hi"}, headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403  # the door: session-authenticated state changes come from our pages


async def test_accounts_keep_each_conversation_to_its_user(tmp_path, llm):
    llm.script = Reply(chunks=["Private."])
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", **ACCOUNTS).start()
    try:
        tokens = {}
        for name in ("ann", "bob"):
            add_user(server, name)
            import subprocess
            import sys
            made = subprocess.run([sys.executable, "-m", "quanda", "tokens", "create", name], capture_output=True,
                                  text=True, cwd=server.workdir, env=server.env, timeout=30)
            assert made.returncode == 0, made.stderr
            tokens[name] = next(w for w in made.stdout.split() if w.startswith("qk_"))
        ann = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {tokens['ann']}"},
                                timeout=WAIT_S)
        bob = httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {tokens['bob']}"},
                                timeout=WAIT_S)
        async with ann, bob:
            async with bob.stream("GET", "/api/chat/events") as response:
                events = Events(response)
                assert (await events.next("bob's snapshot"))["data"]["entries"] == []
                ids = (await ann.post("/api/chat/ask", json={"text": "ann's secret"})).json()
                await wait_status(ann, ids["answer_id"], "done")
                await bob.post("/api/chat/ask", json={"text": "bob's own"})
                seen = await events.until("chat.entry", "bob's question", type="q")
                assert seen["data"]["message"]["content"] == "bob's own"  # ann's entries never came
            assert all(e.get("message_id") not in ids.values()
                       for e in (await bob.get("/api/chat/conversation")).json()["entries"])
            assert (await bob.post(f"/api/chat/answers/{ids['answer_id']}/retry", json={})).status_code == 404
            assert (await bob.get(f"/api/messages/{ids['answer_id']}")).status_code == 404
            anns = (await ann.get("/api/chat/conversation")).json()["entries"]
            assert [e["message"]["content"] for e in anns] == ["ann's secret", "Private."]
    finally:
        server.stop()


async def test_a_quiet_message_stream_sends_keepalives_and_ends_with_its_reader():
    from quanda.http_api import with_keepalives
    from quanda.core import QuandaError

    gate = asyncio.Event()

    async def reader():
        yield "a"
        await gate.wait()  # a quiet LLM
        yield "b"

    items = with_keepalives(reader(), every_s=0.01)
    assert [await items.__anext__(), await items.__anext__()] == ["a", None]  # None: send a keep-alive
    gate.set()
    assert [x async for x in items if x is not None] == ["b"]

    async def failing():
        yield "a"
        raise QuandaError("the store went away")

    with pytest.raises(QuandaError, match="went away"):
        [x async for x in with_keepalives(failing(), every_s=1)]


async def noted_entry(api, answer_id: str) -> dict:
    """The answer's entry in the list once it is marked `unchanged` or `empty` (after its seal: its commands
    are looked at last), or as it is after WAIT_S."""
    await wait_status(api, answer_id, "done", "final")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        entries = (await api.get("/api/chat/conversation")).json()["entries"]
        entry = next(e for e in entries if e.get("message_id") == answer_id)
        if entry["unchanged"] or entry["empty"] or loop.time() > deadline:
            return entry
        await asyncio.sleep(0.05)  # the answer's job is winding up: a chat.state may not follow this last step


async def test_an_answer_that_said_nothing_or_changed_nothing_says_so_in_the_api_and_the_exports(api, llm):
    await api.post("/api/chat/new")
    llm.script = Reply(chunks=[])  # the model finishes without a word
    silent = (await api.post("/api/chat/ask", json={"text": "Hello?"})).json()["answer_id"]
    entry = await noted_entry(api, silent)
    assert entry["outcome"] == "done" and entry["empty"] and not entry["unchanged"], entry
    llm.script = Reply(chunks=["Sure, ", "noted."])  # a request answered in prose: no command ran
    prose = (await api.post("/api/chat/ask", json={"text": "add buy milk"})).json()["answer_id"]
    entry = await noted_entry(api, prose)
    assert entry["unchanged"] and not entry["empty"], entry
    page = (await api.get("/")).text
    bubble = page.split(f'id="msg-{silent}"', 1)[1].split("<li ", 1)[0]
    assert 'data-testid="empty"' in bubble and "The model sent no answer." in bubble
    cid = (await api.get("/p/chat")).text.split('data-cid="', 1)[1].split('"', 1)[0]
    exported = {m.get("id"): m for m in (await api.get(f"/chat/export/{cid}.json")).json()["messages"]}
    assert exported[silent]["empty"] and exported[prose]["unchanged"] and not exported[prose]["empty"]
    markdown = (await api.get(f"/chat/export/{cid}.md")).text
    assert "*(The model sent no answer)*" in markdown and "> Nothing was changed." in markdown
