"""Revocation reaches what is open (accounts mode, two servers on one database: SQLite, and PostgreSQL when
QUANDA_TEST_POSTGRES_URL is set): a password change, a token revoked, an account disabled or removed, a
logout — done in another process (the command line, or this test's own store) — close within a second, on
both servers, every tab and event stream let in with what was revoked, telling them why; what was let in
otherwise stays open. The terminal client says so and stops. The registry itself on every backend
(mongomock included), its periodic re-check, and a connection let in just before a revocation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from quanda.accounts import PASSWORD_CHANGED, TOKEN_REVOKED, Accounts
from quanda.core import open_store
from quanda.revocation import SESSION_ENDED, Revocations
from tests.backends import NO_POSTGRES, POSTGRES_URL, make_store, postgres_test_url, store_target
from tests.llm_server import LLMTestServer, Reply
from tests.servers import ACCOUNTS, PASSWORD, AppServer, add_user, login

pytestmark = pytest.mark.reliability
WITHIN_S = 1.0  # the promise: every server closes what was revoked within a second
WAIT_S = 20  # how long a test waits for something that must happen (far more than the promise)


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def servers(request, tmp_path, llm):
    """Two servers on one database: (A, B, the database's URL)."""
    if request.param == "postgres":
        if not POSTGRES_URL:
            pytest.skip(NO_POSTGRES)
        db = postgres_test_url()
    else:
        db = f"sqlite:///{tmp_path / 'shared.db'}"
    started = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            started.append(AppServer(tmp_path / name, QUANDA_DB_URL=db, OLLAMA_HOST=llm.url,
                                     OLLAMA_MODEL="quanda-test", **ACCOUNTS).start())
        add_user(started[0], "alice")
        add_user(started[0], "bob")
        yield started[0], started[1], db
    finally:
        for server in started:
            server.stop()
            assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


def cli(server: AppServer, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "quanda", *args], input=stdin, text=True, capture_output=True,
                          cwd=server.workdir, env=server.env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


class Tab:
    """A signed-in tab's WebSocket: every frame, and when and how it was closed."""

    probes = 0

    def __init__(self, server: AppServer, cookie: str):
        self.server, self.cookie = server, cookie
        self.frames: list[str] = []
        self.closed = asyncio.Event()
        self.closed_at = self.code = self.reason = None

    async def __aenter__(self) -> "Tab":
        self.ws = await websockets.connect(self.server.url.replace("http", "ws") + "/ws",
                                           additional_headers={"Cookie": self.cookie})
        await self.ws.send(json.dumps({"action": "view", "page": "todo", "streams": {}, "fresh": []}))
        self.task = asyncio.create_task(self._read())
        await self.alive()  # registered on its server
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self.ws:
                self.frames.append(frame)
        self.closed_at = time.monotonic()
        self.code, self.reason = self.ws.close_code, self.ws.close_reason
        self.closed.set()

    async def alive(self) -> None:
        """A round trip: the tab is open and answered."""
        Tab.probes += 1
        probe = f"probe-{Tab.probes}"
        await self.ws.send(json.dumps({"action": probe}))
        async with asyncio.timeout(WAIT_S):
            while not any(probe in f for f in self.frames):
                if self.closed.is_set():
                    raise AssertionError(f"the tab was closed ({self.code} {self.reason!r})")
                await asyncio.sleep(0.01)

    async def signed_out(self, reason: str) -> float:
        """When the tab was closed as signed out for `reason` (it was told so in a frame and in the close)."""
        try:
            await asyncio.wait_for(self.closed.wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"the tab was not closed within {WAIT_S} s (expected {reason!r})") from None
        assert (self.code, self.reason) == (1008, reason), (self.code, self.reason)
        told = [re.sub(r"<[^>]+>", " ", f) for f in self.frames if "signed-out" in f]
        assert told and reason in told[-1] and "Sign in again" in told[-1], self.frames[-3:]
        return self.closed_at


class Stream:
    """An event stream (SSE) read as it comes: its events, and when it ended."""

    def __init__(self, client: httpx.AsyncClient, path: str):
        self.client, self.path = client, path
        self.events: list[tuple[str, dict]] = []
        self.opened, self.ended = asyncio.Event(), asyncio.Event()
        self.ended_at: float | None = None

    async def __aenter__(self) -> "Stream":
        self.task = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self.opened.wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"{self.path} sent nothing within {WAIT_S} s") from None
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", self.path, timeout=None) as response:
                assert response.status_code == 200, response.status_code
                name = None
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name or "message", json.loads(line[6:])))
                        self.opened.set()
        finally:
            self.ended_at = time.monotonic()
            self.ended.set()

    async def signed_out(self, reason: str) -> float:
        try:
            await asyncio.wait_for(self.ended.wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"{self.path} did not end within {WAIT_S} s (expected {reason!r})") from None
        assert self.events[-1] == ("signed-out", {"reason": reason}), self.events[-3:]
        return self.ended_at

    def still_open(self) -> bool:
        return not self.ended.is_set()


def client(server: AppServer, cookie: str = "", token: str = "") -> httpx.AsyncClient:
    headers = {"Origin": server.url, **({"Cookie": cookie} if cookie else {}),
               **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.AsyncClient(base_url=server.url, headers=headers, timeout=WAIT_S)


async def token_for(db: str, name: str) -> tuple[str, str]:
    async with await open_store(db) as store:
        return await Accounts(store).create_token(name, "test")


def within(t0: float, *closed_at: float) -> list[float]:
    """The delays (s) from t0 to each closing; they must all be under WITHIN_S."""
    delays = [round(t - t0, 3) for t in closed_at]
    print(f"\n[revocation] closed after {delays} s")
    assert max(delays) < WITHIN_S, delays
    return delays


# -- a password change -----------------------------------------------------------------------------------------

async def test_a_new_password_closes_every_tab_and_stream_of_its_sessions_on_both_servers(servers):
    a, b, db = servers
    first, second, bobs = await login(a, "alice"), await login(b, "alice"), await login(a, "bob")
    _token_id, token = await token_for(db, "alice")
    async with client(a, first) as on_a, client(b, token=token) as api_b:
        answer = (await api_b.post("/api/messages", json={"role": "assistant"})).json()["id"]
        async with Tab(a, first) as tab_a, Tab(b, second) as tab_b, Tab(a, bobs) as bob_tab, \
                Stream(on_a, "/api/chat/events") as session_stream, \
                Stream(api_b, f"/api/messages/{answer}/events") as token_stream:
            async with await open_store(db) as store:  # another process than the servers, as the CLI is
                t0 = time.monotonic()
                await Accounts(store).set_password("alice", "a whole new password")
            within(t0, await tab_a.signed_out(PASSWORD_CHANGED), await tab_b.signed_out(PASSWORD_CHANGED),
                   await session_stream.signed_out(PASSWORD_CHANGED))
            await bob_tab.alive()  # another user's tab: untouched
            assert token_stream.still_open()  # a token is not a session: it stays valid
            await api_b.post(f"/api/messages/{answer}/tokens", json={"kind": "chunk", "text": "still here"})
            async with asyncio.timeout(WAIT_S):
                while not any(e.get("text") == "still here" for _n, e in token_stream.events):
                    await asyncio.sleep(0.01)
        # the old sessions are worth nothing anywhere; the new password signs in, and that tab stays open
        for server, cookie in ((a, first), (b, second)):
            async with client(server, cookie) as old:
                assert (await old.get("/api/chat/conversation")).status_code == 401
        assert await refused_tab(a, first)
        fresh = await login(b, "alice", "a whole new password")
        async with Tab(b, fresh) as tab:
            await tab.alive()


async def refused_tab(server: AppServer, cookie: str) -> bool:
    """A tab with a session no longer valid is told to sign in and closed (1008), never served."""
    async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                  additional_headers={"Cookie": cookie}) as ws:
        said = await asyncio.wait_for(ws.recv(), WAIT_S)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT_S)
        return "signed out" in said and ws.close_code == 1008


# -- the command line: tokens, disabling, removal -------------------------------------------------------------

async def test_the_command_line_revokes_a_token_disables_and_removes_a_user_on_every_server(servers):
    a, b, db = servers
    token_id, token = await token_for(db, "alice")
    _other_id, other_token = await token_for(db, "alice")
    async with client(b, token=token) as api_b, client(a, token=other_token) as api_a:
        async with Stream(api_b, "/api/chat/events") as revoked, Stream(api_a, "/api/chat/events") as kept:
            cli(a, "tokens", "revoke", "alice", token_id)
            done = time.monotonic()
            ended = await revoked.signed_out(TOKEN_REVOKED)
            print(f"\n[revocation] token stream ended {ended - done:+.3f} s after the command line returned")
            assert ended - done < WITHIN_S
            assert kept.still_open() and (await api_a.get("/api/chat/status")).status_code == 200
            assert (await api_b.get("/api/chat/status")).status_code == 401  # a reconnect is refused

        cookie = await login(a, "alice")
        async with Tab(b, cookie) as tab, Stream(api_a, "/api/chat/events") as stream:
            cli(a, "users", "disable", "alice")
            done = time.monotonic()
            reason = "signed out: your account was disabled"
            assert max(await tab.signed_out(reason), await stream.signed_out(reason)) - done < WITHIN_S
        async with client(a) as browser:
            refused = await browser.post("/login", data={"username": "alice", "password": PASSWORD})
            assert refused.status_code == 403 and "this account is disabled" in refused.text
            wrong = await browser.post("/login", data={"username": "alice", "password": "not the password"})
            assert "Wrong user name or password." in wrong.text  # nothing told without the password
        assert (await api_a.get("/api/chat/status")).status_code == 401  # its tokens are refused meanwhile
        assert "alice (disabled)" in cli(a, "users", "list").stdout

        cli(b, "users", "enable", "alice")
        assert (await api_a.get("/api/chat/status")).status_code == 200  # its tokens work again
        cookie = await login(b, "alice")
        async with Tab(a, cookie) as tab, Stream(api_a, "/api/chat/events") as stream:
            cli(b, "users", "remove", "alice")
            done = time.monotonic()
            reason = "signed out: your account was removed"
            assert max(await tab.signed_out(reason), await stream.signed_out(reason)) - done < WITHIN_S


# -- an AG-UI run ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("servers", ["sqlite"], indirect=True)
async def test_an_ag_ui_run_whose_token_is_revoked_ends_with_a_run_error(servers, llm):
    from ag_ui.core import Event, EventType, RunAgentInput, UserMessage
    from pydantic import TypeAdapter

    a, _b, db = servers
    token_id, token = await token_for(db, "alice")
    llm.script = Reply(chunks=[f"w{i} " for i in range(400)], delay=0.03)
    body = RunAgentInput(thread_id="t", run_id="r", messages=[UserMessage(id="u", content="Talk")], tools=[],
                         context=[], state={}, forwarded_props={}).model_dump(mode="json", by_alias=True)
    events, streaming, ended = [], asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with client(a, token=token) as api, api.stream("POST", "/api/ag-ui", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(TypeAdapter(Event).validate_json(line[6:]))
                    if events[-1].type == EventType.TEXT_MESSAGE_CONTENT:
                        streaming.set()
        ended.set()

    running = asyncio.create_task(run())
    try:
        await asyncio.wait_for(streaming.wait(), WAIT_S)
        async with await open_store(db) as store:
            t0 = time.monotonic()
            await Accounts(store).revoke_token("alice", token_id)
        await asyncio.wait_for(ended.wait(), WAIT_S)
        within(t0, time.monotonic())
        assert events[-1].type == EventType.RUN_ERROR and events[-1].code == "signed_out"
        assert events[-1].message == TOKEN_REVOKED
        await running
    finally:
        running.cancel()
        llm.script = Reply(chunks=["ok"])


# -- logout -----------------------------------------------------------------------------------------------------

async def test_signing_out_closes_that_sessions_tabs_on_every_server_and_no_others(servers):
    a, b, _db = servers
    leaving, staying = await login(a, "alice"), await login(a, "alice")
    async with Tab(b, leaving) as gone, Tab(b, staying) as kept, client(a, leaving) as browser:
        async with Stream(browser, "/api/chat/events") as stream:
            t0 = time.monotonic()
            assert (await browser.post("/logout")).headers["location"] == "/login"
            within(t0, await gone.signed_out("signed out: this session was signed out"),
                   await stream.signed_out("signed out: this session was signed out"))
        await kept.alive()


# -- the terminal client ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("servers", ["sqlite"], indirect=True)  # one database is enough for the terminal
async def test_the_terminal_client_says_it_was_signed_out_and_stops(servers):
    from quanda.tui.app import TASK_PREFIX, QuandaTUI

    a, _b, db = servers
    token_id, token = await token_for(db, "alice")
    # one frame a second: the sign-out lands while the frame drawer rests (it is stopped with the network; the
    # reason must still reach a frame — seen lost in CI)
    app = QuandaTUI(a.url, token, fps=1)
    async with app.run_test(size=(100, 30)):
        await app.until(lambda: app.connected and app.conv.status, WAIT_S, "the client to connect")
        async with await open_store(db) as store:
            t0 = time.monotonic()
            await Accounts(store).revoke_token("alice", token_id)
        await app.until(lambda: "conversation" in app.problems, WAIT_S, "the client to say it was signed out")
        within(t0, time.monotonic())
        problem = app.problems["conversation"]
        assert problem.text == TOKEN_REVOKED and "tokens create" in problem.hint
        await app.until(lambda: not [t for t in asyncio.all_tasks()
                                     if t.get_name().startswith(TASK_PREFIX) and not t.done()],
                        WAIT_S, "every task of the client to stop")
        assert app.client.http.is_closed and app.client.stopped is problem


# -- the registry, on every backend -----------------------------------------------------------------------------

class Revoked:
    def __init__(self):
        self.reasons: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.changed.set()

    async def wait(self, what: str) -> str:
        try:
            await asyncio.wait_for(self.changed.wait(), WAIT_S)
        except TimeoutError:
            raise AssertionError(f"{what}: not revoked within {WAIT_S} s") from None
        return self.reasons[0]


async def test_a_server_hears_a_revocation_made_through_another_store_on_every_backend(backend, store, tmp_path):
    other = await make_store(backend, tmp_path, shared=store_target(backend, store))
    revocations = Revocations(other, Accounts(other))
    await revocations.open()
    try:
        accounts = Accounts(store)
        alice = await accounts.add("alice", PASSWORD)
        session = await accounts.open_session(alice)
        kept_session = await accounts.open_session(alice)
        token_id, _token = await accounts.create_token("alice")
        by_session, by_token, by_old = Revoked(), Revoked(), Revoked()
        revocations.watch(alice.workspace, ("login", session), by_session)
        revocations.watch(alice.workspace, ("token", token_id), by_token)
        unwatch = revocations.watch(alice.workspace, ("login", kept_session), by_old)
        await accounts.set_password("alice", "another password entirely")
        assert await by_session.wait("the session") == PASSWORD_CHANGED
        await accounts.revoke_token("alice", token_id)
        assert await by_token.wait("the token") == TOKEN_REVOKED
        assert by_old.reasons == [PASSWORD_CHANGED]  # every session ended with the password
        unwatch()
        assert revocations.open_count(alice.workspace) == 0
    finally:
        await revocations.close()
        await other.close()


async def test_a_revocation_missed_is_caught_by_the_periodic_check(tmp_path):
    async with await open_store(f"sqlite:///{tmp_path / 'q.db'}") as store:
        accounts = Accounts(store)
        alice = await accounts.add("alice", PASSWORD)
        session = await accounts.open_session(alice)
        revocations = Revocations(store, accounts, recheck_s=0.05)
        await revocations.open()
        try:
            revoked, kept = Revoked(), Revoked()
            revocations.watch(alice.workspace, ("login", session), revoked)
            revocations.watch(alice.workspace, ("login", await accounts.open_session(alice)), kept)
            await store.delete_record("login", session)  # as if its fact had been lost on the way
            assert await revoked.wait("the ended session") == SESSION_ENDED
            assert kept.reasons == []
        finally:
            await revocations.close()


async def test_a_connection_let_in_just_before_a_revocation_heard_just_after_is_closed(tmp_path):
    async with await open_store(f"sqlite:///{tmp_path / 'q.db'}") as store:
        accounts = Accounts(store)
        alice = await accounts.add("alice", PASSWORD)
        session = await accounts.open_session(alice)
        revocations = Revocations(store, accounts)
        await revocations.open()
        try:
            assert await accounts.session_user(session) is not None  # checked at its handshake …
            await accounts.set_password("alice", "another password entirely")  # … revoked, heard …
            revoked = Revoked()
            revocations.watch(alice.workspace, ("login", session), revoked)  # … then registered
            assert await revoked.wait("the session let in before") == PASSWORD_CHANGED
        finally:
            await revocations.close()
