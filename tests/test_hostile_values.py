"""One request must never stop the app: hostile seqs, text that cannot be stored, deep JSON and big bodies,
through the core on every backend, the HTTP API and the WebSocket of a real server. After each, a normal
request must answer within a second."""

import asyncio
import contextlib
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from quanda.core import QuandaError, QuandaMessage, QuandaReader, QuandaWriter
from quanda.core.validation import MAX_SEQ
from tests.servers import AppServer, open_tab

ANSWER_S = 1.0
HOSTILE_SEQS = st.one_of(
    st.integers(max_value=-1), st.integers(min_value=MAX_SEQ + 1, max_value=10**40), st.just(10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.just(float("inf")), st.text(max_size=30),
    st.booleans(), st.lists(st.integers(), max_size=2),
)
PIECES = ["\ud800", "\udfff", "\ud83d", "\ude00", "\x00", "\uffff", "\u202e", "\u200f", "😀", "$where", "é"]
TEXTS = st.lists(st.one_of(st.characters(), st.sampled_from(PIECES)), max_size=40).map("".join)


def storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the core ----------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=HOSTILE_SEQS)
async def test_a_hostile_seq_is_refused_where_it_enters_the_core(store, seq):
    msg = await QuandaMessage.create(store, role="assistant", content="x")
    with pytest.raises(QuandaError):
        QuandaReader(msg, after_seq=seq)
    with pytest.raises(QuandaError):
        await store.select_tokens(msg.id, gt=seq)
    await asyncio.wait_for(QuandaWriter(msg).chunk("still fine"), ANSWER_S)


async def test_a_resume_past_the_end_is_refused_and_at_the_end_of_a_sealed_message_ends(store):
    msg = await QuandaMessage.create(store, role="assistant", content="x")
    with pytest.raises(QuandaError, match="last seq is 1"):
        async for _ in QuandaReader(msg, after_seq=2):
            pass
    await QuandaWriter(msg).make_immutable()
    assert [t async for t in QuandaReader(msg, after_seq=2)] == []


async def test_a_reader_waiting_for_a_missing_seq_lets_the_event_loop_serve(store, monkeypatch):
    """A token not yet visible in order (seq 5 seen, 2 missing) must not spin the loop."""
    msg = await QuandaMessage.create(store, role="assistant", content="x")
    for _ in range(4):
        await QuandaWriter(msg).chunk("y")
    fetches = 0
    real = type(store)._select_tokens

    async def only_later_tokens(self, message_id, gt, limit):
        nonlocal fetches
        fetches += 1
        return [t for t in await real(self, message_id, gt, limit) if t.seq >= 5]

    monkeypatch.setattr(type(store), "_select_tokens", only_later_tokens)
    reader = QuandaReader(msg, after_seq=1).__aiter__()
    stuck = asyncio.create_task(reader.__anext__())
    ticks = 0
    for _ in range(50):
        await asyncio.sleep(0)
        ticks += 1
    await asyncio.sleep(0.05)  # a gap waits with a backoff: over 50 ms only a few fetches happen
    assert not stuck.done() and ticks == 50
    assert fetches < 20, f"{fetches} fetches in 50 ms: the reader is spinning"
    stuck.cancel()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
async def test_any_text_is_stored_exactly_or_refused_and_the_store_keeps_writing(store, texts):
    msg = await QuandaMessage.create(store, role="assistant")
    writer, expected = QuandaWriter(msg), ""
    for text in texts:
        for write in (lambda: writer.chunk(text), lambda: writer.chunk("a", estimate=text),
                      lambda: writer.warning(text), lambda: store.put_record("todo", "k", {"name": text}),
                      lambda: store.put_record("todo", text or "k", {"n": 1})):
            if storable(text):
                await asyncio.wait_for(write(), ANSWER_S)
            else:
                with pytest.raises(QuandaError, match="cannot be stored"):
                    await asyncio.wait_for(write(), ANSWER_S)
        if storable(text):
            expected += text + "a"
        await asyncio.wait_for(writer.chunk("."), ANSWER_S)  # a normal write right after
        expected += "."
    await msg.refresh()
    assert msg.content == expected


async def test_the_lone_surrogate_reproduction_no_longer_hangs_the_writer(store):
    msg = await QuandaMessage.create(store, role="assistant")
    with pytest.raises(QuandaError, match="lone UTF-16 surrogate"):
        await asyncio.wait_for(QuandaWriter(msg).chunk("bad \ud800"), ANSWER_S)
    assert (await asyncio.wait_for(QuandaWriter(msg).chunk("good"), ANSWER_S)).seq == 1
    with pytest.raises(QuandaError):
        await QuandaMessage.create(store, role="q\udc00")


# -- a real server ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("hostile")).start()
    yield server
    server.stop()


async def still_serving(server):
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/-/plugins", timeout=ANSWER_S)
    assert response.status_code == 200


@contextlib.asynccontextmanager
async def session(server):
    """An HTTP client holding a browser session of the server."""
    async with httpx.AsyncClient(base_url=server.url, timeout=5, headers={"Origin": server.url}) as client:
        await client.get("/")
        yield client


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.one_of(st.just("-1"), st.just("99999999999999999999999999999"), st.just("1e400"),
                     st.just(str(MAX_SEQ + 1)), st.just("٣"), st.just(" 1"), st.text(max_size=20),
                     st.integers(max_value=-1).map(str), st.floats().map(str)))
async def test_api_last_event_id_hostile_values_get_400(server, seq):
    async with session(server) as c:
        mid = (await c.post("/api/messages", json={"role": "assistant", "content": "x"})).json()["id"]
        await c.post(f"/api/messages/{mid}/immutable")
        try:
            response = await c.get(f"/api/messages/{mid}/events", headers={"Last-Event-ID": seq.encode("utf-8")})
        except httpx.LocalProtocolError:
            return  # a header httpx itself refuses to send
        if seq in ("", "0", "1", "2") or (seq.isascii() and seq.isdigit() and int(seq) <= 2):
            assert response.status_code == 200
        else:
            assert response.status_code == 400, (seq, response.text)
            if response.headers.get("content-type") == "application/json":  # else uvicorn refused the header
                assert "Last-Event-ID" in response.json()["error"]
    await still_serving(server)


def ws_connect(server, client, page):
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return open_tab(server, cookie, page)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), 5)


async def test_ws_follow_with_hostile_seqs_gets_a_notice_and_the_server_keeps_serving(server):
    async with session(server) as c:
        async with ws_connect(server, c, "simulator") as ws:
            await ws.send(json.dumps({"action": "sim.start", "chunks": "3", "delay_min": "0", "delay_max": "0"}))
            frames = ""
            while 'data-message="' not in frames:
                frames += await recv(ws)
            run_id = frames.split('data-message="')[1][:24]
            for seq in [-1, "-1", 1e400, 10**30, MAX_SEQ + 1, 1.5, "1", None, True, [1], {"a": 1}]:
                frame = json.dumps({"action": "follow", "streams": {run_id: seq}})
                await ws.send(frame.replace("Infinity", "1e400"))
                notice = await recv(ws)
                while "ws-notice" not in notice:  # frames of the run may come first
                    notice = await recv(ws)
                assert "bad seq" in notice, (seq, notice)
                await still_serving(server)
            await ws.send(json.dumps({"action": "follow", "streams": {f"{i:024x}": 0 for i in range(10_000)}}))
            assert "message too large" in await recv(ws)
            await ws.send(json.dumps({"action": "follow", "streams": {f"{i:x}": 0 for i in range(2_000)}}))
            assert "too many streams" in await recv(ws)


async def test_deep_json_and_big_bodies_get_clear_answers(server):
    deep = "[" * 10_000 + "]" * 10_000
    async with session(server) as c:
        async with ws_connect(server, c, "todo") as ws:
            await ws.send('{"action": "todo.add", "x": ' + deep[:60_000] + "}")
            assert "nested more than" in await recv(ws)
            await ws.send(json.dumps({"action": "todo.add", "name": "after deep json"}))
            assert "after deep json" in await recv(ws)
        response = await c.post("/api/messages", content='{"role": ' + deep + "}",
                                headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and "nested" in response.json()["error"]
        big = json.dumps({"role": "q", "content": "x" * (3 << 20)})
        assert (await c.post("/api/messages", content=big,
                             headers={"Content-Type": "application/json"})).status_code == 413

        async def chunked():
            for _ in range(40):
                yield b" " * 100_000
        response = await c.post("/api/messages", content=chunked(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
    await still_serving(server)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
async def test_api_any_text_is_stored_or_refused_with_400_and_the_next_request_works(server, text):
    text = json.loads(json.dumps(text))  # what the server will see: JSON joins a surrogate pair
    async with session(server) as c:
        response = await c.post("/api/messages", content=json.dumps({"role": "q", "content": text}),
                                headers={"Content-Type": "application/json"}, timeout=ANSWER_S)
        if storable(text):
            assert response.status_code == 201
            mid = response.json()["id"]
            assert (await c.get(f"/api/messages/{mid}")).json()["content"] == text
        else:
            assert response.status_code == 400 and "cannot be stored" in response.json()["error"]
        assert (await c.post("/api/messages", json={"role": "q", "content": "next"}, timeout=ANSWER_S)
                ).status_code == 201


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
async def test_ws_any_text_gets_stored_or_a_notice_and_the_next_action_works(server, text):
    text = json.loads(json.dumps(text))  # what the server will see: JSON joins a surrogate pair
    async with session(server) as c:
        async with ws_connect(server, c, "todo") as ws:
            await ws.send(json.dumps({"action": "todo.add", "name": text + "!"}))
            answer = await recv(ws)
            for _ in range(5):  # the row (or the refusal), and the todo form's notice emptied, in either order
                if "todo-list" in answer or "cannot be stored" in answer:
                    break
                answer = await recv(ws)
            if storable(text):
                assert "todo-list" in answer
            else:  # refused, by the todo form
                assert 'id="todo-error"' in answer and "cannot be stored" in answer, answer
            await ws.send(json.dumps({"action": "todo.add", "name": "normal"}))
            while "normal" not in (answer := await recv(ws)):
                pass


async def test_health_answers_200_when_the_store_writes(server):
    async with httpx.AsyncClient() as client:
        response = await client.get(server.url + "/-/health", timeout=5)
    assert response.status_code == 200 and response.json() == {"ok": True}
