"""The MongoDB driver as the store uses it: the client (PyMongo's `AsyncMongoClient` by default, or motor)
with our default options where the URL sets none, driver errors translated into QuandaErrors, and how many
times a write that lost a race is tried."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bson.errors import BSONError

from ..errors import QuandaError, QuandaLimitError, QuandaStoreError, QuandaTimeoutError

#: "resulting document too large" (update), BSONObjectTooLarge, "document to upsert too large"
TOO_LARGE_CODES = frozenset({17419, 10334, 17420})
#: tries of a write that lost a race (an append that another writer got in before, a fact seq given up)
WRITE_RETRIES = 5
#: our client defaults; any of them given in the URL wins (keyword arguments would override the URL)
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 5000,
    "w": "majority",
    "wTimeoutMS": 10000,
    "readConcernLevel": "majority",
    "retryWrites": True,
    "appName": "quanda",
}
_OPTION_ALIASES = {"wtimeoutms": {"wtimeout"}}


@contextlib.contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Driver and BSON errors inside the block become QuandaErrors, raised from the original."""
    from pymongo.errors import DocumentTooLarge, OperationFailure, PyMongoError, WriteConcernError
    try:
        yield
    except DocumentTooLarge as exc:  # the driver refused to send it (a BSONError, not a PyMongoError)
        raise QuandaLimitError(f"{what}: the document is too large for MongoDB ({exc}); nothing was written") \
            from exc
    except (BSONError, OverflowError) as exc:  # a value BSON cannot encode
        raise QuandaError(f"{what}: a value cannot be stored in MongoDB ({exc}); nothing was written") from exc
    except WriteConcernError as exc:  # e.g. wTimeoutMS: applied on the primary, not confirmed by a majority
        raise QuandaStoreError(f"{what}: MongoDB did not confirm the write on a majority of the replica set in "
                               f"time ({exc}); it may still be applied, or rolled back after a failover") from exc
    except PyMongoError as exc:
        if exc.timeout:  # timeoutMS (our deadline), a network timeout, maxTimeMS: the same for the user
            raise QuandaTimeoutError(f"{what}: MongoDB did not answer in time ({exc}); a write may still be "
                                     f"applied") from exc
        if not isinstance(exc, OperationFailure):
            raise QuandaStoreError(f"{what}: MongoDB operation failed: {exc}") from exc
        if exc.code in TOO_LARGE_CODES:
            raise QuandaLimitError(f"{what}: the resulting document would be over MongoDB's 16 MiB limit "
                                   f"(code {exc.code}); nothing was written") from exc
        raise QuandaStoreError(f"{what}: MongoDB operation failed: {exc}") from exc


def driver_errors() -> tuple[type[BaseException], ...]:
    from pymongo.errors import PyMongoError
    return (PyMongoError, BSONError)


def client_options(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Our defaults for the options the URL does not set (the URL wins), plus `tz_aware=False`. The store's
    deadline becomes `timeoutMS` (PyMongo's client-side operation timeout: server selection, connecting and
    the operation itself, retries included; under it the write concern's own timeout is not sent)."""
    given = {key.lower() for key, _value in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    defaults = {**DEFAULT_CLIENT_OPTIONS, "timeoutMS": int(timeout_s * 1000)}
    options = {key: value for key, value in defaults.items()
               if not given & ({key.lower()} | _OPTION_ALIASES.get(key.lower(), set()))}
    return options | {"tz_aware": False}


def make_client(url: str, driver: str = "pymongo", timeout_s: float = 5.0) -> Any:
    """PyMongo's AsyncMongoClient (default) or motor (end of life in May 2026), chosen by QUANDA_MONGO_DRIVER (app/config.py)."""
    options = client_options(url, timeout_s)
    if driver == "pymongo":
        from pymongo import AsyncMongoClient
        return AsyncMongoClient(url, **options)
    if driver != "motor":
        raise QuandaError(f"QUANDA_MONGO_DRIVER must be pymongo or motor, not {driver!r}")
    from motor.motor_asyncio import AsyncIOMotorClient
    return AsyncIOMotorClient(url, **options)
