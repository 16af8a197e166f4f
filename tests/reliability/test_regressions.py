"""One regression test for each bug the reliability suites found (each fails on the code before its fix)."""

from __future__ import annotations

import asyncio

import pytest

from quanda.jobs import Jobs
from quanda.core import open_store
from tests.reliability.harness import eventually

pytestmark = pytest.mark.reliability


async def test_a_server_killed_while_it_recovers_a_dead_servers_job_leaves_it_to_the_next(tmp_path):
    """Crash loop: a server that claimed an expired lease and died before marking the job left the claim taken
    and the lease expired for good — no server ever marked the answer interrupted."""
    url = f"sqlite:///{tmp_path}/quanda.db"
    dead, dying, alive = [await open_store(url) for _ in range(3)]
    message_id = "0123456789abcdef01234567"
    await dead.acquire_lease(message_id, dead.origin, 0.01, {"kind": "assistant", "owner": "o"})

    async def expired():
        return [lease.key for lease in await alive.expired_leases()] == [message_id]
    await eventually(expired, 5, "the dead server's lease expired")
    recovering = asyncio.Event()

    async def killed_midway(job):
        recovering.set()
        await asyncio.Event().wait()

    reap = asyncio.create_task(Jobs(dying, 0.3, {"assistant": killed_midway}).reap())
    await asyncio.wait_for(recovering.wait(), 5)
    reap.cancel()  # the server dies here, its recovery half done
    await asyncio.gather(reap, return_exceptions=True)
    recovered = []

    async def mark(job):
        recovered.append(job.message_id)

    survivor = Jobs(alive, 0.3, {"assistant": mark})
    await survivor.reap()
    assert recovered == []  # the dying server's own lease on the job has not expired yet

    async def reaped():
        await survivor.reap()
        return recovered

    assert await eventually(reaped, 5, "the job recovered by the next server") == [message_id]
    assert await alive.get_lease(message_id) is None  # given up once recovered
    for store in (dead, dying, alive):
        await store.close()


@pytest.fixture
async def api(tmp_path):
    """The app in process, the HTTP API with a bearer token."""
    import httpx

    from quanda.config import Settings
    from quanda.server import create_app

    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/quanda.db", api_token="t", secret="s" * 40))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     headers={"Authorization": "Bearer t"}) as client:
            yield client


async def test_the_api_answers_a_wrong_method_an_unknown_route_and_an_unparsable_body_in_json(api):
    """Protocol abuse: FastHTML's router and body parser answered these in plain text ("Method Not Allowed",
    an empty 404, "Invalid JSON body"), where an API client expects the JSON error of every other refusal."""
    r = await api.delete("/api/messages")
    assert (r.status_code, r.headers["allow"], r.json()) == (405, "POST", {
        "error": "DELETE is not allowed here; allowed: POST"})
    r = await api.get("/api/no-such-route")
    assert (r.status_code, r.json()) == (404, {"error": "no such route"})
    r = await api.post("/api/messages", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (400, {"error": "the body is not acceptable: Invalid JSON body"})
    r = await api.put("/")  # pages keep plain text
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/plain")


async def test_an_error_about_an_id_never_echoes_a_long_one(api):
    """Protocol abuse: GET /api/messages/<5,000 characters> answered with all 5,000 in its error."""
    r = await api.get("/api/messages/" + "a" * 5000)
    assert r.status_code == 404 and len(r.content) < 200, r.text[:300]
    assert r.json()["error"].startswith("no message with id 'aaaaaaaaa") and "…" in r.json()["error"]


async def test_a_postgresql_connection_left_mid_operation_is_a_store_error_and_is_dropped():
    """A dead database: after PostgreSQL stopped mid-answer, a pooled connection raised asyncpg's
    InternalClientError ("cannot switch to state 11; another operation (2) is in progress"), which was not
    translated: it killed the watcher that polls for other servers' writes ("Task exception was never
    retrieved"), and the broken connection went back to the pool."""
    asyncpg = pytest.importorskip("asyncpg")
    import contextlib

    from quanda.core import QuandaStoreError
    from quanda.core.store.postgres import PostgresStore

    class StuckConnection:
        terminated = False

        async def fetch(self, *args):
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation (2) is in progress")

        def terminate(self):
            self.terminated = True

    conn = StuckConnection()

    class Pool:
        @contextlib.asynccontextmanager
        async def acquire(self, timeout=None):
            yield conn

    store = PostgresStore("postgresql://nobody@127.0.0.1:1/none")
    store._pool = Pool()
    with pytest.raises(QuandaStoreError, match="InternalClientError"):
        await store._poll_last_seqs(["0123456789abcdef01234567"])
    assert conn.terminated


async def test_a_job_ending_on_a_store_failure_marks_the_store_down_and_raises_nothing_unretrieved(tmp_path):
    """A dead database: an answer whose store failed under it ended with the exception escaping its task ("Task
    exception was never retrieved", a traceback in the log), and no one was told."""
    from quanda.core import QuandaStoreError

    class Health:
        problems: list = []

        def failed(self, problem):
            self.problems.append(str(problem))

    store = await open_store(f"sqlite:///{tmp_path}/quanda.db")
    jobs = Jobs(store, 5.0, {}, health=Health())

    async def dies():
        raise QuandaStoreError("SQLite write failed: OperationalError: disk I/O error")

    task = await jobs.start("assistant", "0123456789abcdef01234567", "owner", dies())
    await asyncio.wait_for(task, 5)
    assert task.exception() is None and Health.problems == ["SQLite write failed: OperationalError: disk I/O error"]
    await store.close()


async def test_every_tab_is_told_when_the_database_goes_away_and_when_it_is_back(monkeypatch):
    """A dead database: a tab watching an answer saw it stop, with no word of why, and nothing when the
    database was back."""
    import quanda.health
    from quanda.health import StoreHealth
    from quanda.ws import STORE_BACK, STORE_DOWN, Hub

    monkeypatch.setattr(quanda.health, "PROBE_EVERY_S", 0.01)

    class Store:
        origin, records, dead = "me", {}, True

        async def put_record(self, kind, key, data):
            if self.dead:
                raise OSError("disk I/O error")
            self.records[key] = data

        async def get_record(self, kind, key):
            return self.records.get(key)

    class Socket:
        def __init__(self):
            self.scope, self.sent, self.got = {}, [], asyncio.Event()

        async def send_text(self, text):
            self.sent.append(text)
            self.got.set()

    store = Store()
    health = StoreHealth(store)
    hub = Hub(store, {}, {}, None, None, health=health)
    tabs = [Socket(), Socket()]
    for i, tab in enumerate(tabs):
        hub.connect(tab, f"owner{i}")
    assert await health.check() == "the database does not accept writes"
    for tab in tabs:
        await asyncio.wait_for(tab.got.wait(), 5)
        tab.got.clear()
        assert STORE_DOWN.format(" (it does not accept writes)") in tab.sent[-1]  # the cause, in our words
    health.failed("again")  # already down: nobody is told twice
    store.dead = False
    for tab in tabs:
        await asyncio.wait_for(tab.got.wait(), 5)
        assert len(tab.sent) == 2 and STORE_BACK in tab.sent[-1] and 'class="notice info"' in tab.sent[-1]
    assert health.ok
    await health.close()


async def test_a_message_stream_whose_database_fails_ends_with_an_error_event_not_a_traceback(api, monkeypatch):
    """Fault suite (PostgreSQL connections reset mid-stream): a message's SSE stream raised the store's error out
    of its generator — "Exception in ASGI application", a traceback in the log, the stream cut without a word."""
    from quanda.core import QuandaStoreError
    from quanda.core.store.sqlite import SQLiteStore

    mid = (await api.post("/api/messages", json={"role": "assistant", "content": "hello"})).json()["id"]

    async def reset(*args, **kwargs):
        raise QuandaStoreError("PostgreSQL select_tokens failed: ConnectionResetError: [Errno 104] Connection reset")
    monkeypatch.setattr(SQLiteStore, "_select_tokens", reset)
    async with api.stream("GET", f"/api/messages/{mid}/events", headers={"Last-Event-ID": "0"}) as response:
        assert response.status_code == 200
        text = "".join([chunk async for chunk in response.aiter_text()])
    assert "event: error" in text and "the database is unavailable" in text and "Errno" not in text
