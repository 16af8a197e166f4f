"""Stores by URL: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `mongodb://host:port/db`,
`postgresql://user@host:port/db[?schema=name]`.

Every backend implements the documented base, `QuandaStore` (base.py), and is one family of modules
(`sqlite*.py`, `postgres*.py`, `mongo*.py`: the store, its schema or layout, its client, its writer…). What
the modules of one family share is named without a leading underscore; a name with one is its module's own,
and no module imports another's (nor another backend's)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..errors import QuandaError
from .base import MessageRecord, QuandaStore
from .deadline import DEFAULT_TIMEOUT_S

DEFAULT_POOL_SIZE = 8

DEFAULT_URL = "sqlite:///data/quanda.db"

__all__ = ["DEFAULT_URL", "MessageRecord", "QuandaStore", "open_store"]


async def open_store(url: str = DEFAULT_URL, *, client: Any = None, mongo_driver: str = "pymongo",
                     timeout_s: float = DEFAULT_TIMEOUT_S, pool_size: int = DEFAULT_POOL_SIZE, migrate: bool = True,
                     listen_url: str = "", **limits: int) -> QuandaStore:
    """Open the backend the URL names, applying the schema migrations this version brings (unless `migrate`
    is False: then `store.schema` only says where the database stands; `migrations.py`). A database
    migrated by a newer version is refused (QuandaSchemaError). Every call of the store fails within
    `timeout_s` seconds when the database does not answer. For MongoDB, `mongo_driver` picks the client ("pymongo": PyMongo's
    AsyncMongoClient, or "motor"), or `client` hands in a ready one; for PostgreSQL, `pool_size` is the
    number of pooled connections and `listen_url` a direct URL for the listening connection (required behind
    PgBouncer in transaction mode, `?pool_mode=transaction`)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore
        path = url[len("sqlite:///"):]
        if not path or path == ":memory:":
            raise QuandaError("sqlite URLs need a file path (several connections share it): sqlite:///data/quanda.db")
        return await SQLiteStore(path, migrate=migrate, timeout_s=timeout_s, **limits).open()
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from .mongo import MongoStore
        from .mongo_client import make_client
        database = urlsplit(url).path.lstrip("/") or "quanda"
        client = client or make_client(url, mongo_driver, timeout_s)
        return await MongoStore(client, database, migrate=migrate, timeout_s=timeout_s, **limits).open()
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore
        return await PostgresStore(url, migrate=migrate, timeout_s=timeout_s, pool_size=pool_size, listen_url=listen_url,
                                   **limits).open()
    raise QuandaError(f"unsupported store URL {url!r}: use sqlite:///path/to.db, mongodb://host:port/db or "
                      f"postgresql://user@host:port/db")
