"""Invariants 1, 2 and 3 under concurrency: many writer tasks, many writer processes, readers throughout,
and `make_immutable` racing with writers."""

import asyncio
import json
import sys

import pytest

from quanda.core import QuandaImmutableError, QuandaMessage, QuandaReader, QuandaToken, QuandaWriter, replay
from tests.backends import REAL_MONGO_URL, make_store, store_url


async def read_all(message):
    return [token async for token in QuandaReader(message)]


def check_log_and_readers(tokens, stored, reader_logs, writers):
    """Seqs 1…N gap-free, content == replay, every reader saw every token after its snapshot once, in order."""
    assert [t.seq for t in tokens] == list(range(1, len(tokens) + 1))
    assert tokens[-1].kind == "immutable"
    assert replay(tokens) == stored
    for tag, count in writers.items():  # each writer's chunks are all there, in its own order
        mine = [t.text for t in tokens if t.text.startswith(f"{tag}:")]
        assert mine == [f"{tag}:{i} " for i in range(count)]
    for log in reader_logs:
        snapshot = log[0]
        assert snapshot.kind == "override"
        assert log[1:] == tokens[snapshot.seq:]
        assert replay(log) == stored


async def test_8_writer_tasks_500_chunks_each_with_readers_throughout(store):
    msg = await QuandaMessage.create(store, role="assistant")
    early = [asyncio.create_task(read_all(msg)) for _ in range(3)]
    late = []

    async def writer(tag):
        w = QuandaWriter(msg)
        seqs = []
        for i in range(500):
            seqs.append((await w.chunk(f"{tag}:{i} ", estimate=f"({tag}{i})")).seq)
            if tag == "w0" and i % 125 == 0:
                late.append(asyncio.create_task(read_all(msg)))
        return seqs

    results = await asyncio.gather(*(writer(f"w{n}") for n in range(8)))
    await QuandaWriter(msg).make_immutable()
    logs = await asyncio.wait_for(asyncio.gather(*early, *late), timeout=60)
    tokens = await store.select_tokens(msg.id, limit=10_000)
    assert sorted(s for seqs in results for s in seqs) == list(range(1, 4001))
    for seqs in results:
        assert seqs == sorted(seqs)
    await msg.refresh()
    check_log_and_readers(tokens, msg.state, logs, {f"w{n}": 500 for n in range(8)})


@pytest.mark.parametrize("backend", ["sqlite", "mongo", "postgres"], indirect=True)
async def test_4_writer_processes_500_chunks_each_with_readers_throughout(backend, store):
    if backend == "mongo" and not REAL_MONGO_URL:
        pytest.skip("needs QUANDA_TEST_MONGO_URL")
    url = store_url(backend, store)
    msg = await QuandaMessage.create(store, role="assistant")
    readers = [asyncio.create_task(read_all(msg)) for _ in range(3)]
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.quanda_worker", url, msg.id, f"p{n}",
                                                  "500", stdout=asyncio.subprocess.PIPE) for n in range(4)]
    for proc in procs:
        assert (await proc.stdout.readline()).strip() == b"ready"
    late = asyncio.create_task(read_all(msg))
    outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
    assert all(proc.returncode == 0 for proc in procs)
    seqs = [json.loads(out)["seqs"] for out, _ in outputs]
    await QuandaWriter(msg).make_immutable()
    logs = await asyncio.wait_for(asyncio.gather(*readers, late), timeout=60)
    tokens = await store.select_tokens(msg.id, limit=10_000)
    assert sorted(s for part in seqs for s in part) == list(range(1, 2001))
    await msg.refresh()
    check_log_and_readers(tokens, msg.state, logs, {f"p{n}": 500 for n in range(4)})


async def test_make_immutable_racing_with_writer_tasks(store):
    msg = await QuandaMessage.create(store, role="assistant")
    started = asyncio.Event()

    async def writer(tag):
        w, seqs, i = QuandaWriter(msg), [], 0
        while True:
            try:
                seqs.append((await w.chunk(f"{tag}:{i} ")).seq)
            except QuandaImmutableError:
                return seqs
            i += 1
            if i == 20:
                started.set()

    writers = [asyncio.create_task(writer(f"w{n}")) for n in range(4)]
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([waiting, *writers], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not started.is_set():  # a writer died of another error (or none got going): fail, don't hang
        waiting.cancel()
        failed = [w.exception() for w in writers if w.done()]
        pytest.fail(f"the writers never reached 20 chunks: {failed or 'no progress in 30 s'}")
    sealed = await QuandaWriter(msg).make_immutable()
    after = [QuandaWriter(msg).chunk("late"), QuandaWriter(msg).override("late"), QuandaWriter(msg).warning("x")]
    for write in after:
        with pytest.raises(QuandaImmutableError):
            await write
    results = await asyncio.wait_for(asyncio.gather(*writers), timeout=30)
    tokens = await store.select_tokens(msg.id, limit=100_000)
    assert tokens[-1] == sealed and sealed.seq == len(tokens)
    assert all(s < sealed.seq for seqs in results for s in seqs)
    assert sorted(s for seqs in results for s in seqs) == list(range(1, sealed.seq))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
async def test_make_immutable_racing_with_a_writer_process(backend, tmp_path):
    store = await make_store(backend, tmp_path)
    try:
        msg = await QuandaMessage.create(store, role="assistant")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.quanda_worker", store_url(backend, store), msg.id, "p", "0",
            "--until-immutable", stdout=asyncio.subprocess.PIPE)
        assert (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).strip() == b"ready"
        reader = QuandaReader(msg).__aiter__()

        async def until_20_tokens():
            async for token in reader:  # wait (without sleeping) until the process has written something
                if token.seq >= 20:
                    return
        try:
            await asyncio.wait_for(until_20_tokens(), timeout=30)
        except asyncio.TimeoutError:
            pytest.fail("the writer process wrote fewer than 20 tokens in 30 s")
        sealed = await QuandaWriter(msg).make_immutable()
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        result = json.loads(out)
        assert result["refused"] is True
        assert result["seqs"] == list(range(1, sealed.seq))
        tokens = await store.select_tokens(msg.id, limit=100_000)
        assert tokens[-1] == QuandaToken("immutable", "", None, sealed.seq) == sealed
        await reader.aclose()
    finally:
        await store.close()
