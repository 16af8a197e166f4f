"""Logins that never stall the server, lockouts that lock out attackers, addresses nobody can forge (accounts
mode, real servers; clients from addresses of their own: every 127.x.y.z is this machine's loopback).

- 100 wrong logins in flight at once, from 100 addresses: a signed-in user's WebSocket round-trip p99 stays
  within 2× of the same measurement with no attack going on (password checks run in worker threads).
- Beyond the pool's queue, a sign-in is answered 429 at once; a sign-in from a clean address goes first.
- An attack on one name, from many addresses, slows the attackers down, not the user: from a new address
  the real user signs in at once while it runs. Every failure is logged with its address.
- `X-Forwarded-For` is believed only from QUANDA_TRUSTED_PROXIES: by default, from loopback too, it changes
  nothing (no throttle lifted, no handshake limit), and from a trusted proxy it names the client.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
import websockets

from quanda.config import Settings
from quanda.hashpool import HashPool, PoolBusy
from quanda.ratelimit import HANDSHAKE_BURST_S
from quanda.serve import server_options
from quanda.throttle import LoginThrottle
from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import eventually, percentile
from tests.reliability.test_protocol_abuse import Abuse, Others, ms
from tests.servers import ACCOUNTS, PASSWORD, AppServer, add_user, login

pytestmark = pytest.mark.reliability
WAIT_S = 20
PROBE_S = 6
ATTEMPTS = 3  # a shared machine's load comes and goes: an attack that stalls the server stalls it every time


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


def start(tmp_path, llm, **env) -> AppServer:
    return AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", **ACCOUNTS, **env).start()


def from_address(server: AppServer, address: str) -> httpx.AsyncClient:
    """A browser at `address` (a loopback address of its own)."""
    return httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}, timeout=60,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def sign_in(http: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await http.post("/login", data={"username": name, "password": password})


# -- the pool and the throttle, alone ---------------------------------------------------------------------------

async def test_the_pool_runs_few_checks_at_once_queues_a_few_and_refuses_the_rest_at_once():
    pool = HashPool(workers=2, queue=2)
    gate = threading.Event()
    running = []

    def check(k: int) -> int:
        running.append(k)
        gate.wait(10)
        return k

    tasks = [asyncio.create_task(pool.run(check, k, priority=k)) for k in range(4)]
    await asyncio.sleep(0.05)  # (the tasks reach the pool: nothing to wait on but the loop's turn)
    assert pool.pending == 4 and sorted(running) == [0, 1]
    with pytest.raises(PoolBusy):  # a worse priority than both waiting: refused, without waiting
        await asyncio.wait_for(pool.run(check, 9, priority=9), 0.5)
    better = asyncio.create_task(pool.run(check, -1, priority=-1))  # better: takes the worst one's place
    with pytest.raises(PoolBusy):
        await tasks[3]
    gate.set()
    assert await asyncio.gather(*tasks[:3], better) == [0, 1, 2, -1]
    assert running.index(-1) < running.index(2)  # served before the one that came earlier with more failures
    assert pool.pending == 0 and pool.refused == 2
    pool.close()


async def test_a_check_whose_client_left_gives_its_place_to_the_next():
    pool = HashPool(workers=1, queue=5)
    gate = threading.Event()
    first = asyncio.create_task(pool.run(gate.wait, 10))
    leaving = asyncio.create_task(pool.run(lambda: "never", priority=0))
    staying = asyncio.create_task(pool.run(lambda: "served", priority=1))
    await asyncio.sleep(0.05)
    leaving.cancel()
    gate.set()
    assert await first and await asyncio.wait_for(staying, 5) == "served"
    assert pool.pending == 0
    pool.close()


def test_the_throttle_slows_a_name_from_one_address_and_an_address_never_the_name_elsewhere(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("quanda.throttle.time.monotonic", lambda: clock[0])
    throttle = LoginThrottle()
    for _ in range(3):
        assert throttle.wait_s("alice", "1.1.1.1") == 0
        throttle.failed("alice", "1.1.1.1")
    waits = []
    for _ in range(3):
        waits.append(throttle.wait_s("alice", "1.1.1.1"))
        throttle.failed("alice", "1.1.1.1")
    assert waits == [1.0, 2.0, 4.0]  # growing
    assert throttle.wait_s("alice", "2.2.2.2") == 0  # the same name from elsewhere: not slowed at all
    assert throttle.wait_s("bob", "1.1.1.1") == 0  # another name from there: 6 failures, under the address's 20
    for k in range(14):
        throttle.failed(f"guess{k}", "1.1.1.1")
    assert throttle.wait_s("bob", "1.1.1.1") == 1.0  # 20 from the address: it is slowed, whatever the name
    throttle.succeeded("alice", "1.1.1.1")
    assert throttle.wait_s("alice", "1.1.1.1") == 1.0  # a good login clears its pair, not its address
    clock[0] += LoginThrottle.FORGET_S + 1
    assert throttle.wait_s("bob", "1.1.1.1") == 0  # forgotten after an hour of quiet
    warnings = [throttle.failed("carol", f"10.0.0.{k % 7}")[2] for k in range(LoginThrottle.FAILURES_LOGGED_EVERY)]
    assert warnings[:-1] == [None] * 99 and "100 failed logins for the name 'carol' from 7 address" in warnings[-1]


# -- the event loop stays free ----------------------------------------------------------------------------------

async def test_100_wrong_logins_in_flight_never_stall_a_signed_in_users_round_trips(tmp_path, llm):
    server = start(tmp_path, llm)
    try:
        add_user(server, "alice")
        add_user(server, "bob")
        # three tabs each, 15 round trips a second each: under a tab's and a workspace's frame rates
        async with Others(server, [await login(server, "alice"), await login(server, "bob")], tabs=3,
                          rate=15.0) as tabs:
            await tabs.measure(1.0)  # warm up
            figures = []
            for attempt in range(1, ATTEMPTS + 1):
                idle = await tabs.measure(PROBE_S)  # 540 round trips: enough for a p99 to mean something
                attack = Abuse("logins", server, "-", "--clients", "100", "--seconds", str(PROBE_S))
                result, during = await asyncio.gather(attack.run(), attack.when("attacking", tabs.measure(PROBE_S)))
                figures.append(f"attempt {attempt}: round trips idle {ms(idle)}, during 100 wrong logins in "
                               f"flight {ms(during)}; the attack's answers: {result}")
                print(f"\n[logins] {figures[-1]}")
                assert result["outcomes"].get("wrong", 0) >= 20, result  # the checks did run meanwhile
                if percentile(during, 99) <= 2 * percentile(idle, 99):
                    break
            else:
                raise AssertionError("round-trip p99 over 2× idle during the attack:\n" + "\n".join(figures))
    finally:
        server.stop()
    assert "Traceback" not in server.log_text()


async def test_beyond_the_queue_a_sign_in_is_answered_429_at_once(tmp_path, llm):
    server = start(tmp_path, llm, QUANDA_LOGIN_WORKERS="1", QUANDA_LOGIN_QUEUE="4")
    clients = [from_address(server, f"127.0.4.{k + 1}") for k in range(12)]
    try:
        for http in clients:
            await http.get("/login")  # connected: the sign-ins below leave at once

        async def timed(k: int, http: httpx.AsyncClient) -> tuple[int, float, str]:
            t0 = time.monotonic()
            response = await sign_in(http, f"nobody{k}", "wrong guess")
            return response.status_code, time.monotonic() - t0, response.text

        answers = await asyncio.gather(*(timed(k, http) for k, http in enumerate(clients)))
        busy = [took for status, took, text in answers if status == 429 and "Too many sign-ins at once" in text]
        checked = [took for status, took, text in answers if status == 200 and "Wrong user name" in text]
        assert len(checked) >= 5 and len(busy) >= 4 and len(busy) + len(checked) == 12, answers
        # refused without waiting: before the fifth check (one worker, one after another) is done
        assert max(busy) < max(checked), [(status, round(took, 3)) for status, took, _text in answers]
        assert "refusing sign-ins" in server.log_text()
    finally:
        for http in clients:
            await http.aclose()
        server.stop()


# -- no lockout of the real user --------------------------------------------------------------------------------

async def test_the_real_user_signs_in_from_a_new_address_while_their_name_is_attacked(tmp_path, llm):
    server = start(tmp_path, llm)
    try:
        add_user(server, "alice")
        add_user(server, "bob")
        attack = Abuse("logins", server, "-", "--clients", "20", "--seconds", "20", "--name", "alice")
        running = asyncio.create_task(attack.run())

        async def mounted() -> bool:  # every attacking address past its free failures on that name
            return server.log_text().count("failed login for 'alice'") >= 20 * LoginThrottle.FREE["pair"]

        await eventually(mounted, 60, "the attack's failures to mount")
        async with from_address(server, "127.0.9.9") as real_user:
            t0 = time.monotonic()
            response = await sign_in(real_user, "alice")
            took = time.monotonic() - t0
            assert response.status_code == 303 and response.headers["location"] == "/", response.text[:300]
            assert (await real_user.get("/")).status_code == 200
        print(f"\n[logins] the real user signed in in {took * 1000:.0f} ms during the attack")
        async with from_address(server, "127.0.8.8") as attacker:  # one more attacker, meanwhile
            for _ in range(LoginThrottle.FREE["pair"]):
                assert (await sign_in(attacker, "alice", "wrong guess")).status_code == 200
            refused = await sign_in(attacker, "alice")  # even the right password now waits, from there
            assert refused.status_code == 429 and "Too many failed attempts" in refused.text
            assert refused.headers["retry-after"] == "1"
            assert (await sign_in(attacker, "bob")).status_code == 303  # other names from there: not locked out
        assert not running.done()  # all of it during the attack
        result = await running
        assert result["outcomes"].get("throttled", 0) > result["outcomes"].get("wrong", 0), result
        log = server.log_text()
        assert "failed login for 'alice' from 127.0.1.7 (" in log and "alice signed in from 127.0.9.9" in log
    finally:
        server.stop()


# -- trusted proxies --------------------------------------------------------------------------------------------

def test_uvicorn_believes_forwarded_headers_only_from_the_trusted_proxies():
    assert server_options(Settings())["proxy_headers"] is False  # uvicorn's default would trust 127.0.0.1
    options = server_options(Settings(trusted_proxies="10.0.0.1, 192.168.0.0/16"))
    assert options["proxy_headers"] is True and options["forwarded_allow_ips"] == ["10.0.0.1", "192.168.0.0/16"]


async def forged_logins(server: AppServer, count: int) -> list[int]:
    """`count` wrong logins for one name, each claiming another address in X-Forwarded-For."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}, timeout=30) as http:
        return [(await http.post("/login", data={"username": "target", "password": "wrong guess"},
                                 headers={"X-Forwarded-For": f"10.0.0.{k + 1}"})).status_code for k in range(count)]


async def forged_handshakes(server: AppServer, cookie: str, count: int) -> tuple[int, float]:
    """`count` WebSocket handshakes at once, each claiming another address: how many were accepted, and in how
    many seconds all were answered."""
    async def one(k: int) -> bool:
        try:
            ws = await websockets.connect(server.url.replace("http", "ws") + "/ws", open_timeout=30,
                                          additional_headers={"Cookie": cookie, "X-Forwarded-For": f"10.1.{k}.1"})
        except websockets.InvalidStatus as exc:
            assert exc.response.status_code == 429
            return False
        await ws.close()
        return True
    began = time.monotonic()
    accepted = sum(await asyncio.gather(*(one(k) for k in range(count))))
    return accepted, time.monotonic() - began


async def test_forwarded_headers_from_loopback_change_nothing_by_default(tmp_path, llm):
    server = start(tmp_path, llm)
    try:
        add_user(server, "target")
        add_user(server, "other")
        assert (await forged_logins(server, 5))[3:] == [429, 429]  # one address: its name's throttle holds
        rate = Settings().ws_handshakes_per_s
        accepted, took = await forged_handshakes(server, await login(server, "other"), 200)
        assert accepted <= rate * (HANDSHAKE_BURST_S + took) + 2 and accepted < 150, (accepted, took)  # one address
        assert "from 127.0.0.1" in server.log_text() and "10.0.0." not in server.log_text()
    finally:
        server.stop()


async def test_a_trusted_proxy_names_the_client(tmp_path, llm):
    server = start(tmp_path, llm, QUANDA_TRUSTED_PROXIES="127.0.0.1")
    try:
        add_user(server, "target")
        assert await forged_logins(server, 5) == [200] * 5  # five clients: none over its throttle
        assert "failed login for 'target' from 10.0.0.5 (1 for that name from there" in server.log_text()
        cookie = await login(server, "target")
        url = server.url.replace("http", "ws") + "/ws"
        async with websockets.connect(url, additional_headers={  # TLS ended at the proxy: the page's origin
                "Cookie": cookie, "X-Forwarded-Proto": "https", "Origin": server.url.replace("http", "https")}) as ws:
            await ws.send('{"action": "hello"}')
            assert "unknown action 'hello'" in await asyncio.wait_for(ws.recv(), WAIT_S)
    finally:
        server.stop()
    (tmp_path / "other").mkdir()
    untrusted = start(tmp_path / "other", llm, QUANDA_TRUSTED_PROXIES="10.9.9.9")
    try:
        add_user(untrusted, "target")
        assert (await forged_logins(untrusted, 5))[3:] == [429, 429]  # not from the proxy named: not believed
    finally:
        untrusted.stop()
