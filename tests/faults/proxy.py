"""A TCP proxy of our own between the app and a database, on its own thread (so a test's event loop, or a
server process, sees it as the network): it can pass bytes on, delay them, hold them all (a blackhole: the
network goes silent, no error, no reset), reset every connection, and heal.

- `delay(s)`: every chunk of bytes, either way, waits `s` seconds before it is passed on (order is kept).
- `blackhole()`: nothing passes any more, either way, on open connections or new ones (which the kernel still
  accepts, as a SYN-ACK from a middlebox would): like a partition, where the peer's TCP keeps what it sent.
- `reset()`: every open connection is reset (RST); new ones are reset as soon as they are accepted.
- `heal()`: back to passing bytes; what a blackhole held is delivered, as TCP would after a partition.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Any

from tests.servers import free_port

PASS, DELAY, BLACKHOLE, RESET = "pass", "delay", "blackhole", "reset"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode, self.delay_s = PASS, 0.0
        self.connections = 0  # accepted since the start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()
        self._healed: asyncio.Event | None = None

    def url_for(self, url: str) -> str:
        """`url` (postgresql://user@host:port/db…) pointed at the proxy instead."""
        from urllib.parse import urlsplit, urlunsplit
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)
        host = f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))

    # -- lifecycle (from the test's thread) -------------------------------------------------------------

    def __enter__(self) -> "FaultProxy":
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.run(self._serve(started))

    async def _serve(self, started: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._healed = asyncio.Event()
        self._healed.set()
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        started.set()
        async with server:
            await self._stop.wait()
            server.close()
            self._healed.set()
            for writer in list(self._open):
                _abort(writer)
            await asyncio.gather(*self._handlers, return_exceptions=True)

    # -- faults (from any thread) -------------------------------------------------------------------------

    def _set(self, mode: str, delay_s: float = 0.0) -> None:
        def apply() -> None:
            self.mode, self.delay_s = mode, delay_s
            if mode == BLACKHOLE:
                self._healed.clear()
            else:
                self._healed.set()
            if mode == RESET:
                for writer in list(self._open):
                    _abort(writer)
        assert self._loop is not None
        done = asyncio.run_coroutine_threadsafe(_call(apply), self._loop)
        done.result(10)

    def delay(self, seconds: float) -> None:
        self._set(DELAY, seconds)

    def blackhole(self) -> None:
        self._set(BLACKHOLE)

    def reset(self) -> None:
        self._set(RESET)

    def heal(self) -> None:
        self._set(PASS)

    # -- the proxy --------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self.mode == RESET:
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._healed.wait()  # a blackhole holds the bytes until it heals
                if self.mode == DELAY and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.mode == RESET:
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.mode == RESET:
                _abort(dst)
            else:
                dst.close()


async def _call(fn: Any) -> None:
    fn()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a reset (RST), not a FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
