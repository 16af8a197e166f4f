"""The PostgreSQL store behind PgBouncer (issue 21, item 11): in session mode as it is; in transaction mode
(`?pool_mode=transaction`) without named prepared statements and with LISTEN on a direct URL
(QUANDA_PG_LISTEN_URL) — refused at start, saying why, without one. Run when QUANDA_TEST_POSTGRES_URL is set
and PgBouncer is installed (`.ci/run` installs it)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from quanda.core import QuandaError, QuandaMessage, QuandaReader, QuandaWriter, open_store
from quanda.core.store.fencing import fenced
from tests.backends import POSTGRES_URL, _pg_schemas
from tests.pgbouncer import PgBouncer


def schema() -> str:
    name = f"quanda_test_{int(__import__('time').time())}_{uuid.uuid4().hex[:8]}"
    _pg_schemas.append(name)  # dropped after the test
    return name


async def everything_a_server_does(url: str, listen_url: str = "") -> None:
    """Appends, readers woken across stores (NOTIFY), records, a unit, leases and fencing, facts."""
    a = await open_store(url, listen_url=listen_url)
    b = await open_store(url, listen_url=listen_url)
    try:
        msg = await QuandaMessage.create(a, role="assistant")
        other = await QuandaMessage.from_id(b, msg.id)
        reading = asyncio.create_task(asyncio.wait_for(_read_all(other), 20))
        heard: list = []
        await b.listen(lambda topic, fact: heard.append((topic, fact)))
        writer = QuandaWriter(msg)
        for i in range(50):
            await writer.chunk(f"{i} ")
        await a.publish("test.fact", {"n": 1})
        lease = await a.acquire_lease(msg.id, "a", 30, {})
        with fenced(msg.id, lease.fence):
            await writer.warning("fenced write")
            assert await a.commit_records([("insert", "command", "c:1", {}), ("put", "todo", "t:1", {"n": 1})])
        assert await b.renew_lease(msg.id, lease.fence, 30) and not await b.renew_lease(msg.id, lease.fence + 1, 30)
        await writer.make_immutable()
        tokens = await reading
        assert "".join(t.text for t in tokens if t.kind == "chunk") == "".join(f"{i} " for i in range(50))
        assert await b.get_record("todo", "t:1") == {"n": 1}
        for _ in range(200):
            if heard:
                break
            await asyncio.sleep(0.02)  # a notification from another connection: polled for, with a bound
        assert heard == [("test.fact", {"n": 1})]
    finally:
        await a.close()
        await b.close()


async def _read_all(message) -> list:
    return [token async for token in QuandaReader(message)]


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_the_store_works_through_pgbouncer(postgres_only, mode):
    with PgBouncer(POSTGRES_URL, mode) as bouncer:
        url = bouncer.url(schema())
        if mode == "transaction":
            with pytest.raises(QuandaError, match="QUANDA_PG_LISTEN_URL"):
                await open_store(url)  # LISTEN cannot go through it: refused at start, saying why
            direct = POSTGRES_URL
        else:
            direct = ""
        await everything_a_server_does(url, direct)


@pytest.fixture
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip("PgBouncer stands in front of PostgreSQL")
