"""Stores by URL: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `mongodb://host:port/db`,
`postgresql://user@host:port/db[?schema=name]`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import QuandaError
from .base import MessageRecord, QuandaStore

DEFAULT_URL = "sqlite:///data/quanda.db"

__all__ = ["DEFAULT_URL", "MessageRecord", "QuandaStore", "open_store"]


async def open_store(url: str = DEFAULT_URL, *, client: Any = None, mongo_driver: str = "pymongo",
                     **limits: int) -> QuandaStore:
    """Open the backend the URL names. For MongoDB, `mongo_driver` picks the client ("pymongo": PyMongo's
    AsyncMongoClient, or "motor"), or `client` hands in a ready one."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise QuandaError("sqlite URLs need a file path (several connections share it): sqlite:///data/quanda.db")
        return await SQLiteStore(path, **limits).open()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoStore
        from .mongo_client import make_client
        database = urlsplit(url).path.lstrip("/") or "quanda"
        client = client or make_client(url, mongo_driver)
        return await MongoStore(client, database, **limits).open()
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore
        return await PostgresStore(url, **limits).open()
    raise QuandaError(f"unsupported store URL {url!r}: use sqlite:///path/to.db, mongodb://host:port/db or "
                      f"postgresql://user@host:port/db")
