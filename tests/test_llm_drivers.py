"""Conformance of both LLM drivers against a real loopback HTTP server speaking each wire format."""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.llm import (
    COMPLETED,
    DELTA,
    ERROR,
    ERROR_REASONS,
    REASONING,
    RUN_CREATED,
    TOOL_CALL,
    HTTPDriver,
    LLMEvent,
    LLMUnavailable,
    OllamaDriver,
    OpenAIDriver,
    ThinkSplitter,
    make_driver,
)
from app.llm.base import LineSplitter
from tests.llm_server import SSE, Chunk, LLMTestServer, Raw, Reply, ToolCall

MODEL = "quanda-test"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
WIRES = ["ollama", "openai"]


@dataclass
class Run:
    events: list[LLMEvent]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if e.type == DELTA)

    @property
    def reasoning(self) -> str:
        return "".join(e.text for e in self.events if e.type == REASONING)

    @property
    def terminal(self) -> LLMEvent:
        return self.events[-1]

    @property
    def reason(self) -> str | None:
        return (self.terminal.data or {}).get("reason")

    @property
    def tool_calls(self) -> list[dict]:
        return [e.data for e in self.events if e.type == TOOL_CALL]


def driver_for(wire: str, url: str, **kwargs) -> HTTPDriver:
    if wire == "ollama":
        return OllamaDriver(url, **kwargs)
    return OpenAIDriver(url + "/v1", **kwargs)


async def collect(driver: HTTPDriver, model: str = MODEL, tools: list[dict] | None = None) -> Run:
    async with driver, aclosing(driver.stream_chat(MESSAGES, model, tools)) as events:
        run = Run([e async for e in events])
    assert run.events[0].type == RUN_CREATED
    assert [e.is_terminal for e in run.events].count(True) == 1
    assert run.terminal.is_terminal
    if run.terminal.type == ERROR:
        assert run.reason in ERROR_REASONS and run.terminal.text
    return run


@pytest.fixture
async def srv():
    async with LLMTestServer() as server:
        yield server


@pytest.fixture(params=WIRES)
def wire(request) -> str:
    return request.param


@pytest.fixture
def chat(srv, wire):
    """Run one chat against ``srv`` with the given script, over the wire under test."""

    async def run(reply: Reply, model: str = MODEL, tools: list[dict] | None = None, **kwargs) -> Run:
        srv.script = reply
        return await collect(driver_for(wire, srv.url, **kwargs), model, tools)

    return run


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_streams_answer_and_completes(chat, srv, wire):
    run = await chat(Reply(chunks=["Hel", "lo, ", "world"]))
    assert [e.type for e in run.events] == [RUN_CREATED, DELTA, DELTA, DELTA, COMPLETED]
    assert run.text == "Hello, world"
    assert run.terminal.data == {"done_reason": "stop"}
    [req] = srv.chat_requests
    assert req.path == ("/api/chat" if wire == "ollama" else "/v1/chat/completions")
    assert req.json == {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert srv.disconnects == 0


async def test_final_line_text_and_done_reason(chat):
    run = await chat(Reply(chunks=["partial "], final="end", done_reason="length"))
    assert run.text == "partial end"
    assert run.terminal.data == {"done_reason": "length"}


async def test_lines_split_across_writes(chat):
    run = await chat(Reply(chunks=["first line", " second", " third"], split=5))
    assert run.text == "first line second third"
    assert run.terminal.type == COMPLETED


async def test_utf8_split_across_writes(chat):
    text = ["éaé ✓", " 😀 日本語"]
    run = await chat(Reply(chunks=text, split=2))
    assert run.text == "".join(text)


def test_line_splitter_fed_byte_by_byte():
    data = "héllo ✓\r\n😀\nlast".encode()
    lines = LineSplitter()
    out = [line for i in range(len(data)) for line in lines.feed(data[i : i + 1])]
    assert out == ["héllo ✓", "😀"] and lines.tail() == "last"
    sse = LineSplitter(lone_cr=True)
    out = [line for part in (b"a\r", b"\nb\r", b"c\n\n") for line in sse.feed(part)]
    assert out == ["a", "b", "c", ""]


async def test_unicode_line_separators_inside_json_do_not_split_lines(chat):
    run = await chat(Reply(chunks=["a\u0085b", "c\u2028d\u2029e", "f\x1cg"]))
    assert run.text == "a\u0085bc\u2028d\u2029ef\x1cg"
    assert run.terminal.type == COMPLETED


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_field_is_kept_apart(chat, field):
    reply = Reply(
        chunks=[Chunk(thinking="Let me "), Chunk(thinking="think."), "The answer", " is 4."],
        sse=SSE(reasoning_field=field),
    )
    run = await chat(reply)
    assert run.reasoning == "Let me think."
    assert run.text == "The answer is 4."
    assert run.events[1].type == REASONING


async def test_think_tags_split_across_chunks(chat):
    run = await chat(Reply(chunks=["<thi", "nk>ponder", "ing<", "/th", "ink>", "\n\nAn", "swer <b>"]))
    assert run.reasoning == "pondering"
    assert run.text == "\n\nAnswer <b>"


async def test_tool_calls(chat, srv, wire):
    tools = [{"type": "function", "function": {"name": "add_todo", "parameters": {"type": "object"}}}]
    calls = [ToolCall("add_todo", {"name": "buy milk", "qty": 2}), ToolCall("list_todos", {})]
    run = await chat(Reply(chunks=["Sure.", Chunk(tool_calls=calls)], done_reason="tool_calls"), tools=tools)
    assert [(c["name"], c["arguments"]) for c in run.tool_calls] == [
        ("add_todo", {"name": "buy milk", "qty": 2}),
        ("list_todos", {}),
    ]
    assert run.text == "Sure."
    assert run.terminal.data == {"done_reason": "tool_calls"}
    assert srv.chat_requests[-1].json["tools"] == tools


async def test_openai_tool_call_fragments_merge_by_index(srv):
    long_args = {"name": "a longer todo name", "note": "x" * 40}
    calls = [ToolCall("first", long_args), ToolCall("second", {"id": 12})]
    srv.script = Reply(chunks=[Chunk(tool_calls=calls)], done_reason="tool_calls")
    run = await collect(OpenAIDriver(srv.openai_url))
    assert run.tool_calls == [
        {"name": "first", "arguments": long_args, "id": "call_0"},
        {"name": "second", "arguments": {"id": 12}, "id": "call_1"},
    ]


@pytest.mark.parametrize("status", [400, 500, 503])
async def test_error_before_stream_keeps_status_and_message(chat, status):
    run = await chat(Reply(chunks=["never"], status=status, error="out of memory"))
    assert run.reason == "http_status"
    assert run.terminal.data["status"] == status
    assert "out of memory" in run.terminal.text and f"HTTP {status}" in run.terminal.text
    assert run.text == ""


@pytest.mark.parametrize(
    "style", [SSE(), SSE(error_style="field", done_after_error=False)], ids=["vllm", "llamacpp"]
)
async def test_error_line_mid_stream(chat, style):
    reply = Reply(chunks=["partial ", "answer"], end="error", error="CUDA error: out of memory", sse=style)
    run = await chat(reply)
    assert run.text == "partial answer"
    assert run.reason == "stream_error"
    assert "CUDA error: out of memory" in run.terminal.text


@pytest.mark.parametrize("end", ["truncate", "drop"])
async def test_stream_ending_without_final_line_is_truncated(chat, end):
    run = await chat(Reply(chunks=["kept ", "text <thi"], end=end))
    assert run.text == "kept text <thi"
    assert run.reason == "truncated"
    assert "Retry" in run.terminal.text


async def test_non_json_line_is_malformed_and_stops(chat, wire):
    garbage = b"<html>502 Bad Gateway</html>\n" if wire == "ollama" else b"data: <html>502</html>\n\n"
    run = await chat(Reply(chunks=["ok", Raw(garbage), "never"]))
    assert run.text == "ok"
    assert run.reason == "malformed"
    assert "502" in run.terminal.text


async def test_openai_non_sse_body_is_malformed(srv):
    srv.script = Reply(chunks=[Raw(b"<html>\n<body>Not an API</body>\n")], end="truncate")
    run = await collect(OpenAIDriver(srv.openai_url))
    assert run.reason == "malformed" and "<html>" in run.terminal.text


async def test_stall_ends_run_and_closes_upstream(chat, srv):
    run = await chat(Reply(chunks=["before the stall"], end="stall"), stall_s=0.3)
    assert run.text == "before the stall"
    assert run.reason == "stall"
    assert "0.3 s" in run.terminal.text and "QUANDA_LLM_STALL_S" in run.terminal.text
    assert await srv.wait_disconnect()


async def test_missing_model_lists_available_models(chat, srv, wire):
    srv.models = ["llama3.2:latest", "qwen3:0.6b"]
    run = await chat(Reply(chunks=["never"]), model="nope:7b")
    assert run.reason == "model_missing"
    assert run.terminal.data["status"] == 404
    assert run.terminal.data["models"] == ["llama3.2:latest", "qwen3:0.6b"]
    assert "llama3.2:latest, qwen3:0.6b" in run.terminal.text
    assert ("ollama pull nope:7b" if wire == "ollama" else "QUANDA_LLM_MODEL") in run.terminal.text


async def test_unreachable_server(wire):
    url = closed_port_url()
    run = await collect(driver_for(wire, url))
    assert run.reason == "unreachable"
    assert url in run.terminal.text
    assert ("ollama serve" if wire == "ollama" else "QUANDA_LLM_URL") in run.terminal.text
    async with driver_for(wire, url) as driver:
        with pytest.raises(LLMUnavailable, match="not reachable"):
            await driver.list_models()


async def test_list_models(srv, wire):
    srv.models = ["a:latest", "b"]
    async with driver_for(wire, srv.url) as driver:
        assert await driver.list_models() == ["a:latest", "b"]


async def test_aclose_closes_upstream_request(srv, wire):
    srv.script = Reply(chunks=["first", "second"], end="stall")
    async with driver_for(wire, srv.url) as driver:
        events = driver.stream_chat(MESSAGES, MODEL)
        assert (await anext(events)).type == RUN_CREATED
        assert (await anext(events)).text == "first"
        await events.aclose()
        assert await srv.wait_disconnect()


async def test_cancelled_consumer_closes_upstream_request(srv, wire):
    srv.script = Reply(chunks=["first"], end="stall")
    first = asyncio.Event()

    async def consume(driver: HTTPDriver) -> None:
        async for event in driver.stream_chat(MESSAGES, MODEL):
            if event.type == DELTA:
                first.set()

    async with driver_for(wire, srv.url) as driver:
        task = asyncio.create_task(consume(driver))
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await srv.wait_disconnect()


@pytest.mark.parametrize(
    "style",
    [
        SSE(crlf=True),
        SSE(no_space=True),
        SSE(keepalive=True),
        SSE(multiline=True),
        SSE(crlf=True, no_space=True, keepalive=True, multiline=True),
    ],
    ids=["crlf", "no-space", "keep-alive", "multi-line", "all"],
)
async def test_openai_sse_variants(srv, style):
    split = 4 if style.crlf and style.multiline else None
    srv.script = Reply(chunks=[Chunk(thinking="hmm"), "a", "b"], sse=style, split=split)
    run = await collect(OpenAIDriver(srv.openai_url))
    assert (run.reasoning, run.text) == ("hmm", "ab")
    assert run.terminal.data == {"done_reason": "stop"}


async def test_openai_done_without_finish_reason_completes(srv):
    srv.script = Reply(chunks=["a", Raw(b"data: [DONE]\n\n")], end="truncate")
    run = await collect(OpenAIDriver(srv.openai_url))
    assert run.text == "a"
    assert run.terminal.data == {"done_reason": "stop"}


async def test_openai_api_key(srv):
    srv.api_key = "sekret"
    srv.script = Reply(chunks=["ok"])
    run = await collect(OpenAIDriver(srv.openai_url, api_key="sekret"))
    assert run.text == "ok"
    assert srv.chat_requests[-1].headers["authorization"] == "Bearer sekret"
    run = await collect(OpenAIDriver(srv.openai_url, api_key="wrong"))
    assert run.reason == "http_status" and run.terminal.data["status"] == 401
    assert "QUANDA_LLM_API_KEY" in run.terminal.text


async def test_scripted_reply_queue(srv, wire):
    srv.script = [Reply(chunks=["one"]), Reply(chunks=["two"])]
    assert (await collect(driver_for(wire, srv.url))).text == "one"
    assert (await collect(driver_for(wire, srv.url))).text == "two"
    assert (await collect(driver_for(wire, srv.url))).reason == "http_status"


async def test_server_in_background_thread(wire):
    with LLMTestServer(Reply(chunks=["from ", "a thread"])) as server:
        assert (await collect(driver_for(wire, server.url))).text == "from a thread"
        server.script = Reply(chunks=["x"], end="stall")
        run = await collect(driver_for(wire, server.url, stall_s=0.3))
        assert run.reason == "stall"
        assert await server.wait_disconnect()


def test_make_driver_picks_the_wire():
    ollama = make_driver("localhost", None, None, 5)
    assert isinstance(ollama, OllamaDriver) and ollama.base_url == "http://localhost:11434"
    assert make_driver("http://gpu:11434/", "", None, 5).base_url == "http://gpu:11434"
    openai = make_driver("localhost", "http://127.0.0.1:8080/v1", "k", 7)
    assert isinstance(openai, OpenAIDriver) and openai.base_url == "http://127.0.0.1:8080/v1"
    assert openai.stall_s == 7


def split_think(chunks: list[str]) -> tuple[str, str]:
    splitter = ThinkSplitter()
    events = [e for chunk in chunks for e in splitter.feed(chunk)] + splitter.flush()
    assert all(e.text for e in events)
    reasoning = "".join(e.text for e in events if e.type == REASONING)
    return reasoning, "".join(e.text for e in events if e.type == DELTA)


def test_think_splitter_example():
    assert split_think(["a<think>b</think>c<think>d"]) == ("bd", "ac")
    assert split_think(["<th", "ink", "><", "/think>x<thin"]) == ("", "x<thin")


PIECES = st.sampled_from(
    ["<think>", "</think>", "<", ">", "/", "<th", "ink>", "</", "think", "a", "é", "\n", "<<"]
)


@given(st.lists(PIECES, max_size=30).map("".join), st.lists(st.integers(min_value=0, max_value=200)))
def test_think_splitter_any_split_gives_same_result(text, cuts):
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    assert split_think(chunks) == split_think([text])
