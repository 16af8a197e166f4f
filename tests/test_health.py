"""`GET /-/health` answers 200 only when a write round trip through the store succeeds."""

from starlette.testclient import TestClient

from quanda.config import Settings
from quanda.core import QuandaStoreError
from quanda.core.store.sqlite import SQLiteStore
from quanda.server import create_app


def test_health_is_503_with_the_reason_when_the_store_cannot_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(Settings(db_url=f"sqlite:///{tmp_path}/q.db"), builtin=(), entry_point_group=None)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/-/health").json() == {"ok": True}

        async def broken(*args, **kwargs):
            raise QuandaStoreError("SQLite write failed: disk I/O error (internal detail)")
        with monkeypatch.context() as patch:
            patch.setattr(SQLiteStore, "_put_record", broken)
            response = client.get("/-/health")
        assert response.status_code == 503
        assert response.json() == {"ok": False, "reason": "the database does not accept writes"}
        assert "internal detail" not in response.text
        assert client.get("/-/health").status_code == 200  # healthy again once the store writes
