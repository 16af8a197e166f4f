"""The door, strictly (accounts mode, a real server): `Host` is one header, exactly host[:port]; every response
the app makes — pages, errors, static files, throttled logins, and refused WebSocket handshakes — carries the
security headers; an id a client names in a draft (`edit`) is checked for ownership like every other."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httpx
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st

from quanda.door import SECURITY_HEADERS, host_name
from tests.llm_server import LLMTestServer, Reply
from tests.servers import ACCOUNTS, AppServer, add_user, login

pytestmark = pytest.mark.reliability
WAIT_S = 20
HEADERS = {name.decode(): value.decode() for name, value in SECURITY_HEADERS}


# -- Host, parsed strictly --------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, name", [
    ("127.0.0.1:5001", "127.0.0.1"), ("localhost", "localhost"), ("Example.COM:80", "example.com"),
    ("[::1]:5001", "[::1]"), ("[::1]", "[::1]"), ("quanda.example.com", "quanda.example.com"),
    ("xn--bcher-kva.example:443", "xn--bcher-kva.example"),
])
def test_a_host_header_names_a_host_and_an_optional_port(host, name):
    assert host_name(host) == name


@pytest.mark.parametrize("host", [
    "127.0.0.1:5099@evil.example", "evil.example@127.0.0.1", "127.0.0.1:5001 evil.example", "127.0.0.1 ",
    " 127.0.0.1", "", ":5001", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:5001:5001",
    "127.0.0.1:-1", "127.0.0.1:+80", "[::1", "[::1]x", "[zz::1]", "[::1]:", "evil.example/x", "http://127.0.0.1",
    "-bad.example", "bad-.example", "a..b", "a" * 64 + ".example", "127.0.0.1\t", "127.0.0.1\x00", "ex ample",
    "localhost,evil.example", "127.0.0.1:5001/", "１２７.0.0.1",
])
def test_anything_else_in_a_host_header_is_refused(host):
    assert host_name(host) is None


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=4), st.one_of(st.none(), st.integers(1, 65535)))
def test_every_host_name_with_any_port_is_read_as_its_name(labels, port):
    name = ".".join(labels)
    assert host_name(name + (f":{port}" if port is not None else "")) == name


@given(st.text(max_size=60))
def test_whatever_the_header_holds_the_name_read_is_a_plain_prefix_of_it(text):
    name = host_name(text)
    if name is not None:
        assert re.fullmatch(r"[a-z0-9.\-]+|\[[0-9a-f:.]+\]", name) and text.lower().startswith(name)


# -- a real server ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LLMTestServer(Reply(chunks=["ok"])) as llm:
        server = AppServer(tmp_path_factory.mktemp("door"), OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
                           **ACCOUNTS).start()
        add_user(server, "alice")
        add_user(server, "bob")
        add_user(server, "carol")
        yield server
        server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


def raw_request(server: AppServer, head: str) -> tuple[int, dict[str, str]]:
    """An HTTP/1.1 request written by hand (what no client library lets one send); its status and headers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    return int(lines[0].split()[1]), headers


def assert_secured(headers, what: str) -> None:
    missing = {name: value for name, value in HEADERS.items() if headers.get(name) != value}
    assert not missing, f"{what}: missing or wrong security headers {missing}; got {dict(headers)}"


UPGRADE = ("Upgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Version: 13\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n")


def test_a_second_host_or_a_host_with_anything_more_is_refused(server):
    own = f"127.0.0.1:{server.port}"
    for path, extra in (("/login", ""), ("/ws", UPGRADE)):
        status, headers = raw_request(server, f"GET {path} HTTP/1.1\nHost: {own}\n{extra}")
        assert status in (200, 101, 403), status  # (the socket, without a session, is refused after its upgrade)
        for hosts in ([own, "evil.example"], ["evil.example", own], [own, own], [f"{own}@evil.example"],
                      [f"evil.example@{own}"], [f"{own} x"]):
            head = f"GET {path} HTTP/1.1\n" + "".join(f"Host: {h}\n" for h in hosts) + extra
            status, headers = raw_request(server, head)
            assert status == 400, (hosts, path, status)
            assert_secured(headers, f"{path} with Host {hosts}")


async def test_every_response_carries_the_security_headers(server):
    cookie = await login(server, "alice")
    ws_url = server.url.replace("http", "ws")
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as browser:
        for method, path, kwargs in (("GET", "/", {}), ("GET", "/login", {}), ("GET", "/static/app.css", {}),
                                     ("GET", "/static/nope.css", {}), ("GET", "/nope", {}), ("PUT", "/login", {}),
                                     ("GET", "/api/chat/status", {}),
                                     ("POST", "/api/messages", {"content": b"x" * (3 << 20)}),
                                     ("POST", "/login", {"data": {"username": "alice", "password": "wrong"}}),
                                     ("GET", "/-/health", {})):
            response = await browser.request(method, path, **kwargs)
            assert_secured(response.headers, f"{method} {path} ({response.status_code})")
        for _ in range(4):  # the fourth wrong password for one name from one address: throttled
            throttled = await browser.post("/login", data={"username": "carol", "password": "wrong"})
        assert throttled.status_code == 429
        assert_secured(throttled.headers, "a throttled login")
    refusals = (  # a handshake refused: by the door (origin, host), the router (no such route), the app (no session)
        (ws_url + "/ws", {"Cookie": cookie, "Origin": "http://evil.example"}, 403),
        (ws_url + "/ws", {"Cookie": cookie, "Host": "evil.example"}, 400),  # (a second Host, as it is sent)
        (ws_url + "/nope", {"Cookie": cookie}, 403),
    )
    for url, headers, status in refusals:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url, additional_headers=headers, open_timeout=WAIT_S)
        response = refused.value.response
        assert response.status_code == status, (url, headers, response.status_code)
        assert_secured(response.headers, f"the refused handshake {url} {headers}")
        assert response.headers["content-type"] == "application/json" and b'"error"' in response.body
    async with websockets.connect(ws_url + "/ws", additional_headers={"Cookie": cookie}) as ws:  # accepted: 101
        assert_secured(ws.response.headers, "an accepted handshake")


# -- ids a client names -----------------------------------------------------------------------------------------

async def test_a_draft_editing_someone_elses_question_is_refused(server):
    alice, bob = await login(server, "alice"), await login(server, "bob")
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url, "Cookie": alice}) as c:
        question = (await c.post("/api/messages", json={"role": "q", "content": "alice asks"})).json()["id"]
    ws_url = server.url.replace("http", "ws") + "/ws"

    async def draft(cookie: str, edit: str) -> list[str]:
        """The frames a draft naming `edit` brings back (up to the answer to a probe sent after it)."""
        async with websockets.connect(ws_url, additional_headers={"Cookie": cookie}) as ws:
            await ws.send(json.dumps({"action": "view", "page": "todo", "streams": {}, "fresh": []}))
            await ws.send(json.dumps({"action": "chat.draft", "text": "my words", "turn": "0", "edit": edit}))
            await ws.send(json.dumps({"action": "probe"}))
            frames = []
            async with asyncio.timeout(WAIT_S):
                while "unknown action 'probe'" not in (frame := await ws.recv()):
                    frames.append(frame)
            return frames

    refused = " ".join(await draft(bob, question))
    assert "field-notice" in refused and "no message with id" in refused and "alice asks" not in refused
    assert "chat-draft" not in refused and "my words" not in refused
    own = " ".join(await draft(alice, question))  # her own question: the draft is written
    assert "no message with id" not in own


def test_a_handler_that_fails_is_answered_500_with_the_headers_and_no_detail(tmp_path):
    from fasthtml.common import APIRouter
    from starlette.testclient import TestClient

    from quanda.config import Settings
    from quanda.api import Plugin
    from quanda.server import create_app

    router = APIRouter()

    @router.get("/api/boom")
    def boom():
        raise RuntimeError("a secret detail")

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}", secret="s" * 40), entry_point_group=None,
                     extra_plugins=[Plugin(name="boom", label="Boom", order=999, router=router)])
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        response = client.get("/api/boom")
    assert response.status_code == 500 and "secret" not in response.text
    assert response.json() == {"error": "the server failed to answer; its log says why"}
    assert_secured(response.headers, "a 500")
