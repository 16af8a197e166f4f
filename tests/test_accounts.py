"""Accounts mode against a real server: users and their workspaces, login, tokens, and total isolation —
user B using user A's ids through the page, the WebSocket and the HTTP API gets nothing and learns nothing."""

import asyncio
import json
import re
import subprocess
import sys

import httpx
import pytest
import websockets

from tests.llm_server import Chunk, LLMTestServer, Reply
from tests.servers import ACCOUNTS, PASSWORD, AppServer, add_user, login, open_tab


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["Hi."])) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm):
    server = AppServer(tmp_path_factory.mktemp("accounts"), OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
                       QUANDA_API_TOKEN="the-local-token", **ACCOUNTS).start()
    for name in ("alice", "bob"):
        add_user(server, name)
    yield server
    server.stop()


def cli(server, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "quanda", *args], input=stdin, text=True, capture_output=True,
                          cwd=server.workdir, env=server.env, timeout=30)


async def recv(ws, timeout=10):
    return await asyncio.wait_for(ws.recv(), timeout)


async def frames_until(ws, pattern):
    seen = ""
    while not re.search(pattern, seen):
        seen += await recv(ws)
    return seen


def browser(server, cookie=""):
    return httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url, "Cookie": cookie}, timeout=10)


async def test_login_wrong_password_and_logout(server):
    async with browser(server) as c:
        assert (await c.get("/")).headers["location"] == "/login"
        for name, password in (("alice", "wrong password"), ("nobody", PASSWORD), ("", "")):
            page = await c.post("/login", data={"username": name, "password": password})
            assert page.status_code == 200 and "Wrong user name or password." in page.text  # nothing more told
        assert "quanda_session" not in c.cookies or "login" not in c.cookies.get("quanda_session", "")
    cookie = await login(server, "alice")
    async with browser(server, cookie) as c:
        page = await c.get("/")
        assert page.status_code == 200 and 'id="account-name"' in page.text and ">alice<" in page.text
        async with open_tab(server, cookie, "todo") as ws:
            await ws.send(json.dumps({"action": "todo.add", "name": "before logout"}))
            await frames_until(ws, "before logout")
            assert (await c.post("/logout")).headers["location"] == "/login"
            await frames_until(ws, "signed out")  # the open tab lost its socket
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await recv(ws)
        assert (await c.get("/")).headers["location"] == "/login"  # the old cookie is worth nothing now
        assert (await c.get("/api/messages/0123456789abcdef01234567")).status_code == 401


async def test_the_session_id_rotates_at_login(server):
    async with browser(server) as c:
        await c.get("/login")
        before = c.cookies.get("quanda_session")
        response = await c.post("/login", data={"username": "bob", "password": PASSWORD})
        assert response.status_code == 303 and c.cookies.get("quanda_session") != before


async def test_failed_logins_slow_down(server):
    add_user(server, "target")
    async with browser(server) as c:
        texts = [(await c.post("/login", data={"username": "target", "password": f"nope{i}"})).text
                 for i in range(5)]
        assert "Too many failed attempts" in texts[-1]
        blocked = await c.post("/login", data={"username": "target", "password": PASSWORD})
        assert "Too many failed attempts" in blocked.text  # even the right password waits


async def alice_world(server):
    """Alice's ids: a todo, a simulator run, a question and its answer (with thinking)."""
    cookie = await login(server, "alice")
    async with open_tab(server, cookie, "simulator") as ws:
        await ws.send(json.dumps({"action": "todo.add", "name": "alice secret todo"}))
        await frames_until(ws, "alice secret todo")
        await ws.send(json.dumps({"action": "sim.start", "chunks": "3", "delay_min": "0", "delay_max": "0"}))
        run_id = re.search(r'data-message="([0-9a-f]{24})"', await frames_until(ws, 'data-message="')).group(1)
    async with browser(server, cookie) as c:
        question = (await c.post("/api/messages", json={"role": "q", "content": "alice asks"})).json()["id"]
        answer = (await c.post(f"/api/messages/{question}/answer", json={})).json()["answer_id"]
        async with c.stream("GET", f"/api/messages/{answer}/events") as stream:
            async for line in stream.aiter_lines():
                if line.startswith("event: thread.run.completed"):
                    break
    return cookie, {"run": run_id, "question": question, "answer": answer}


async def test_bob_can_use_none_of_alices_ids(server):
    _alice, ids = await alice_world(server)
    bob = await login(server, "bob")
    async with browser(server, bob) as c:
        page = (await c.get("/")).text + (await c.get("/p/simulator")).text + (await c.get("/p/chat")).text
        assert "alice" not in page and all(i not in page for i in ids.values())
        for mid in ids.values():
            assert (await c.get(f"/api/messages/{mid}")).status_code == 404
            assert (await c.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": "x"})
                    ).status_code == 404
            assert (await c.post(f"/api/messages/{mid}/immutable")).status_code == 404
            assert (await c.get(f"/api/messages/{mid}/events")).status_code == 404
            assert (await c.post(f"/api/messages/{mid}/answer", json={})).status_code == 404
            unknown = await c.get("/api/messages/0123456789abcdef01234567")
            assert unknown.json()["error"].replace("0123456789abcdef01234567", mid) == \
                (await c.get(f"/api/messages/{mid}")).json()["error"]  # the same answer as for no such id
    async with open_tab(server, bob, "simulator") as ws:
        answers = []
        for mid in ids.values():
            for action in ({"action": "follow", "streams": {mid: 0}},
                           {"action": "view", "page": "chat", "streams": {mid: 0}, "fresh": [mid]},
                           {"action": "chat.stop", "message_id": mid}, {"action": "chat.retry", "message_id": mid},
                           {"action": "sim.stop", "message_id": mid}):
                await ws.send(json.dumps(action))
                answers.append(await recv(ws))
        for action in ({"action": "todo.toggle", "id": "1"}, {"action": "todo.delete", "id": "1"},
                       {"action": "todo.edit", "id": "1", "name": "pwned"}, {"action": "todo.move", "id": "1",
                                                                               "direction": "up"}):
            await ws.send(json.dumps(action))
            answers.append(await recv(ws))
        frames = "".join(answers)
        assert "alice" not in frames and "Simulated chunk" not in frames and "Hi." not in frames
        assert all('role="alert"' in answer for answer in answers), answers  # each one refused, with a notice
    async with browser(server, await login(server, "alice")) as c:
        assert "alice secret todo" in (await c.get("/p/todo")).text  # untouched
        assert "pwned" not in (await c.get("/p/todo")).text


async def test_an_api_token_acts_for_its_user_only_and_revoked_tokens_are_refused(server):
    made = cli(server, "tokens", "create", "alice", "--label", "laptop")
    assert made.returncode == 0, made.stderr
    token = re.search(r"qk_[0-9a-f]{8}_\S+", made.stdout).group(0)
    token_id = token.split("_")[1]
    assert token_id in cli(server, "tokens", "list", "alice").stdout and token not in cli(server, "tokens", "list",
                                                                                           "alice").stdout
    _alice, ids = await alice_world(server)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert (await api.get(f"/api/messages/{ids['answer']}")).json()["content"] == "Hi."
        mine = (await api.post("/api/messages", json={"role": "q", "content": "by token"})).json()["id"]
    bob = await login(server, "bob")
    async with browser(server, bob) as c:
        assert (await c.get(f"/api/messages/{mine}")).status_code == 404
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": "Bearer the-local-token"}) as api:
        assert (await api.get(f"/api/messages/{mine}")).status_code == 401  # accounts mode: per-user tokens only
    assert cli(server, "tokens", "revoke", "alice", token_id).returncode == 0
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert (await api.get(f"/api/messages/{mine}")).status_code == 401


async def test_user_cli_passwd_remove_list(server):
    add_user(server, "carol")
    assert "carol" in cli(server, "users", "list").stdout
    assert cli(server, "users", "add", "carol", "--password-stdin", stdin=PASSWORD + "\n").returncode == 1
    short = cli(server, "users", "add", "dave", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    cookie = await login(server, "carol")
    assert cli(server, "users", "passwd", "carol", "--password-stdin", stdin="a new password\n").returncode == 0
    async with browser(server, cookie) as c:
        assert (await c.get("/")).headers.get("location") == "/login"  # a new password ends the sessions
    await login(server, "carol", "a new password")
    assert cli(server, "users", "remove", "carol").returncode == 0
    assert "carol" not in cli(server, "users", "list").stdout


async def test_an_api_question_shows_in_the_users_sidebar_with_its_thinking_apart(server, llm):
    llm.script = Reply(chunks=[Chunk(thinking="pondering"), "The answer."])
    cookie = await login(server, "alice")
    made = cli(server, "tokens", "create", "alice")
    token = re.search(r"qk_[0-9a-f]{8}_\S+", made.stdout).group(0)
    async with open_tab(server, cookie, "todo") as ws:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as api:
            question = (await api.post("/api/messages", json={"role": "q", "content": "from the api"})).json()["id"]
            answer = (await api.post(f"/api/messages/{question}/answer", json={})).json()["answer_id"]
            frames = await frames_until(ws, "from the api")
            async with api.stream("GET", f"/api/messages/{answer}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event: thread.run.completed"):
                        break
            state = (await api.get(f"/api/messages/{answer}")).json()
        assert state["content"] == "The answer." and state["warning"] == "" and "pondering" not in state["content"]
        frames += await frames_until(ws, 'class="thinking"')
        assert f'id="msg-{answer}"' in frames
    llm.script = Reply(chunks=["Hi."])
