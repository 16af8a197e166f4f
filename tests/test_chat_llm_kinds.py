"""The chat against the kinds of real LLM servers, as the fixture plays them (tests/llm_kinds.py), through the
app's own process: nothing the app does while an answer streams cuts it (status checks from tabs and the
terminal's API, another answer, another app server); an answer cut by the server is marked cut; the prompt
fits the window and the page marks what the assistant no longer sees; usage is kept; an answer's outcome
survives its seal. tests/test_real_llm.py does the main ones against a real model."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

TOKEN = "llm-kinds-token"
WAIT_S = 30
LONG = Reply(chunks=[f"w{i} " for i in range(60)], delay=0.05)  # 3 s: six status-check periods of 0.5 s


def app_for(tmp_path, srv: LLMTestServer, **env: str) -> AppServer:
    base = {"QUANDA_API_TOKEN": TOKEN, "QUANDA_LLM_URL": srv.openai_url, "QUANDA_LLM_CHECK_S": "0.5"}
    return AppServer(tmp_path, **{**base, **env}).start()


def client(server: AppServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=WAIT_S)


async def ask(api: httpx.AsyncClient, text: str) -> str:
    response = await api.post("/api/chat/ask", json={"text": text})
    assert response.status_code == 201, response.text
    return response.json()["answer_id"]


async def answer_entry(api: httpx.AsyncClient, answer_id: str, until=lambda e: e["status"] != "generating",
                       wait_s: float = WAIT_S) -> dict:
    """The answer's entry in the conversation, once `until` holds (polled: the API is the client here)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        body = (await api.get("/api/chat/conversation", params={"limit": 200})).json()
        found = [e for e in body["entries"] if e.get("message_id") == answer_id]
        if found and until(found[0]):
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"answer {answer_id} did not get there within {wait_s} s: {found}")


async def poll_status(server: AppServer, cookie: str, stop: asyncio.Event, seen: list) -> None:
    """A tab asking for the badge as static/chat.js does, and the terminal client's status call, both often."""
    async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                  additional_headers={"Cookie": cookie}) as ws, client(server) as api:
        async def drain() -> None:  # a tab reads what it is sent (else the socket's keep-alive times out)
            async for _frame in ws:
                pass
        reading = asyncio.create_task(drain())
        while not stop.is_set():
            await ws.send(json.dumps({"action": "chat.status"}))
            seen.append((await api.get("/api/chat/status")).json()["text"])
            await asyncio.sleep(0.1)
        reading.cancel()


async def cookie_of(server: AppServer) -> str:
    async with httpx.AsyncClient(base_url=server.url) as c:
        await c.get("/")
        return "; ".join(f"{k}={v}" for k, v in c.cookies.items())


async def test_status_checks_never_cut_an_answer_of_llama_cpp_python(tmp_path):
    """The bug: a tab's status check (GET /v1/models) ended the answer on a server that interrupts."""
    async with LLMTestServer(LONG, kind="llama-cpp-python") as srv:
        server = app_for(tmp_path, srv)
        try:
            stop, seen = asyncio.Event(), []
            poller = asyncio.create_task(poll_status(server, await cookie_of(server), stop, seen))
            async with client(server) as api:
                entry = await answer_entry(api, await ask(api, "Tell a long story"))
            stop.set()
            await poller
            assert entry["outcome"] == "done" and entry["message"]["content"].count("w") == 60
            assert srv.interrupted == 0
            assert any("busy answering" in text for text in seen)  # the badge said so instead of asking
        finally:
            server.stop()


async def test_a_cut_answer_is_marked_cut_with_retry(tmp_path):
    """Something outside the app asked the server meanwhile: the answer is cut, says so, and Retry works."""
    async with LLMTestServer(LONG, kind="llama-cpp-python") as srv:
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                answer_id = await ask(api, "Tell a long story")
                await answer_entry(api, answer_id, lambda e: e["message"]["content"])
                async with httpx.AsyncClient() as outsider:
                    await outsider.get(srv.openai_url + "/models")
                entry = await answer_entry(api, answer_id)
                assert entry["outcome"] == "cut" and "ended the answer before it was finished" in entry["reason"]
                assert 0 < entry["message"]["content"].count("w") < 60 and not entry["message"]["immutable"]
                page = (await api.get("/")).text
                assert 'data-testid="retry"' in page
                srv.script = Reply(chunks=["Whole."])
                assert (await api.post(f"/api/chat/answers/{answer_id}/retry")).status_code == 202
                assert (await answer_entry(api, answer_id))["outcome"] == "done"
        finally:
            server.stop()


async def test_answers_of_two_app_servers_sharing_one_llm_take_turns(tmp_path):
    async with LLMTestServer(LONG, kind="llama-cpp-python") as srv:
        first = app_for(tmp_path, srv, QUANDA_JOB_LEASE_S="3")
        second = app_for(tmp_path, srv, QUANDA_JOB_LEASE_S="3")
        try:
            async with client(first) as a, client(second) as b:
                one = await ask(a, "First")
                await answer_entry(a, one, lambda e: e["message"]["content"])
                q = (await b.post("/api/messages", json={"role": "q", "content": "Second"})).json()["id"]
                two = (await b.post(f"/api/messages/{q}/answer", json={})).json()["answer_id"]
                status = (await b.get("/api/chat/status")).json()
                assert "busy answering" in status["text"]  # the other server holds the LLM: not asked
                assert (await answer_entry(a, one))["outcome"] == "done"
                assert (await answer_entry(b, two))["outcome"] == "done"
                assert srv.interrupted == 0
        finally:
            first.stop()
            second.stop()


async def test_a_failed_answer_keeps_its_reason_after_the_seal(tmp_path):
    """Failed, then sealed by the next question: the reason stays in the bubble after a reload, the viewer, both
    exports and the API; Retry is not offered (it would not work), Regenerate is, on the last answer."""
    async with LLMTestServer(Reply(status=500, error="model crashed")) as srv:
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                failed = await ask(api, "First")
                entry = await answer_entry(api, failed)
                assert entry["outcome"] == "failed" and "500" in entry["reason"]
                srv.script = Reply(chunks=["Fine."])
                await answer_entry(api, await ask(api, "Second"))
                entry = await answer_entry(api, failed)
                assert entry["status"] == "final" and entry["message"]["immutable"] and not entry["message"]["warning"]
                assert entry["outcome"] == "failed" and "model crashed" in entry["reason"]
                page = (await api.get("/")).text
                bubble = page.split(f'id="msg-{failed}"', 1)[1].split("<li ", 1)[0]
                assert "model crashed" in bubble and 'data-outcome="failed"' in bubble
                assert 'data-testid="retry"' not in bubble and 'data-testid="regenerate"' not in bubble
                convs = (await api.get("/p/chat")).text
                cid = convs.split('data-cid="', 1)[1].split('"', 1)[0]
                exported = (await api.get(f"/chat/export/{cid}.json")).json()
                first = next(m for m in exported["messages"] if m.get("id") == failed)
                assert first["outcome"] == "failed" and "model crashed" in first["reason"]
                markdown = (await api.get(f"/chat/export/{cid}.md")).text
                assert "*(no answer: failed)*" in markdown and "model crashed" in markdown
        finally:
            server.stop()


async def test_a_long_conversation_fits_the_window_and_the_page_marks_the_horizon(tmp_path):
    """llama.cpp tells its window (/props, per slot); every request fits it; older turns go first, visibly."""
    async with LLMTestServer(Reply(chunks=["Sure. " * 30]), kind="llama.cpp") as srv:
        srv.window = 900
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                for n in range(8):
                    entry = await answer_entry(api, await ask(api, f"Question {n}: " + "word " * 120))
                    assert entry["outcome"] == "done", entry
                assert max(srv.prompt_tokens) < 900
                assert entry["usage"]["counted"] == "server" and entry["usage"]["prompt_tokens"] < 900
                page = (await api.get("/")).text
                assert 'data-testid="horizon"' in page and 'data-testid="usage"' in page
                sent = srv.chat_requests[-1].json
                assert sent["messages"][0]["role"] == "system" and "Question 7" in sent["messages"][-1]["content"]
                assert not any("Question 0" in m["content"] for m in sent["messages"])
                assert sent["max_tokens"] >= 900 // 4
        finally:
            server.stop()


async def test_llama_cpp_python_window_is_learnt_from_its_empty_answer(tmp_path):
    """Its window is smaller than QUANDA_LLM_CONTEXT and it cannot say so: the empty 200 is probed, the window
    learnt, and the same question answered."""
    async with LLMTestServer(Reply(chunks=["Fine."]), kind="llama-cpp-python") as srv:
        srv.window = 700
        server = app_for(tmp_path, srv, QUANDA_LLM_CONTEXT="4096")
        try:
            async with client(server) as api:
                entry = await answer_entry(api, await ask(api, "word " * 1500))
                assert entry["outcome"] == "done" and entry["message"]["content"] == "Fine."
                assert srv.prompt_tokens[-1] < 700 and entry["usage"]["window"] == 700
        finally:
            server.stop()


async def test_ollama_gets_num_ctx_and_the_conversation_settings(tmp_path):
    async with LLMTestServer(Reply(chunks=["Oui."])) as srv:
        server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=srv.url, OLLAMA_MODEL="quanda-test",
                           QUANDA_LLM_CONTEXT="3000").start()
        try:
            async with client(server) as api:
                settings = {"system_prompt": "Answer in French.", "temperature": 0.3, "context": 2048}
                assert (await api.put("/api/chat/settings", json=settings)).json() == settings
                assert (await api.put("/api/chat/settings", json={"temperature": 9})).status_code == 400
                await answer_entry(api, await ask(api, "Hello"))
                sent = srv.chat_requests[-1].json
                assert sent["options"]["num_ctx"] == 2048 and sent["options"]["temperature"] == 0.3
                assert "Answer in French." in sent["messages"][0]["content"] and srv.dropped_tokens == 0
                await api.put("/api/chat/settings", json={"context": None, "temperature": ""})
                await answer_entry(api, await ask(api, "Again"))
                assert srv.chat_requests[-1].json["options"]["num_ctx"] == 3000  # QUANDA_LLM_CONTEXT (< trained)
                assert "temperature" not in srv.chat_requests[-1].json["options"]
        finally:
            server.stop()


async def test_regenerate_keeps_versions_and_the_llm_sees_the_one_on_screen(tmp_path):
    async with LLMTestServer([Reply(chunks=["First version."]), Reply(chunks=["Second version."]),
                              Reply(chunks=["Next."])]) as srv:
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                first = await ask(api, "Hi")
                await answer_entry(api, first)
                again = await api.post(f"/api/chat/answers/{first}/regenerate")
                assert again.status_code == 202, again.text
                second = again.json()["answer_id"]
                entry = await answer_entry(api, second)
                assert (entry["version"], entry["versions"], entry["message"]["content"]) == (2, 2, "Second version.")
                cookie = await cookie_of(server)
                async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                              additional_headers={"Cookie": cookie}) as ws:
                    await ws.send(json.dumps({"action": "chat.version", "message_id": second, "to": 0}))
                    entry = await answer_entry(api, first, lambda e: True)
                assert entry["version"] == 1 and entry["message"]["content"] == "First version."
                await answer_entry(api, await ask(api, "And?"))
                sent = [m["content"] for m in srv.chat_requests[-1].json["messages"]]
                assert "First version." in sent and "Second version." not in sent
                again = await api.post(f"/api/chat/answers/{first}/regenerate")
                assert again.status_code == 409  # not the last answer any more
        finally:
            server.stop()


async def test_opening_a_page_is_not_an_ambient_event(tmp_path):
    async with LLMTestServer(Reply(chunks=["ok"])) as srv:
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                for page in ("todo", "simulator", "chat"):
                    assert (await api.get(f"/p/{page}", headers={"HX-Request": "true", "HX-Target": "main"})).status_code == 200
                entries = (await api.get("/api/chat/conversation")).json()["entries"]
                assert entries == []
        finally:
            server.stop()


async def test_deleting_a_conversation_deletes_its_messages_and_search_finds_text(tmp_path):
    async with LLMTestServer(Reply(chunks=["Bananas are yellow."])) as srv:
        server = app_for(tmp_path, srv)
        try:
            async with client(server) as api:
                answer_id = await ask(api, "Tell me about bananas")
                entry = await answer_entry(api, answer_id)
                question_id = (await api.get("/api/chat/conversation")).json()["entries"][0]["message_id"]
                cid = (await api.get("/p/chat")).text.split('data-cid="', 1)[1].split('"', 1)[0]
                async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                              additional_headers={"Cookie": await cookie_of(server)}) as ws:
                    await ws.send(json.dumps({"action": "chat.search", "q": "YELLOW"}))
                    frame = await asyncio.wait_for(ws.recv(), WAIT_S)
                    while "chat-search-results" not in frame:
                        frame = await asyncio.wait_for(ws.recv(), WAIT_S)
                    assert "Tell me about bananas" in frame and "Bananas are yellow" in frame
                    await ws.send(json.dumps({"action": "chat.delete", "cid": cid}))
                    while "chat-viewer" not in frame:
                        frame = await asyncio.wait_for(ws.recv(), WAIT_S)
                for message_id in (answer_id, question_id):
                    assert (await api.get(f"/api/messages/{message_id}")).status_code == 404
                assert (await api.get(f"/chat/export/{cid}.json")).status_code == 404
                assert (await api.get("/api/chat/conversation")).json()["entries"] == []
                assert entry["outcome"] == "done"
        finally:
            server.stop()
