"""Forward-only numbered migrations on every backend (issue 21, item 7): a new database is brought to the
latest version when the first store opens, each migration applied once even when servers start together
(under the database's lock); a database a newer version migrated is refused, saying why, and left as it is
(the code before migrations wrote its own version back over a newer one, and replaced the newer functions);
`quanda migrate --check` says where a database stands."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from quanda.core import QuandaSchemaError, open_store
from tests.backends import (REAL_MONGO_URL, fresh_mongo_url, make_store, mongomock_client, postgres_test_url,
                            store_target)
from tests.servers import ROOT, AppServer


async def set_version(backend: str, store, version: int) -> None:
    """Write the schema version as a newer Quanda would have (the store's own bookkeeping, behind its API)."""
    if backend == "sqlite":
        await store._write(lambda conn: conn.execute("UPDATE quanda_meta SET value = ? WHERE key = 'schema'",
                                                     (version,)))
    elif backend == "postgres":
        async with store._conn("test") as conn:  # a newer Quanda's rows: its own, and the legacy one
            await conn.execute(f"UPDATE {store._s}.quanda_meta SET value = $1 WHERE key IN ('schema', 'version')",
                               str(version))
    else:
        await store._db["quanda_meta"].update_one({"_id": "schema"}, {"$set": {"version": version}})


async def test_a_new_database_is_migrated_to_the_latest_and_never_twice(store, backend, tmp_path):
    assert store.schema.version == store.schema.known >= 2 and not store.schema.pending
    again = await make_store(backend, tmp_path, store_target(backend, store))
    try:
        assert again.schema.applied == [] and again.schema.version == store.schema.known
    finally:
        await again.close()


def fresh_target(backend: str, tmp_path) -> object:
    """A database no store has opened yet (what `make_store(..., shared=)` takes)."""
    if backend == "sqlite":
        return tmp_path / "fresh.db"
    if backend == "mongomock":
        return mongomock_client()
    if backend == "postgres":
        return postgres_test_url()
    return fresh_mongo_url(REAL_MONGO_URL)


async def test_stores_opening_together_apply_each_migration_once(backend, tmp_path):
    target = fresh_target(backend, tmp_path)
    checked = await make_store(backend, tmp_path, target, migrate=False)
    try:
        assert checked.schema.version == 0 and len(checked.schema.pending) == checked.schema.known
    finally:
        await checked.close()
    stores = await asyncio.gather(*(make_store(backend, tmp_path, target) for _ in range(4)))
    try:
        applied = sorted(m.number for s in stores for m in s.schema.applied)
        assert applied == list(range(1, stores[0].schema.known + 1)), applied  # each once, by one of them
        assert all(s.schema.version == s.schema.known for s in stores)
    finally:
        for s in stores:
            await s.close()


async def test_a_database_migrated_by_a_newer_version_is_refused_and_left_as_it_is(store, backend, tmp_path):
    newer = store.schema.known + 1
    await set_version(backend, store, newer)
    for _attempt in range(2):  # and again: nothing was written back over it
        with pytest.raises(QuandaSchemaError, match=f"at version {newer}, newer than this version of Quanda knows"):
            await make_store(backend, tmp_path, store_target(backend, store))


async def test_a_postgresql_schema_from_before_migrations_is_migrated_in_place(backend, tmp_path):
    if backend != "postgres":
        pytest.skip("PostgreSQL's schemas before migrations had a `version` row of their own")
    from quanda.core.store.postgres_migrations import MIGRATIONS
    store = await make_store(backend, tmp_path, migrate=False)
    try:
        async with store._conn("test") as conn:  # what the code before migrations made: migration 1, version '1'
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {store._s}")
            await conn.execute(MIGRATIONS[0].change.format(s=store._s))
            await conn.execute(f"INSERT INTO {store._s}.quanda_meta VALUES ('version', '1')")
            await conn.execute(f"INSERT INTO {store._s}.quanda_messages (id, role, content, content_bytes, "
                               f"content_seq, last_seq, created_at, updated_at) VALUES ('{'a' * 24}', 'q', 'hi', 2, "
                               f"0, 0, 1, 1)")
    finally:
        await store.close()
    store = await make_store(backend, tmp_path, store_target(backend, store))
    try:
        assert [m.number for m in store.schema.applied] == [2]
        assert (await store.get_message("a" * 24)).content == "hi"
        async with store._conn("test") as conn:
            assert await conn.fetchval(f"SELECT value FROM {store._s}.quanda_meta WHERE key = 'version'") == "1"
    finally:
        await store.close()


def quanda(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quanda", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "QUANDA_DB_URL": url})


def test_quanda_migrate_says_where_a_database_stands_and_applies_what_is_pending(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    checked = quanda("migrate", "--check", url=url)
    assert checked.returncode == 1 and "at version 0" in checked.stdout and "pending: 2." in checked.stdout
    done = quanda("migrate", url=url)
    assert done.returncode == 0 and "applied now: 1." in done.stdout and "Up to date." in done.stdout
    assert quanda("migrate", "--check", url=url).returncode == 0

    async def newer():
        store = await open_store(url)
        await set_version("sqlite", store, store.schema.known + 7)
        await store.close()
    asyncio.run(newer())
    refused = quanda("migrate", "--check", url=url)
    assert refused.returncode == 2 and "newer than this version of Quanda" in refused.stderr


def test_a_server_older_than_its_database_refuses_to_start_saying_why(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"

    async def newer():
        store = await open_store(url)
        await set_version("sqlite", store, store.schema.known + 1)
        await store.close()
    asyncio.run(newer())
    with pytest.raises(RuntimeError, match="not starting: the SQLite database's schema is at version"):
        AppServer(tmp_path, QUANDA_DB_URL=url).start()
