"""The backends the contract suite runs on: SQLite always, MongoDB via mongomock-motor (made to yield to the
event loop before every call, or races stay invisible), a real MongoDB when QUANDA_TEST_MONGO_URL is set, and
PostgreSQL when QUANDA_TEST_POSTGRES_URL is set (each store in a fresh schema, dropped after the test)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from quanda.core import QuandaStore, open_store

REAL_MONGO_URL = os.environ.get("QUANDA_TEST_MONGO_URL", "")
POSTGRES_URL = os.environ.get("QUANDA_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", "mongomock", "mongo", "postgres"]
NO_REAL_MONGO = ("set QUANDA_TEST_MONGO_URL=mongodb://host:port to run the contract suite against a real "
                 "MongoDB (none can be installed on this machine)")
NO_POSTGRES = ("set QUANDA_TEST_POSTGRES_URL=postgresql://root@127.0.0.1:5432/test to run the contract suite "
               "against PostgreSQL (.ci/run does)")
PG_SCHEMA_PREFIX = "quanda_test_"
PG_STALE_S = 6 * 3600  # schemas a crashed run left behind are dropped by the next run after this
_pg_schemas: list[str] = []  # made by this test process and not dropped yet
_pg_problem: list[str | None] = []


def mongo_url_for(url: str, database: str) -> str:
    """`url` naming `database` instead of its own, with its hosts, credentials and options kept. Credentials
    authenticate against the URL's database unless `authSource` says otherwise: that is pinned first."""
    parts = urlsplit(url)
    query = parts.query  # kept as written: re-encoding could alter values such as readPreferenceTags
    if "@" in parts.netloc and not any(key.lower() == "authsource" for key, _ in parse_qsl(query)):
        query = "&".join(filter(None, [query, f"authSource={parts.path.lstrip('/') or 'admin'}"]))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", query, ""))


def fresh_mongo_url(url: str) -> str:
    """A unique database per test, named after the URL's (default `quanda_test`), e.g.
    mongodb://h:27017/db?replicaSet=rs0 -> mongodb://h:27017/db_1a2b3c4d5e6f?replicaSet=rs0."""
    base = urlsplit(url).path.lstrip("/") or "quanda_test"
    return mongo_url_for(url, f"{base[:40]}_{uuid.uuid4().hex[:12]}")


class Yielding:
    """Proxy that awaits `asyncio.sleep(0)` before each awaitable call, and wraps what it returns."""

    def __init__(self, target: Any):
        self._target = target

    def __getitem__(self, name: str) -> "Yielding":
        return Yielding(self._target[name])

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                async def yielding() -> Any:
                    await asyncio.sleep(0)
                    return await result
                return yielding()
            if hasattr(result, "to_list") or hasattr(result, "insert_one"):
                return Yielding(result)
            return result

        return call


def mongomock_client() -> Any:
    from mongomock_motor import AsyncMongoMockClient
    return Yielding(AsyncMongoMockClient())


async def make_store(backend: str, tmp_path: Any, shared: Any = None, **limits: Any) -> QuandaStore:
    """A fresh store. `shared` is what a second store on the same database needs: the SQLite path, or the
    mongomock client, or the real database's URL (see `store_target`)."""
    if backend == "sqlite":
        return await open_store(f"sqlite:///{shared or tmp_path / 'quanda.db'}", **limits)
    if backend == "mongomock":
        return await open_store("mongodb://mongomock/quanda", client=shared or mongomock_client(), **limits)
    if backend == "mongo":
        return await open_store(shared or fresh_mongo_url(REAL_MONGO_URL), **limits)
    if backend == "postgres":
        return await open_store(shared or postgres_test_url(), **limits)
    raise ValueError(backend)


def store_target(backend: str, store: QuandaStore) -> Any:
    """What `make_store(..., shared=)` takes to open a second store on `store`'s database."""
    if backend == "sqlite":
        return store.path
    if backend == "mongomock":
        return store._client
    if backend == "postgres":
        return store.url
    return mongo_url_for(REAL_MONGO_URL, store._db.name)


def store_url(backend: str, store: QuandaStore) -> str:
    """The URL another process opens to reach `store`'s database (not for mongomock: it lives in this one)."""
    if backend == "sqlite":
        return f"sqlite:///{store.path}"
    if backend == "mongomock":
        raise ValueError("mongomock lives in this process only")
    return store_target(backend, store)


# -- PostgreSQL: a schema per store ------------------------------------------------------------------------

def postgres_test_url() -> str:
    """QUANDA_TEST_POSTGRES_URL with a fresh schema (the store creates it; `drop_postgres_schemas` drops it)."""
    schema = f"{PG_SCHEMA_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"
    _pg_schemas.append(schema)
    parts = urlsplit(POSTGRES_URL)
    query = urlencode([*parse_qsl(parts.query), ("schema", schema)])
    return urlunsplit(parts._replace(query=query))


def _in_thread(coro_fn: Any) -> Any:
    """Run `coro_fn()` on a private event loop in its own thread (callable from sync code and fixtures)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coro_fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)
    thread = threading.Thread(target=run, name="quanda-test-postgres")
    thread.start()
    thread.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def postgres_problem() -> str | None:
    """Why the contract suite cannot run on QUANDA_TEST_POSTGRES_URL, or None (checked once per run)."""
    if not _pg_problem:
        try:
            import asyncpg
        except ImportError:
            _pg_problem.append("QUANDA_TEST_POSTGRES_URL is set but asyncpg is not installed: pip install -e '.[test]'")
            return _pg_problem[0]

        async def check() -> None:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
            await conn.close()
        try:
            _in_thread(check)
            _pg_problem.append(None)
            drop_postgres_schemas(stale=True)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is the message
            _pg_problem.append(f"QUANDA_TEST_POSTGRES_URL={POSTGRES_URL} is set but PostgreSQL cannot be reached "
                               f"there ({type(exc).__name__}: {exc}); start it or unset the variable")
    return _pg_problem[0]


def drop_postgres_schemas(stale: bool = False) -> None:
    """Drop the schemas this process made (with `stale`: also those older runs left behind)."""
    mine, _pg_schemas[:] = list(_pg_schemas), []
    if not mine and not stale:
        return

    async def drop() -> None:
        import asyncpg
        conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            await conn.execute("SET lock_timeout = '10s'")
            names = list(mine)
            if stale:
                for (name,) in await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
                                                PG_SCHEMA_PREFIX + "%"):
                    stamp = name[len(PG_SCHEMA_PREFIX):].split("_")[0]
                    if stamp.isdigit() and int(stamp) < time.time() - PG_STALE_S:
                        names.append(name)
            for name in names:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
    try:
        _in_thread(drop)
    except Exception as exc:  # noqa: BLE001 - the test has failed already if the server is gone; a later run drops them
        print(f"could not drop the test schemas {mine}: {type(exc).__name__}: {exc}", file=sys.stderr)
