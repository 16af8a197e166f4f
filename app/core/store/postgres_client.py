"""Connecting to PostgreSQL through asyncpg (the optional extra `postgres`: `asyncpg` is None without it):
the URL, the notification channel, pool connections without a reset query, and driver errors translated.

A URL `postgresql://user@host:port/db?schema=name` keeps the tables in schema `name` (created if missing;
default `public`); `?pool_mode=transaction` says the URL leads to PgBouncer in transaction mode (see
`postgres.py`); other query parameters go to asyncpg, which sends unknown ones as server settings
(e.g. `?synchronous_commit=off` trades the last few hundred milliseconds of commits on a crash of the
database server for faster single-writer commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
from typing import Any
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import QuandaError, QuandaStoreError, QuandaTimeoutError

try:
    import asyncpg
except ImportError:  # pragma: no cover - the optional extra is not installed
    asyncpg = None

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


POOL_MODES = ("session", "transaction")


def split_url(url: str) -> tuple[str, str]:
    """(the DSN for asyncpg, the schema) from `postgresql://…[?schema=name&pool_mode=…&…]`."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    rest = []
    for name, value in query:
        if name == "schema":
            schema = value
        elif name != "pool_mode":
            rest.append((name, value))
    if not _SCHEMA_RE.fullmatch(schema):
        raise QuandaError(f"invalid PostgreSQL schema {schema!r}: letters, digits and _, at most 63")
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


def pool_mode_of(url: str) -> str:
    """How the URL's server pools connections: "session" (PostgreSQL itself, or PgBouncer in session mode:
    the default) or "transaction" (`?pool_mode=transaction`: PgBouncer in transaction mode)."""
    mode = dict(parse_qsl(urlsplit(url).query)).get("pool_mode", "session")
    if mode not in POOL_MODES:
        raise QuandaError(f"pool_mode must be session or transaction, not {mode!r}")
    return mode


def quote_ident(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def channel_name(schema: str) -> str:
    name = "quanda" if schema == "public" else f"quanda_{schema}"
    if len(name) > 63:  # NOTIFY channel names are identifiers: at most 63 bytes
        name = "quanda_" + hashlib.sha1(schema.encode()).hexdigest()
    return name


class NoResetConnection(asyncpg.Connection if asyncpg is not None else object):  # type: ignore[misc]
    """Pool connections never LISTEN, hold session locks or change settings: skip the reset query that
    asyncpg runs on every release (a round trip per pooled call)."""

    def get_reset_query(self) -> str:
        return ""


# what asyncpg raises when the database is unreachable or goes away; InternalClientError ("cannot switch to
# state …; another operation is in progress") comes from a connection left mid-operation when the server
# went away under it, and is none of the others
DRIVER_ERRORS = ((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
                  asyncio.TimeoutError) if asyncpg is not None else (OSError, asyncio.TimeoutError))


@contextlib.contextmanager
def translated_errors(what: str, timeout_s: float | None = None) -> Iterator[None]:
    """Driver errors become QuandaStoreError (a timeout QuandaTimeoutError), raised from the original."""
    try:
        yield
    except QuandaError:
        raise
    except (TimeoutError, asyncio.TimeoutError) as exc:
        within = f" within {timeout_s:g} s" if timeout_s else " in time"
        raise QuandaTimeoutError(f"PostgreSQL did not answer{within} ({what})") from exc
    except DRIVER_ERRORS as exc:
        raise QuandaStoreError(f"PostgreSQL {what} failed: {type(exc).__name__}: {exc}") from exc


def connection_broken(exc: BaseException | None) -> bool:
    """Whether a connection that raised `exc` must not be used again: a timeout, a cancellation, a lost
    socket, a protocol state left mid-operation — not an error the server sent, nor one of ours."""
    if isinstance(exc, QuandaError) or (asyncpg is not None and isinstance(exc, asyncpg.PostgresError)):
        return False
    return isinstance(exc, (asyncio.CancelledError, *DRIVER_ERRORS))


def keep_alive(conn: Any, timeout_s: float) -> None:
    """TCP keepalives and a send timeout on the connection's socket, so a peer that vanished without a word
    (a partition, a dead host) is noticed by the kernel too, not only by our deadlines. asyncpg has no
    option for them (libpq's `keepalives_*`)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle = max(1, int(timeout_s))
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", idle), ("TCP_KEEPCNT", 3),
                        ("TCP_USER_TIMEOUT", int(4 * timeout_s * 1000))):
        if hasattr(socket, name):  # Linux
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    with contextlib.suppress(OSError):
        for level, name, value in options:
            sock.setsockopt(level, name, value)
