"""Serve the app: `quanda serve` (or `python main.py` in a checkout) serves http://127.0.0.1:5001 on the embedded
SQLite store; the settings come from the environment (quanda/config.py), --host, --port and --workers override
three of them (`--workers N`: N processes on the port, app/workers.py)."""

import argparse
import asyncio
import gc
import logging
import sys

import uvicorn

from quanda import logs
from quanda.config import Settings
from quanda.core import QuandaError, open_store
from quanda.server import create_app
from quanda.ws import MAX_CLIENT_FRAME_BYTES

# uvicorn reads a whole frame before the app sees it (by default up to 16 MiB): a frame over the app's own
# limit (MAX_CLIENT_FRAME_BYTES) is answered with a notice up to WS_MAX_SIZE, beyond which the socket is
# closed (1009, message too big)
WS_MAX_SIZE = 16 * MAX_CLIENT_FRAME_BYTES

# On shutdown, requests in flight get this long to finish; then open streams (SSE followers, which never end by
# themselves) are cut, their clients reconnect to the next server, and the jobs are stopped and marked.
SHUTDOWN_GRACE_S = 3.0


def server_options(settings: Settings) -> dict:
    """uvicorn's options for the app (the benchmarks serve it with the same). permessage-deflate is off unless
    QUANDA_WS_DEFLATE=1: each tab's socket compresses every frame on its own (zlib was 13 % of the server's
    CPU with 20 tabs following an answer at 2,000 tokens/s), to save bandwidth that a stream of small HTML
    fragments (tens of kB per answer) hardly uses.

    `X-Forwarded-For` / `X-Forwarded-Proto` are believed only from QUANDA_TRUSTED_PROXIES: uvicorn believes them
    from 127.0.0.1 by default, which would let any local process pose as any address and lift the per-address
    limits (login throttle, handshakes, connections)."""
    proxies = settings.trusted_proxy_list
    return {"timeout_graceful_shutdown": SHUTDOWN_GRACE_S, "ws_max_size": WS_MAX_SIZE,
            "ws_per_message_deflate": bool(settings.ws_deflate),
            "proxy_headers": bool(proxies), "forwarded_allow_ips": proxies or None}


def freeze_startup() -> None:
    """What importing and building the app made lives as long as the process: out of the collector's sight, a
    full collection (streaming triggers one now and then) walks only what came since, instead of stalling
    every stream for 10-15 ms."""
    gc.collect()
    gc.freeze()


async def migrate_first(settings: Settings) -> None:
    """Open the store once before serving: the pending schema migrations are applied (once across servers,
    under the database's lock), and a database migrated by a newer version stops the start here, saying so."""
    async with await open_store(settings.db_url, **settings.store_options()) as store:
        for migration in store.schema.applied:
            logging.getLogger("quanda.serve").info("applied schema migration %d: %s", migration.number,
                                                    migration.what)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="quanda serve", description="Serve the Quanda app (settings: QUANDA_* "
                                     "environment variables).")
    parser.add_argument("--host", help="address to bind (QUANDA_HOST)")
    parser.add_argument("--port", type=int, help="port to serve on (QUANDA_PORT)")
    parser.add_argument("--workers", type=int, help="server processes on the port, peers through the store "
                        "(QUANDA_WORKERS; default 1)")
    args = parser.parse_args(argv)
    given = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    settings = Settings.from_env(**given)
    log_options = logs.setup(settings.log_format)
    if settings.workers < 1:
        parser.error(f"--workers must be at least 1, not {settings.workers}")
    try:
        asyncio.run(migrate_first(settings))
    except QuandaError as exc:
        logging.getLogger("quanda.serve").error("not starting: %s", exc)
        print(f"quanda serve: not starting: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    if settings.workers > 1:
        from quanda.server import session_secret
        from quanda.workers import serve_workers

        session_secret(settings)  # made once, here: every worker signs sessions with the same key
        create_app(settings)  # what would stop every worker (a setting refused, a broken plugin) stops the start here
        try:
            raise SystemExit(serve_workers(settings, log_options))
        except OSError as exc:  # the port is taken
            print(f"quanda serve: not starting: {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
            raise SystemExit(1) from None
    the_app = create_app(settings)
    freeze_startup()
    uvicorn.run(the_app, host=settings.host, port=settings.port, log_level="info", **server_options(settings),
                **log_options)


if __name__ == "__main__":
    main()
