"""One streaming HTTP/1.1 POST, read lean: the chat request, whose body is read for as long as the answer runs.

httpx is kept for everything else (model lists, capabilities). For the stream itself its machinery costs
~10x a bare socket per read — a cancel scope with a timer per read, h11's events, several async generator
layers — and an LLM at 2,000 tokens/s makes one read per token. Here a read is one `StreamReader.read`,
the body's framing (chunked, Content-Length or until close) is parsed from a buffer, and the stall timeout
is one moving deadline: each read only notes the time; one timer checks it and, when the server has been
silent for `stall_s`, aborts the connection. When reads come less than `READ_INTERVAL_S / 2` apart (a fast
LLM), the socket is left unread for `READ_INTERVAL_S` after each one: what arrives meanwhile waits in the
kernel and comes in one read; once a rest finds nothing waiting (the LLM is slower than that), reads follow
the data again. On this machine a wake-up of the event loop for a token costs ~60 µs of CPU
(half of it in the kernel), as much as everything else the app does for that token; at 2,000 tokens/s this
turns 2,000 wake-ups a second into ~250, for at most 4 ms more before a token is stored. Closing the response (or cancelling its reader) closes the
socket, which is how a client stops an LLM's generation.

Failures are raised as httpx's exception classes, so callers handle one family: ConnectError /
ConnectTimeout (no server), ReadTimeout (a stall), RemoteProtocolError / ReadError (a cut or a broken
response), UnsupportedProtocol (not http/https).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

MAX_HEAD_BYTES = 64 * 1024
READ_BYTES = 64 * 1024
#: how long a fast stream's socket is left unread after a read (seconds)
READ_INTERVAL_S = 0.004


class StreamResponse:
    """The status, the headers (lowercase names), and the body as it comes (`aiter_bytes`)."""

    def __init__(self, status_code: int, headers: dict[str, str], reader: asyncio.StreamReader,
                 buffered: bytes, watchdog: "_Watchdog"):
        self.status_code, self.headers = status_code, headers
        self._reader, self._buffer, self._watchdog = reader, bytearray(buffered), watchdog
        self._last_read = float("-inf")
        self._resting = False  # whether reads rest (the stream is fast enough for a rest to gather data)

    async def _read(self) -> bytes:
        try:
            data = await self._reader.read(READ_BYTES)
        except (ConnectionError, OSError) as exc:
            raise self._watchdog.error(f"the connection broke: {exc}") from exc
        last, now = self._last_read, self._watchdog.touch()
        if not data and self._watchdog.stalled:
            raise self._watchdog.error("")
        self._last_read = now
        if self._resting:
            self._resting = now - self._watchdog.woke < 0.001  # data was waiting when the rest ended
        else:
            self._resting = now - last < READ_INTERVAL_S / 2
        if data and self._resting:
            self._watchdog.rest(READ_INTERVAL_S)
        return data

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        encoding = self.headers.get("transfer-encoding", "").lower()
        if "chunked" in encoding:
            async for data in self._chunked():
                yield data
            return
        length = self.headers.get("content-length")
        remaining = int(length) if length and length.isdigit() else None
        if self._buffer:
            data = bytes(self._buffer if remaining is None else self._buffer[:remaining])
            self._buffer.clear()
            if remaining is not None:
                remaining -= len(data)
            yield data
        while remaining is None or remaining > 0:
            data = await self._read()
            if not data:
                if remaining:
                    raise httpx.RemoteProtocolError("the server closed the connection before the body's end")
                return
            if remaining is not None:
                data = data[:remaining]
                remaining -= len(data)
            yield data

    async def _chunked(self) -> AsyncIterator[bytes]:
        buf, pos = self._buffer, 0
        while True:
            out = bytearray()
            while True:  # every complete chunk in the buffer
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                try:
                    size = int(bytes(buf[pos:end]).split(b";", 1)[0].strip() or b"x", 16)
                except ValueError:
                    raise httpx.RemoteProtocolError("malformed chunked body") from None
                if size == 0:
                    if out:
                        yield bytes(out)
                    return  # trailers, if any, are not needed
                if len(buf) < end + 2 + size + 2:
                    break
                out += buf[end + 2:end + 2 + size]
                pos = end + 2 + size + 2
            if out:
                yield bytes(out)
            del buf[:pos]
            pos = 0
            if len(buf) > MAX_HEAD_BYTES + READ_BYTES * 4 and buf.find(b"\r\n") < 0:
                raise httpx.RemoteProtocolError("malformed chunked body (no chunk size line)")
            data = await self._read()
            if not data:
                raise httpx.RemoteProtocolError("the server closed the connection mid-answer")
            buf += data


class _Watchdog:
    """The stall timeout as one moving deadline: reads note the time; one timer aborts a silent connection."""

    def __init__(self, stall_s: float, transport: asyncio.BaseTransport):
        self.stall_s, self.transport = stall_s, transport
        self.loop = asyncio.get_running_loop()
        self.last = self.loop.time()
        self.stalled = False
        self.timer = self.loop.call_at(self.last + stall_s, self._check)
        self.resting: asyncio.TimerHandle | None = None
        self.woke = float("-inf")  # when the last rest ended

    def touch(self) -> float:
        self.last = self.loop.time()
        return self.last

    def rest(self, seconds: float) -> None:
        """Leave the socket unread for `seconds` (what comes meanwhile waits in the kernel)."""
        if self.resting is None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.resting = self.loop.call_later(seconds, self._wake)

    def _wake(self) -> None:
        self.resting, self.woke = None, self.loop.time()
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def _check(self) -> None:
        due = self.last + self.stall_s
        if self.loop.time() >= due:
            self.stalled = True
            self.transport.abort()
        else:
            self.timer = self.loop.call_at(due, self._check)

    def error(self, detail: str) -> httpx.HTTPError:
        if self.stalled:
            return httpx.ReadTimeout(f"nothing received for {self.stall_s:g} s")
        return httpx.ReadError(detail)

    def cancel(self) -> None:
        self.timer.cancel()
        if self.resting is not None:
            self.resting.cancel()


@asynccontextmanager
async def post_stream(url: str, body: Any, headers: dict[str, str], *, connect_s: float,
                      stall_s: float) -> AsyncIterator[StreamResponse]:
    """POST `body` as JSON to `url` and stream the response; the socket is closed on exit."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"cannot stream from {url!r}: only http:// and https:// URLs")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    context = ssl.create_default_context() if parts.scheme == "https" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, ssl=context,
                                    server_hostname=parts.hostname if context else None, limit=READ_BYTES * 4),
            connect_s)
    except asyncio.TimeoutError:
        raise httpx.ConnectTimeout(f"no connection to {parts.netloc} within {connect_s:g} s") from None
    except (OSError, ssl.SSLError) as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    watchdog = _Watchdog(stall_s, writer.transport)
    try:
        payload = json.dumps(body).encode()
        host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        lines = [f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1", f"Host: {host}",
                 "Content-Type: application/json", f"Content-Length: {len(payload)}", "Connection: close",
                 "User-Agent: quanda", *(f"{k}: {v}" for k, v in headers.items() if "\n" not in f"{k}{v}")]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        response = await _read_head(reader, watchdog)
        yield response
    finally:
        watchdog.cancel()
        writer.close()


async def _read_head(reader: asyncio.StreamReader, watchdog: _Watchdog) -> StreamResponse:
    head = bytearray()
    while b"\r\n\r\n" not in head:
        try:
            data = await reader.read(READ_BYTES)
        except (ConnectionError, OSError) as exc:
            raise watchdog.error(f"the connection broke: {exc}") from exc
        watchdog.touch()
        if not data:
            if watchdog.stalled:
                raise watchdog.error("")
            raise httpx.RemoteProtocolError("the server closed the connection without answering")
        head += data
        if len(head) > MAX_HEAD_BYTES and b"\r\n\r\n" not in head:
            raise httpx.RemoteProtocolError("the response's headers are too long")
    raw, _, rest = bytes(head).partition(b"\r\n\r\n")
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    try:
        version, status, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        code = int(status)
    except ValueError:
        raise httpx.RemoteProtocolError(f"not an HTTP/1.1 response: {status_line[:80]!r}") from None
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return StreamResponse(code, headers, reader, rest, watchdog)
