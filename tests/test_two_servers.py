"""Two app processes on one SQLite file: a reader on one sees every token written on the other, in order, once.
And the app refuses to listen beyond loopback without a session secret."""

import json

import httpx
import pytest

from quanda.config import Settings
from quanda.server import create_app
from tests.servers import AppServer

TOKEN = "two-servers-token"


async def test_a_reader_on_one_server_sees_every_token_written_on_the_other(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = AppServer(tmp_path / "a", QUANDA_DB_URL=db, QUANDA_API_TOKEN=TOKEN).start()
    b = AppServer(tmp_path / "b", QUANDA_DB_URL=db, QUANDA_API_TOKEN=TOKEN).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=a.url, headers=auth) as on_a, \
                httpx.AsyncClient(base_url=b.url, headers=auth, timeout=30) as on_b:
            mid = (await on_a.post("/api/messages", json={"role": "assistant"})).json()["id"]
            async with on_b.stream("GET", f"/api/messages/{mid}/events") as stream:
                lines = stream.aiter_lines()
                seen = []
                async for line in lines:  # the snapshot arrives first: B is following
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        break
                for i in range(200):
                    await on_a.post(f"/api/messages/{mid}/tokens", json={"kind": "chunk", "text": f"{i} "})
                await on_a.post(f"/api/messages/{mid}/immutable")
                async for line in lines:
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if seen[-1]["kind"] == "immutable":
                            break
        assert seen[0]["kind"] == "override" and seen[0]["seq"] == 0
        assert [e["seq"] for e in seen[1:]] == list(range(1, 202))
        assert "".join(e["text"] for e in seen[1:]) == "".join(f"{i} " for i in range(200))
    finally:
        a.stop()
        b.stop()


def test_binding_beyond_loopback_needs_accounts_and_a_secret(tmp_path):
    db = f"sqlite:///{tmp_path / 'q.db'}"
    with pytest.raises(RuntimeError, match="QUANDA_AUTH=accounts"):
        create_app(Settings(host="0.0.0.0", secret="x" * 32, db_url=db), entry_point_group=None)
    with pytest.raises(RuntimeError, match="QUANDA_SECRET"):
        create_app(Settings(host="0.0.0.0", auth="accounts", db_url=db), entry_point_group=None)
    with pytest.raises(RuntimeError, match="QUANDA_AUTH must be"):
        create_app(Settings(auth="anyone", db_url=db), entry_point_group=None)
    assert create_app(Settings(host="0.0.0.0", auth="accounts", secret="x" * 32, db_url=db),
                      entry_point_group=None) is not None
