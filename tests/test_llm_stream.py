"""The lean streaming reader of the chat request (app/llm/stream.py): framing, stalls, cuts, cancellation."""

import asyncio

import httpx
import pytest

from quanda.llm.stream import post_stream


async def serve(handler):
    async def closing(reader, writer):
        try:
            await handler(reader, writer)
        finally:
            writer.close()
    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return head, await reader.readexactly(length)


async def collect(url, stall_s=5.0):
    async with post_stream(url, {"a": 1}, {"X-Key": "k"}, connect_s=2, stall_s=stall_s) as response:
        return response.status_code, b"".join([data async for data in response.aiter_bytes()])


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
async def test_each_framing_is_read_whole_however_it_is_split(framing):
    body = "".join(f'{{"n": {i}, "t": "é"}}\n' for i in range(300)).encode()
    seen = {}

    async def handler(reader, writer):
        seen["head"], seen["body"] = await read_request(reader)
        if framing == "chunked":
            framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 37]), body[i:i + 37])
                              for i in range(0, len(body), 37)) + b"0\r\n\r\n"
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        elif framing == "length":
            framed, head = body, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        else:
            framed, head = body, b"HTTP/1.1 200 OK\r\n\r\n"
        data = head + framed
        for i in range(0, len(data), 5):  # every few bytes its own write
            writer.write(data[i:i + 5])
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server:
        assert await asyncio.wait_for(collect(url), 10) == (200, body)
    assert b"POST /x HTTP/1.1" in seen["head"] and b"X-Key: k" in seen["head"] and seen["body"] == b'{"a": 1}'


async def test_a_silent_server_is_a_read_timeout_after_the_stall_time():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await reader.read()  # silent until the client gives up

    server, url = await serve(handler)
    async with server:
        with pytest.raises(httpx.ReadTimeout):
            await asyncio.wait_for(collect(url, stall_s=0.3), 10)


async def test_a_cut_mid_body_and_no_server_are_clear_errors():
    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()
        writer.transport.abort()

    server, url = await serve(handler)
    async with server:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await asyncio.wait_for(collect(url), 10)
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await asyncio.wait_for(collect(url), 10)
    with pytest.raises(httpx.UnsupportedProtocol):
        await collect("ftp://127.0.0.1/x")


async def test_leaving_early_closes_the_connection():
    closed = asyncio.Event()

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"2\r\nab\r\n")
                await writer.drain()
                await asyncio.sleep(0.01)
        except (ConnectionError, OSError):
            closed.set()

    server, url = await serve(handler)
    async with server:
        async with post_stream(url, {}, {}, connect_s=2, stall_s=5) as response:
            async for _data in response.aiter_bytes():
                break  # the client leaves: the socket closes, so the server stops generating
        await asyncio.wait_for(closed.wait(), 10)


async def paced_reads(gap_s: float, lines: int) -> tuple[list[bytes], bytes]:
    """The reads a client makes of `lines` chunks written `gap_s` apart (each its own write)."""
    body = [b'{"n": %d}\n' % i for i in range(lines)]

    async def handler(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for line in body:
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(gap_s)  # the LLM's pace, not a synchronisation
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await serve(handler)
    async with server:
        async with post_stream(url, {}, {}, connect_s=2, stall_s=5) as response:
            reads = await asyncio.wait_for(_all(response.aiter_bytes()), 20)
    return reads, b"".join(body)


async def _all(items):
    return [item async for item in items]


async def test_a_fast_stream_is_read_in_batches_and_whole():
    """At ~2,000 lines/s the socket rests READ_INTERVAL_S after each read: far fewer reads (and event-loop
    wake-ups) than lines, nothing lost or reordered."""
    reads, body = await paced_reads(0.0005, 400)
    assert b"".join(reads) == body
    assert len(reads) < 400 / 3, f"{len(reads)} reads for 400 lines: the socket was read for each line"


async def test_a_slow_stream_is_read_as_each_line_comes():
    """Lines further apart than 2 * READ_INTERVAL_S are each read as they come (no rest delays them)."""
    reads, body = await paced_reads(0.025, 6)
    assert b"".join(reads) == body
    assert len(reads) == 6, f"{len(reads)} reads for 6 lines 25 ms apart"


async def test_a_stream_slower_than_the_rest_stops_resting(monkeypatch):
    """Lines 5 ms apart (200 tokens/s): a rest of READ_INTERVAL_S finds nothing waiting, so the reader stops
    resting (each rest costs a pause, a timer and a resume for no batching)."""
    from quanda.llm import stream

    rests = []
    real_rest = stream._Watchdog.rest
    monkeypatch.setattr(stream._Watchdog, "rest", lambda self, s: (rests.append(s), real_rest(self, s)))
    reads, body = await paced_reads(0.005, 40)
    assert b"".join(reads) == body
    assert len(rests) <= 8, f"{len(rests)} rests for 40 lines 5 ms apart (one per line would be 40)"
