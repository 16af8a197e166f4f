"""ChunkStream: a producer adds text without waiting; pieces that arrive while a write is in flight go
together as the next chunk, in order; nothing is lost; errors surface at flush."""

import asyncio

import pytest

from quanda.core import ChunkStream, QuandaError, QuandaMessage, QuandaWriter


async def test_every_piece_is_written_in_order_and_bursts_share_chunks(store):
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))
    pieces = [f"p{i} " for i in range(500)]
    for piece in pieces:  # a burst: no await between pieces
        stream.add(piece)
    await asyncio.wait_for(stream.flush(), 10)
    tokens = await store.select_tokens(msg.id, limit=1000)
    assert "".join(t.text for t in tokens) == "".join(pieces)
    assert len(tokens) < len(pieces) / 10, "a burst should be written in a few chunks, not one per piece"


async def test_at_a_slow_rate_each_piece_is_its_own_chunk(store):
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))
    for i in range(5):
        stream.add(f"w{i} ")
        await stream.flush()  # the producer is slower than the store
    assert [t.text for t in await store.select_tokens(msg.id)] == [f"w{i} " for i in range(5)]


async def test_a_write_error_surfaces_at_flush_and_stops_the_stream(store):
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))
    await QuandaWriter(msg).make_immutable()
    stream.add("too late")
    with pytest.raises(QuandaError):
        await asyncio.wait_for(stream.flush(), 10)
    with pytest.raises(QuandaError):
        stream.add("and again")


async def test_a_cancelled_producer_still_gets_its_text_written(store):
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))

    async def producer():
        for i in range(100):
            stream.add(f"{i},")
        await asyncio.Event().wait()  # stopped while waiting for the next token

    task = asyncio.create_task(producer())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(stream.flush(), 10)
    assert (await msg.refresh()).content == "".join(f"{i}," for i in range(100))


async def test_at_a_fast_steady_rate_a_chunk_goes_at_most_every_min_interval(store):
    """Pieces each in a loop turn of their own (an LLM at ~2,000 tokens/s): chunks go at most every
    MIN_INTERVAL_S, so commits and reader wake-ups do not follow the token rate."""
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(100):
        stream.add(f"f{i} ")
        await asyncio.sleep(0.0005)  # the producer's pace
    await asyncio.wait_for(stream.flush(), 10)
    elapsed = loop.time() - start
    tokens = await store.select_tokens(msg.id, limit=1000)
    assert "".join(t.text for t in tokens) == "".join(f"f{i} " for i in range(100))
    assert len(tokens) <= elapsed / ChunkStream.MIN_INTERVAL_S + 2, f"{len(tokens)} chunks in {elapsed:.3f} s"


async def test_a_piece_waits_for_the_interval_only_after_a_recent_chunk(store):
    msg = await QuandaMessage.create(store, role="assistant")
    stream = ChunkStream(QuandaWriter(msg))
    stream.MIN_INTERVAL_S = 0.6  # long enough to tell a wait from a write, even on a loaded machine
    loop = asyncio.get_running_loop()

    async def written_in(text: str) -> float:
        start = loop.time()
        stream.add(text)
        await asyncio.wait_for(stream.flush(), 10)
        return loop.time() - start

    assert await written_in("first ") < 0.3, "the first piece waited"
    assert await written_in("soon after ") >= 0.3, "a piece right after a chunk did not wait for the interval"
    await asyncio.sleep(0.6)  # the producer pauses
    assert await written_in("after a pause ") < 0.3, "a piece after a pause waited"
    assert (await msg.refresh()).content == "first soon after after a pause "
