"""A command in a finished answer runs exactly once even when the server is killed at any point of running
it (QUANDA_TEST_CRASH_AT): after the claim, after the effect, before the result line. The restarted server
— or another one on the same database — finishes it: the todo exists once, its ✓ line shows once. On SQLite
always, on PostgreSQL when QUANDA_TEST_POSTGRES_URL is set; without transactions (mongomock, in process):
tests/test_jobs.py."""

import asyncio
import re

import httpx
import pytest

from quanda.commands import run_answer_commands
from quanda.config import Settings
from quanda.context import AppContext
from quanda.plugin import load_plugins
from quanda.chat import conversation
from quanda.plugins.todo import todos
from tests.backends import NO_POSTGRES, POSTGRES_URL, postgres_test_url
from tests.crashes import crash_at
from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

TOKEN = "exactly-once"
POINTS = ["after_claim", "after_effect", "before_result_line"]
ANSWER = ['Adding it. {"action": "insert", "target": "todo", "args": {"name": "exactly once"}} ',
          '{"action": "toggle", "target": "todo", "args": {"id": 1}}']


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=ANSWER)) as server:
        yield server


def start(workdir, llm, db, **env):
    workdir.mkdir(exist_ok=True)
    return AppServer(workdir, QUANDA_DB_URL=db, QUANDA_API_TOKEN=TOKEN, QUANDA_JOB_LEASE_S="1",
                     OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", **env).start()


async def ask(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        q = (await api.post("/api/messages", json={"role": "q", "content": "add it"})).json()["id"]
        return (await api.post(f"/api/messages/{q}/answer", json={})).json()["answer_id"]


async def until_settled(server, timeout=30):
    """The todo list and the ✓ lines once the commands settled (both result lines there)."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as browser:
        for _ in range(int(timeout / 0.2)):
            page = (await browser.get("/p/todo")).text
            if page.count("✓ ") >= 2:
                return page
            await asyncio.sleep(0.2)  # polling a page: there is no event to wait on across a restart
    raise AssertionError(f"the commands never settled: {page[-3000:]}")


def check_once(page):
    todo_list = page.split('id="todo-list"', 1)[1].split("</ul>", 1)[0]
    assert len(re.findall(r'<li [^>]*id="todo-\d+"', todo_list)) == 1 and "exactly once" in todo_list
    assert 'data-done="1"' in todo_list  # the toggle ran once too (twice would undo it)
    assert len(re.findall(r"✓ Added the todo", page)) == 1
    assert len(re.findall(r"✓ Marked the todo", page)) == 1


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    return postgres_test_url()


@pytest.mark.parametrize("point", POINTS)
async def test_killed_at_each_point_then_restarted_runs_each_command_once(tmp_path, llm, point, db):
    dying = start(tmp_path / "a", llm, db, QUANDA_TEST_CRASH_AT=point)
    await ask(dying)
    assert await asyncio.to_thread(dying.proc.wait, 30) == 137, "the server did not kill itself at " + point
    dying.log.close()
    assert f"QUANDA_TEST_CRASH_AT={point}" in dying.log_text()
    again = start(tmp_path / "b", llm, db)
    try:
        check_once(await until_settled(again))
    finally:
        again.stop()


async def test_another_live_server_finishes_what_a_killed_one_left(tmp_path, llm, db):
    other = start(tmp_path / "b", llm, db)
    dying = start(tmp_path / "a", llm, db, QUANDA_TEST_CRASH_AT="after_claim")
    try:
        await ask(dying)
        assert await asyncio.to_thread(dying.proc.wait, 30) == 137
        dying.log.close()
        check_once(await until_settled(other))  # no restart: the other server took the job over
    finally:
        other.stop()


class Crashed(BaseException):
    pass


async def test_without_transactions_a_claim_left_applying_is_finished_once(tmp_path, monkeypatch):
    """MongoDB (no multi-document transaction on a standalone or mongomock): the claim is written first; a
    crash right after it leaves the claim "applying", and the next run applies its recorded plan once."""
    from tests.backends import make_store
    store = await make_store("mongomock", tmp_path)
    try:
        assert not store.atomic_records
        crashing = AppContext(Settings(job_lease_s=0), store, load_plugins(entry_point_group=None))
        h = crashing.handle("local")
        with crash_at("after_claim", Crashed), pytest.raises(Crashed):
            await run_answer_commands(h, "a" * 24, "".join(ANSWER))
        assert await todos(h) == []  # claimed, nothing applied yet
        recovering = AppContext(Settings(job_lease_s=0), store, load_plugins(entry_point_group=None))
        h = recovering.handle("local")
        results = await run_answer_commands(h, "a" * 24, "".join(ANSWER))
        assert [r.ok for r in results] == [True, True]
        assert [(t["name"], t["done"]) for t in await todos(h)] == [("exactly once", True)]
        assert await run_answer_commands(h, "a" * 24, "".join(ANSWER)) == []  # and never again
        lines = [e["text"] for _k, e in await conversation.entries(store, "local") if e["type"] == "event"]
        assert sum(line.startswith("✓ Added") for line in lines) == 1
    finally:
        await store.close()
