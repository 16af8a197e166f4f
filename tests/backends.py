"""The backends the contract suite runs on: SQLite always, MongoDB via mongomock-motor (made to yield to the
event loop before every call, or races stay invisible), and a real MongoDB when QUANDA_TEST_MONGO_URL is set."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from app.quanda import QuandaStore, open_store

REAL_MONGO_URL = os.environ.get("QUANDA_TEST_MONGO_URL", "")
BACKENDS = ["sqlite", "mongomock", "mongo"]
NO_REAL_MONGO = ("set QUANDA_TEST_MONGO_URL=mongodb://host:port to run the contract suite against a real "
                 "MongoDB (none can be installed on this machine)")


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


async def make_store(backend: str, tmp_path: Any, shared: Any = None, **limits: int) -> QuandaStore:
    """A fresh store. `shared` is what a second store on the same database needs: the SQLite path, or the
    mongomock client, or the real database's URL (see `store_target`)."""
    if backend == "sqlite":
        return await open_store(f"sqlite:///{shared or tmp_path / 'quanda.db'}", **limits)
    if backend == "mongomock":
        return await open_store("mongodb://mongomock/quanda", client=shared or mongomock_client(), **limits)
    if backend == "mongo":
        return await open_store(shared or fresh_mongo_url(REAL_MONGO_URL), **limits)
    raise ValueError(backend)


def store_target(backend: str, store: QuandaStore) -> Any:
    """What `make_store(..., shared=)` takes to open a second store on `store`'s database."""
    if backend == "sqlite":
        return store.path
    if backend == "mongomock":
        return store._client
    return mongo_url_for(REAL_MONGO_URL, store._db.name)
