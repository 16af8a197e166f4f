"""A database written by the version before workspaces (tests/fixtures/legacy-85e95de.db: two browser
sessions, each with todos, a simulator run, a question and answer, an unsent draft) opens, and its data is
folded into the local workspace — or, in accounts mode, waits for `users adopt`. Nothing is lost."""

import shutil
from pathlib import Path

from quanda.accounts import Accounts
from quanda.config import Settings
from quanda.context import AppContext
from quanda.migrate import adopt, legacy_sessions, migrate
from quanda.plugin import load_plugins
from quanda.chat import conversation
from quanda.plugins.todo import todos
from quanda.core import open_store

LEGACY = Path(__file__).parent / "fixtures" / "legacy-85e95de.db"
ALICE, BOB = "eeee49124034d1dea997e159b475cf44", "7bac3ab0d77a667f9e7d466198f6e8ef"


async def legacy_store(tmp_path):
    copy = tmp_path / "legacy.db"
    shutil.copy(LEGACY, copy)
    return await open_store(f"sqlite:///{copy}")


async def test_local_mode_folds_every_session_into_the_local_workspace(tmp_path):
    store = await legacy_store(tmp_path)
    try:
        assert await legacy_sessions(store) == {ALICE, BOB}
        await migrate(store, accounts_mode=False)
        h = AppContext(Settings(), store, load_plugins(entry_point_group=None)).handle("local")
        items = await todos(h)
        assert [(t["id"], t["name"], t["done"]) for t in items] == [
            (1, "fix bike", True), (2, "buy milk", True), (3, "call mom", False)]  # both sessions', renumbered
        entries = [e for _k, e in await conversation.entries(store, "local")]
        questions = [(await store.get_message(e["message_id"])).content for e in entries if e["type"] == "q"]
        assert questions == ["hello from alice", "hello from bob"]  # merged in time order
        assert sum(e["type"] == "assistant" for e in entries) == 2
        assert any("You added the todo 'fix bike'" in e.get("text", "") for e in entries)
        for _key, owner in await store.list_records("owner"):
            assert owner["owner"] == "local"
        assert (await store.get_record("sim_run", "local"))["message_id"]
        assert await legacy_sessions(store) == set()
        await migrate(store, accounts_mode=False)  # once only: a second start changes nothing
        assert len(await todos(h)) == 3
    finally:
        await store.close()


async def test_accounts_mode_leaves_it_for_an_admin_to_give_to_a_user(tmp_path):
    store = await legacy_store(tmp_path)
    try:
        await migrate(store, accounts_mode=True)
        assert await legacy_sessions(store) == {ALICE, BOB}  # nothing moved by itself
        alice = await Accounts(store).add("alice", "a long password")
        await adopt(store, {ALICE}, alice.workspace)
        h = AppContext(Settings(), store, load_plugins(entry_point_group=None)).handle(alice.workspace)
        assert [t["name"] for t in await todos(h)] == ["buy milk", "call mom"]
        assert await legacy_sessions(store) == {BOB}
    finally:
        await store.close()


async def test_the_legacy_database_serves_through_the_app(tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    from quanda.server import create_app
    copy = tmp_path / "legacy.db"
    shutil.copy(LEGACY, copy)
    monkeypatch.chdir(tmp_path)
    app = create_app(Settings(db_url=f"sqlite:///{copy}"), entry_point_group=None)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        page = client.get("/p/todo").text
        assert "fix bike" in page and "buy milk" in page and "call mom" in page
        assert "hello from alice" in page and "hello from bob" in page
