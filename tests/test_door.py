"""The door against a real server: Host allow-list, WebSocket Origin, same-origin state changes, security
headers on every response."""

import asyncio
import json

import httpx
import pytest
import websockets

from tests.servers import AppServer

TOKEN = "door-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("door"), QUANDA_API_TOKEN=TOKEN,
                       QUANDA_ALLOWED_HOSTS="quanda.lan").start()
    yield server
    server.stop()


async def test_an_unknown_host_gets_400_and_known_ones_are_served(server):
    async with httpx.AsyncClient(base_url=server.url) as c:
        for host in ("attacker.example", f"attacker.example:{server.port}", "127.0.0.1.nip.io", "localhostx"):
            response = await c.get("/", headers={"Host": host})
            assert response.status_code == 400 and "host" in response.json()["error"], host
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "quanda.lan", f"[::1]:{server.port}"):
            assert (await c.get("/-/plugins", headers={"Host": host})).status_code == 200, host
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                      additional_headers={"Host": "attacker.example"}):
            pass


async def test_a_websocket_from_another_origin_is_refused(server):
    url = server.url.replace("http", "ws") + "/ws"
    for origin in ("http://evil.example", "http://127.0.0.1:1", f"https://127.0.0.1:{server.port}", "null"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(url, origin=origin):
                pass
        assert info.value.response.status_code == 403, origin
    async with websockets.connect(url, origin=server.url) as ws:  # the app's own page
        await ws.send(json.dumps({"action": "view", "page": "todo", "streams": {}, "fresh": []}))
        await ws.send(json.dumps({"action": "todo.add", "name": "from my own page"}))
        assert "from my own page" in await asyncio.wait_for(ws.recv(), 10)


async def test_cookie_state_changes_need_a_same_origin_origin_bearer_calls_do_not(server):
    async with httpx.AsyncClient(base_url=server.url) as c:
        await c.get("/")  # a session cookie
        body = {"role": "q", "content": "x"}
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "http://127.0.0.1:1"}, {}):
            response = await c.post("/api/messages", json=body, headers=headers)
            assert response.status_code == 403 and "another site" in response.json()["error"], headers
        assert (await c.post("/api/messages", json=body, headers={"Origin": server.url})).status_code == 201
        # what a browser says: its own pages ask for no referrer, so their POSTs carry "Origin: null"
        for fetch_site, status in (("same-origin", 201), ("same-site", 403), ("cross-site", 403)):
            response = await c.post("/api/messages", json=body, headers={"Origin": "null", "Sec-Fetch-Site": fetch_site})
            assert response.status_code == status, fetch_site
        assert (await c.get("/api/messages/0123456789abcdef01234567")).status_code == 404  # reads need no Origin
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert (await api.post("/api/messages", json=body)).status_code == 201


async def test_every_response_carries_the_security_headers(server):
    async with httpx.AsyncClient(base_url=server.url) as c:
        for path in ("/", "/p/simulator", "/static/quanda.js", "/-/plugins", "/-/health",
                     "/api/messages/0123456789abcdef01234567", "/p/nothing", "/no/such/page"):
            headers = (await c.get(path)).headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            for part in ("frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "img-src 'self'"):
                assert part in csp, (path, part)
            assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
        page = (await c.get("/")).text
        assert "<script>" not in page and " onclick=" not in page and " style=" not in page
