"""Conformance of both LLM drivers against a real loopback HTTP server speaking each wire format."""

from __future__ import annotations

import asyncio
import json
import socket
from contextlib import aclosing
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quanda.llm import (
    COMPLETED,
    DELTA,
    ERROR,
    ERROR_REASONS,
    REASONING,
    RUN_CREATED,
    TOOL_CALL,
    TOOLS_REJECTED,
    HTTPDriver,
    LLMEvent,
    LLMUnavailable,
    OllamaDriver,
    OpenAIDriver,
    ThinkSplitter,
    call_data,
    make_driver,
    pick_default_model,
    tool_definition,
)
from quanda.llm.openai import SSEDecoder
from quanda.llm.tools import MAX_ARGUMENTS_CHARS
from quanda.llm.wire import LineSplitter
from tests.llm_server import SSE, Chunk, LLMTestServer, Raw, Reply, Rounds, ToolCall, tool_round

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

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]


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
    assert run.terminal.data["done_reason"] == "stop"
    [req] = srv.chat_requests
    assert req.path == ("/api/chat" if wire == "ollama" else "/v1/chat/completions")
    asked = {"stream_options": {"include_usage": True}} if wire == "openai" else {}
    assert req.json == {"model": MODEL, "messages": MESSAGES, "stream": True, **asked}
    assert srv.disconnects == 0


async def test_final_line_text_and_done_reason(chat):
    run = await chat(Reply(chunks=["partial "], final="end", done_reason="length"))
    assert run.text == "partial end"
    assert run.terminal.data["done_reason"] == "length"


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
    assert run.terminal.data["done_reason"] == "stop"


async def test_openai_done_without_finish_reason_is_a_cut(srv):
    """llama-cpp-python ends a running stream with [DONE] and no finish_reason when another request comes:
    the answer is cut, not whole (it was taken as whole before)."""
    srv.script = Reply(chunks=["a", Raw(b"data: [DONE]\n\n")], end="truncate")
    driver = OpenAIDriver(srv.openai_url)
    run = await collect(driver)
    assert run.text == "a"
    assert run.terminal.type == ERROR and run.reason == "cut"
    assert driver.gate.exclusive is True  # learnt: this server is asked one thing at a time from now on


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


# -- native tool calls ----------------------------------------------------------------------------

TOOLS = [
    tool_definition("todo_insert", "Add a todo.", {"name": (str, True, 200)}),
    tool_definition("todo_list", "List the todos.", {}),
    tool_definition("todo_toggle", "Toggle a todo.", {"id": (int, True, None)}),
]
INSERT = {"name": "buy milk"}


async def stream(driver: HTTPDriver, messages: list[dict], tools: list[dict] | None = TOOLS) -> Run:
    """One run on a driver the caller keeps open (its per-model memory matters)."""
    async with aclosing(driver.stream_chat(messages, MODEL, tools)) as events:
        run = Run([e async for e in events])
    assert run.events[0].type == RUN_CREATED and run.terminal.is_terminal
    assert [e.is_terminal for e in run.events].count(True) == 1
    return run


def ok_calls(run: Run) -> list[tuple[str, dict]]:
    return [(c["name"], c["arguments"]) for c in run.tool_calls if "arguments" in c]


@dataclass(frozen=True)
class AppField:  # the shape of the app's command Field, to show tool_definition takes it as is
    type: type
    required: bool = False
    max_len: int = 200
    min_value: int = 1


def test_tool_definition_from_fields():
    tool = tool_definition(
        "todo_update",
        "Change a todo.",
        {"id": (int, True, None), "name": AppField(str, max_len=80), "done": (bool, False, None)},
    )
    assert tool == {
        "type": "function",
        "function": {
            "name": "todo_update",
            "description": "Change a todo.",
            "parameters": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "name": {"type": "string", "minLength": 1, "maxLength": 80},
                    "done": {"type": "boolean"},
                },
                "required": ["id"],
                "additionalProperties": False,
            },
        },
    }
    assert tool_definition("todo_list", "List.", {})["function"]["parameters"]["required"] == []
    zero = tool_definition("x", "", {"n": (int, False, None, 0), "m": AppField(int, min_value=5)})
    assert zero["function"]["parameters"]["properties"] == {
        "n": {"type": "integer", "minimum": 0},
        "m": {"type": "integer", "minimum": 5},
    }
    json.dumps(tool)  # goes on the wire as is
    with pytest.raises(ValueError, match="tool name"):
        tool_definition("todo insert", "", {})
    with pytest.raises(ValueError, match="not one of"):
        tool_definition("t", "", {"x": (list, True, None)})


async def test_tool_calls_with_text_before_and_after(chat, srv, wire):
    calls = [ToolCall("todo_insert", INSERT, id="call_a"), ToolCall("todo_list", {}, id="call_b")]
    reply = Reply(chunks=["Sure.", Chunk(tool_calls=calls), " Done."])
    run = await chat(reply, tools=TOOLS)
    assert run.tool_calls == [
        {"position": 0, "id": "call_a", "name": "todo_insert", "arguments": INSERT},
        {"position": 1, "id": "call_b", "name": "todo_list", "arguments": {}},
    ]
    assert run.text == "Sure. Done."
    assert run.terminal.type == COMPLETED
    assert run.terminal.data["done_reason"] == "tool_calls" if wire == "openai" else "stop"
    assert srv.chat_requests[-1].json["tools"] == TOOLS


async def test_tool_calls_without_ids_get_positional_ids(chat):
    calls = [ToolCall("todo_list"), ToolCall("todo_insert", INSERT)]
    run = await chat(Reply(chunks=[Chunk(tool_calls=calls)], sse=SSE(tool_ids=False)), tools=TOOLS)
    assert [(c["position"], c["id"]) for c in run.tool_calls] == [(0, "call_0"), (1, "call_1")]
    assert ok_calls(run) == [("todo_list", {}), ("todo_insert", INSERT)]


async def test_ollama_several_calls_in_one_message_with_content(srv):
    calls = [ToolCall("todo_insert", {"name": f"n{i}"}) for i in range(3)]
    srv.script = Reply(
        chunks=[Chunk(content="On it: ", tool_calls=calls), Chunk(tool_calls=[ToolCall("todo_list")])]
    )
    run = await collect(OllamaDriver(srv.url), tools=TOOLS)
    assert run.text == "On it: "
    assert [c["position"] for c in run.tool_calls] == [0, 1, 2, 3]
    assert ok_calls(run) == [*(("todo_insert", {"name": f"n{i}"}) for i in range(3)), ("todo_list", {})]
    assert run.types.index(DELTA) < run.types.index(TOOL_CALL)


LONG_ARGS = {"name": "a longer todo name — with “quotes”, é and 😀", "note": "x" * 40, "n": [1, {"k": None}]}


@pytest.mark.parametrize("interleave", [True, False], ids=["interleaved", "sequential"])
@pytest.mark.parametrize("fragment", [1, 2, 3, 7, None], ids=lambda f: f"frag{f}")
async def test_openai_arguments_split_anywhere(srv, fragment, interleave):
    tools = [tool_definition(n, "", {}) for n in ("first", "second", "third")]
    calls = [ToolCall("first", LONG_ARGS), ToolCall("second", {"id": 12}), ToolCall("third", {})]
    style = SSE(tool_fragment=fragment, tool_interleave=interleave)
    srv.script = Reply(chunks=["Before.", Chunk(tool_calls=calls)], sse=style)
    run = await collect(OpenAIDriver(srv.openai_url), tools=tools)
    assert run.tool_calls == [
        {"position": 0, "id": "call_0", "name": "first", "arguments": LONG_ARGS},
        {"position": 1, "id": "call_1", "name": "second", "arguments": {"id": 12}},
        {"position": 2, "id": "call_2", "name": "third", "arguments": {}},
    ]
    assert run.text == "Before." and run.terminal.data["done_reason"] == "tool_calls"


async def test_openai_fragments_split_across_network_writes(srv):
    args = {"name": "é😀 milk"}
    chunks = [Chunk(tool_calls=[ToolCall("todo_insert", args)])]
    srv.script = Reply(chunks=chunks, sse=SSE(tool_fragment=4), split=7)
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert ok_calls(run) == [("todo_insert", args)]


async def test_openai_calls_all_numbered_zero_are_told_apart_by_id(srv):
    calls = [ToolCall("todo_insert", INSERT, id="a"), ToolCall("todo_insert", {"name": "eggs"}, id="b")]
    srv.script = Reply(chunks=[Chunk(tool_calls=calls)], sse=SSE(tool_index_zero=True, tool_interleave=False))
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert [(c["id"], c["arguments"]) for c in run.tool_calls] == [("a", INSERT), ("b", {"name": "eggs"})]


async def test_openai_arguments_sent_as_an_object(srv):
    fragments = [
        {"index": 0, "id": "a", "function": {"name": "todo_insert", "arguments": INSERT}},
        {"index": 0, "function": {"arguments": "{}"}},  # a stray piece after the whole object
        {"index": 1, "id": "b", "function": {"name": "todo_toggle", "arguments": {"id": 3}}},
    ]
    chunks = [{"choices": [{"index": 0, "delta": {"tool_calls": [f]}}]} for f in fragments]
    raw = [Raw(b"data: " + json.dumps(chunk).encode() + b"\n\n") for chunk in chunks]
    srv.script = Reply(chunks=raw)
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert ok_calls(run) == [("todo_insert", INSERT), ("todo_toggle", {"id": 3})]


async def test_openai_calls_in_separate_chunks_continue_the_numbering(srv):
    chunks = [
        Chunk(tool_calls=[ToolCall("todo_list")]),
        "text between",
        Chunk(tool_calls=[ToolCall("todo_insert", INSERT)]),
    ]
    srv.script = Reply(chunks=chunks)
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert ok_calls(run) == [("todo_list", {}), ("todo_insert", INSERT)]
    assert run.text == "text between"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ('{"name": "milk"', "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"milk"', "must be a JSON object, not a string"),
        ("42", "not a number"),
    ],
)
async def test_malformed_arguments_refuse_that_call_only(chat, raw, why):
    why = "must be a JSON object, not a number" if raw == "42" else why
    calls = [ToolCall("todo_insert", INSERT), ToolCall("todo_insert", raw), ToolCall("todo_list")]
    run = await chat(Reply(chunks=["Adding.", Chunk(tool_calls=calls), " More text."]), tools=TOOLS)
    assert run.terminal.type == COMPLETED and run.text == "Adding. More text."
    good, bad, last = run.tool_calls
    assert good["arguments"] == INSERT and last["arguments"] == {}
    assert "arguments" not in bad and why in bad["error"]
    assert bad["raw_arguments"] == raw and bad["name"] == "todo_insert" and bad["position"] == 1


async def test_unknown_tool_is_refused_with_the_known_names(chat):
    calls = [ToolCall("rm_rf", {"path": "/"}), ToolCall("todo_list")]
    run = await chat(Reply(chunks=[Chunk(tool_calls=calls)]), tools=TOOLS)
    refused, fine = run.tool_calls
    assert refused["error"] == "unknown tool 'rm_rf'; the tools are todo_insert, todo_list, todo_toggle"
    assert refused["raw_arguments"] == '{"path": "/"}' and "arguments" not in refused
    assert fine["arguments"] == {} and run.terminal.type == COMPLETED


async def test_call_when_no_tools_were_offered_is_refused(chat):
    run = await chat(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_list")])]))
    [call] = run.tool_calls
    assert call["error"] == "unknown tool 'todo_list': no tools were offered"


async def test_call_without_a_name_is_refused(srv):
    srv.script = Reply(chunks=[Raw(b'{"message": {"role": "assistant", "content": "", "tool_calls": '
                                   b'[{"function": {"arguments": {}}}, "junk"]}, "done": false}\n')],
                       final="ok")
    run = await collect(OllamaDriver(srv.url), tools=TOOLS)
    assert [c["error"] for c in run.tool_calls] == ["the tool call has no tool name"] * 2
    assert run.text == "ok" and run.terminal.type == COMPLETED


async def test_openai_too_long_arguments_are_refused(srv):
    calls = [ToolCall("todo_insert", {"name": "x" * (MAX_ARGUMENTS_CHARS + 10)})]
    srv.script = Reply(chunks=[Chunk(tool_calls=calls)], sse=SSE(tool_fragment=8192))
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    [call] = run.tool_calls
    assert "too long" in call["error"] and len(call["raw_arguments"]) <= 500


async def test_openai_done_without_finish_reason_gives_no_calls(srv):
    chunks = [Chunk(tool_calls=[ToolCall("todo_list")]), Raw(b"data: [DONE]\n\n")]
    srv.script = Reply(chunks=chunks, end="truncate")
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert run.tool_calls == [] and run.reason == "cut"


@pytest.mark.parametrize("end", ["truncate", "drop", "error"])
async def test_openai_calls_of_a_broken_stream_are_not_emitted(srv, end):
    srv.script = Reply(chunks=["Partial", Chunk(tool_calls=[ToolCall("todo_insert", INSERT)])], end=end)
    run = await collect(OpenAIDriver(srv.openai_url), tools=TOOLS)
    assert run.terminal.type == ERROR and run.tool_calls == []
    assert run.text == "Partial"


async def test_ollama_error_after_a_call_ends_the_run_with_error(srv):
    # Ollama gives whole calls as they come: the app must act on them only after COMPLETED
    srv.script = Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", INSERT)])], end="error")
    run = await collect(OllamaDriver(srv.url), tools=TOOLS)
    assert len(run.tool_calls) == 1 and run.reason == "stream_error"


@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.text(max_size=8) | st.integers(), max_size=4),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=20),
    st.randoms(use_true_random=False),
)
def test_openai_decoder_merges_any_split_and_interleaving(arguments, sizes, rnd):
    decoder = SSEDecoder(lambda reason, detail: pytest.fail(f"{reason}: {detail}"), frozenset({"f"}))
    queues = []
    for index, args in enumerate(arguments):
        text, pieces, at = json.dumps(args, ensure_ascii=False), [], 0
        while at < len(text):
            size = sizes[(index + len(pieces)) % len(sizes)]
            pieces.append(text[at : at + size])
            at += size
        function = {"name": "f", "arguments": ""}
        opening = {"index": index, "id": f"id{index}", "type": "function", "function": function}
        queues.append([opening, *({"index": index, "function": {"arguments": p}} for p in pieces)])
    fragments = []
    while any(queues):
        queue = rnd.choice([q for q in queues if q])
        fragments.append(queue.pop(0))
    events = []
    for fragment in fragments:
        chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": None}]}
        events += decoder.feed("data: " + json.dumps(chunk)) + decoder.feed("")
    events += decoder.feed('data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}')
    events += decoder.feed("")
    events += decoder.feed("data: [DONE]") + decoder.feed("")
    assert [e.data["arguments"] for e in events if e.type == TOOL_CALL] == arguments
    assert [e.data["id"] for e in events if e.type == TOOL_CALL] == [f"id{i}" for i in range(len(arguments))]
    assert events[-1].type == COMPLETED


async def test_tool_round_trip(srv, wire):
    """Round 1: calls (one refused); the app sends the results back; round 2: the answer goes on."""
    calls = [ToolCall("todo_insert", INSERT, id="c1"), ToolCall("nope", {}, id="c2")]
    srv.script = Rounds(Reply(chunks=["Let me add it.", Chunk(thinking="hm"), Chunk(tool_calls=calls)]),
                        Reply(chunks=["Added ", "buy milk."]))
    async with driver_for(wire, srv.url) as driver:
        messages = list(MESSAGES)
        first = await stream(driver, messages)
        assert first.text == "Let me add it." and len(first.tool_calls) == 2
        results = ["✓ added todo 'buy milk' (id 1)", f"✗ tool call refused: {first.tool_calls[1]['error']}"]
        messages += driver.tool_messages(first.tool_calls, results, first.text, first.reasoning)
        second = await stream(driver, messages)
    assert second.text == "Added buy milk." and second.tool_calls == []
    sent = srv.chat_requests[-1].json["messages"]
    assert sent[:2] == MESSAGES and tool_round(srv.chat_requests[-1].json) == 1
    assistant, result1, result2 = sent[2:]
    if wire == "openai":
        assert assistant == {
            "role": "assistant",
            "content": "Let me add it.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "todo_insert", "arguments": '{"name": "buy milk"}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "nope", "arguments": "{}"}},
            ],
        }
        assert result1 == {"role": "tool", "tool_call_id": "c1", "content": results[0]}
        assert result2 == {"role": "tool", "tool_call_id": "c2", "content": results[1]}
    else:
        assert assistant == {
            "role": "assistant",
            "content": "Let me add it.",
            "thinking": "hm",
            "tool_calls": [
                {"id": "c1", "function": {"index": 0, "name": "todo_insert", "arguments": INSERT}},
                {"id": "c2", "function": {"index": 1, "name": "nope", "arguments": {}}},
            ],
        }
        assert result1 == {
            "role": "tool",
            "content": results[0],
            "tool_name": "todo_insert",
            "tool_call_id": "c1",
        }
        assert result2["tool_name"] == "nope"


async def test_tool_messages_for_a_call_with_malformed_arguments(srv, wire):
    call_reply = Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", "{oops")])])
    srv.script = Rounds(call_reply, Reply(chunks=["ok"]))
    async with driver_for(wire, srv.url) as driver:
        first = await stream(driver, list(MESSAGES))
        [call] = first.tool_calls
        messages = [*MESSAGES, *driver.tool_messages([call], ["✗ refused: " + call["error"]])]
        assert (await stream(driver, messages)).text == "ok"  # the server took the round
    assistant = srv.chat_requests[-1].json["messages"][2]
    assert assistant["content"] in (None, "")
    args = assistant["tool_calls"][0]["function"]["arguments"]
    assert args == ("{}" if wire == "openai" else {})


async def answer_with_tools(driver, messages, tools, execute, max_rounds=4) -> tuple[str, list, LLMEvent]:
    """The round loop the app runs (the shape recommended to it): stream a turn; act on its calls only
    once it COMPLETED; send the results back; go on until a turn makes no call or the rounds run out
    (the last round is asked without tools, so it has to answer in words)."""
    text, executed = "", []
    for round_no in range(max_rounds):
        offered = tools if round_no < max_rounds - 1 else None
        turn_text, reasoning, calls, terminal = "", "", [], None
        async with aclosing(driver.stream_chat(messages, MODEL, offered)) as events:
            async for event in events:
                if event.type == DELTA:
                    turn_text += event.text
                elif event.type == REASONING:
                    reasoning += event.text
                elif event.type == TOOL_CALL:
                    calls.append(event.data)
                elif event.type == TOOLS_REJECTED:
                    tools = None  # the retry without tools is already under way
                elif event.is_terminal:
                    terminal = event
        text += turn_text
        if terminal.type != COMPLETED or not calls or offered is None:
            return text, executed, terminal  # (calls in a turn offered no tools were all refused)
        results = []
        for call in calls:  # the app: claim (answer, round, position) exactly once, validate, run
            if "error" in call:
                results.append(f"refused: {call['error']}")
            else:
                executed.append((round_no, call["position"], call["name"], call["arguments"]))
                results.append(await execute(call["name"], call["arguments"]))
        messages = [*messages, *driver.tool_messages(calls, results, turn_text, reasoning)]
    raise AssertionError("unreachable: the last round offers no tools, so it returns")


async def test_reference_tool_round_loop(srv, wire):
    todos: list[str] = []

    async def execute(name: str, arguments: dict) -> str:
        if name == "todo_insert":
            todos.append(arguments["name"])
            return f"added todo {arguments['name']!r} (id {len(todos)})"
        return ", ".join(todos) or "no todos"

    srv.script = Rounds(
        Reply(chunks=["Adding. ", Chunk(tool_calls=[ToolCall("todo_insert", INSERT), ToolCall("bad", {})])]),
        Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_list")])]),
        Reply(chunks=["You have: buy milk."]),
    )
    async with driver_for(wire, srv.url) as driver:
        text, executed, terminal = await answer_with_tools(driver, list(MESSAGES), TOOLS, execute)
    assert terminal.type == COMPLETED and text == "Adding. You have: buy milk."
    assert executed == [(0, 0, "todo_insert", INSERT), (1, 0, "todo_list", {})]
    assert todos == ["buy milk"] and len(srv.chat_requests) == 3
    last = srv.chat_requests[-1].json["messages"]
    assert [m["role"] for m in last[2:]] == ["assistant", "tool", "tool", "assistant", "tool"]
    assert "refused: unknown tool 'bad'" in last[4]["content"] and last[-1]["content"] == "buy milk"


async def test_reference_loop_stops_offering_tools_after_the_last_round(srv):
    srv.script = Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_list")])])  # calls, whatever it is offered

    async def execute(name: str, arguments: dict) -> str:
        return "nothing"

    async with OpenAIDriver(srv.openai_url) as driver:
        _, executed, terminal = await answer_with_tools(driver, list(MESSAGES), TOOLS, execute, max_rounds=3)
    assert len(executed) == 2 and "tools" not in srv.chat_requests[-1].json
    assert terminal.type == COMPLETED and len(srv.chat_requests) == 3


def test_tool_message_helpers_check_their_input():
    driver = OpenAIDriver("http://127.0.0.1:9/v1")
    call = LLMEvent(TOOL_CALL, data={"position": 0, "id": "x", "name": "todo_list", "arguments": {}})
    assert call_data(call) is call.data
    result = driver.tool_result_message(call, "3 todos")
    assert result == {"role": "tool", "tool_call_id": "x", "content": "3 todos"}
    with pytest.raises(ValueError, match="1 tool calls but 2 results"):
        driver.tool_messages([call], ["a", "b"])
    with pytest.raises(TypeError, match="not a tool call"):
        driver.tool_result_message(LLMEvent(DELTA, "hi"), "x")


@pytest.mark.parametrize(
    ("messages", "why"),
    [
        ([{"role": "tool", "tool_call_id": "zz", "content": "x"}], "preceding message with 'tool_calls'"),
        ([{"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function",
           "function": {"name": "f", "arguments": "{}"}}]}, {"role": "user", "content": "hi"}], "missing: a"),
        ([{"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function",
           "function": {"name": "f", "arguments": {}}}]}], "must be a string"),
    ],
)
async def test_test_server_refuses_badly_formed_openai_tool_rounds(srv, messages, why):
    srv.script = Reply(chunks=["never"])
    async with OpenAIDriver(srv.openai_url) as driver:
        run = await stream(driver, [*MESSAGES, *messages], tools=None)
    assert run.reason == "http_status" and why in run.terminal.text


async def test_test_server_refuses_ollama_arguments_as_text(srv):
    bad = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}
    async with OllamaDriver(srv.url) as driver:
        run = await stream(driver, [*MESSAGES, bad], tools=None)
    assert run.reason == "http_status" and "cannot unmarshal str" in run.terminal.text


def test_rounds_pick_the_reply_by_tool_round():
    a, b = Reply(chunks=["a"]), Reply(chunks=["b"])
    rounds = Rounds(a, b)
    call = {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}
    result = {"role": "tool", "content": "x"}

    def pick(messages):
        return rounds(type("Req", (), {"json": {"messages": messages}})())

    assert pick(MESSAGES) is a
    assert pick([*MESSAGES, call, result]) is b
    assert pick([*MESSAGES, call, result, call, result]) is b  # the last reply repeats
    assert pick([*MESSAGES, call, result, {"role": "user", "content": "again"}]) is a


# -- tools refused by the server, and capability detection ----------------------------------------


async def test_tools_rejected_then_answered_without_them(srv, wire):
    srv.reject_tools = 400
    srv.script = Reply(chunks=["Plain ", "answer."])
    async with driver_for(wire, srv.url) as driver:
        run = await stream(driver, list(MESSAGES))
        assert run.types == [RUN_CREATED, TOOLS_REJECTED, DELTA, DELTA, COMPLETED]
        assert run.text == "Plain answer."
        rejected = run.events[1]
        assert rejected.data == {"status": 400, "detail": "tools param requires --jinja flag", "model": MODEL}
        assert "HTTP 400" in rejected.text and "without them" in rejected.text
        if wire == "openai":
            assert "--jinja" in rejected.text and "ollama" not in rejected.text.lower()
        else:
            assert "ollama show" in rejected.text
        first, second = srv.chat_requests
        assert first.json["tools"] == TOOLS and "tools" not in second.json
        assert second.json["messages"] == MESSAGES
        assert await driver.supports_tools(MODEL) is False  # remembered (Ollama: without asking /api/show)
        assert not any(r.path == "/api/show" for r in srv.requests)
        # told to send tools again, the driver does (and falls back again)
        again = await stream(driver, list(MESSAGES))
        assert again.types[1] == TOOLS_REJECTED and again.text == "Plain answer."


async def test_closing_on_tools_rejected_sends_no_retry(srv, wire):
    srv.reject_tools = 400
    async with driver_for(wire, srv.url) as driver:
        async with aclosing(driver.stream_chat(MESSAGES, MODEL, TOOLS)) as events:
            async for event in events:
                if event.type == TOOLS_REJECTED:
                    break
    assert len(srv.chat_requests) == 1


@pytest.mark.parametrize("status", [422, 501])
async def test_other_refusals_of_tools_are_retried(srv, status):
    srv.reject_tools = status
    srv.reject_tools_message = "Tool calling is not supported for this model"
    srv.script = Reply(chunks=["ok"])
    async with OpenAIDriver(srv.openai_url) as driver:
        run = await stream(driver, list(MESSAGES))
        assert run.types[1] == TOOLS_REJECTED and run.text == "ok"
        assert await driver.supports_tools(MODEL) is False


async def test_a_4xx_not_about_tools_is_retried_but_not_remembered(srv):
    srv.script = Reply(status=400, error="the request exceeds the available context size")
    async with OpenAIDriver(srv.openai_url) as driver:
        run = await stream(driver, list(MESSAGES))
        assert run.types == [RUN_CREATED, TOOLS_REJECTED, ERROR]
        assert run.reason == "http_status" and "context size" in run.terminal.text
        assert await driver.supports_tools(MODEL) is None
        srv.script = [Reply(status=400, error="something odd"), Reply(chunks=["fine"])]
        run = await stream(driver, list(MESSAGES))
        assert run.text == "fine" and await driver.supports_tools(MODEL) is None  # not a tools message


@pytest.mark.parametrize("case", ["missing_model", "server_error"])
async def test_failures_that_are_not_about_tools_are_not_retried(srv, wire, case):
    model = "nope" if case == "missing_model" else MODEL
    if case == "server_error":
        srv.script = Reply(status=500, error="CUDA out of memory")
    async with driver_for(wire, srv.url) as driver:
        async with aclosing(driver.stream_chat(MESSAGES, model, TOOLS)) as events:
            run = Run([e async for e in events])
    assert TOOLS_REJECTED not in run.types and run.terminal.type == ERROR
    assert run.reason == ("model_missing" if case == "missing_model" else "http_status")
    assert len(srv.chat_requests) == 1


async def test_a_wrong_api_key_with_tools_is_not_retried(srv):
    srv.api_key = "right"
    async with OpenAIDriver(srv.openai_url, api_key="wrong") as driver:
        run = await stream(driver, list(MESSAGES))
    assert run.types == [RUN_CREATED, ERROR] and run.terminal.data["status"] == 401
    assert len(srv.chat_requests) == 1


async def test_openai_tool_support_is_learnt_from_answers(srv):
    srv.script = Reply(chunks=["ok"])
    async with OpenAIDriver(srv.openai_url) as driver:
        assert await driver.supports_tools(MODEL) is None  # unknown up front, nothing asked
        assert srv.requests == []
        await stream(driver, list(MESSAGES), tools=None)
        assert await driver.supports_tools(MODEL) is None  # a request without tools says nothing
        await stream(driver, list(MESSAGES))
        assert await driver.supports_tools(MODEL) is True


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [(["completion", "tools"], True), (["completion", "vision"], False), (None, None)],
    ids=["tools", "no-tools", "old-ollama"],
)
async def test_ollama_supports_tools_from_api_show(srv, capabilities, expected):
    srv.capabilities[MODEL] = capabilities
    async with OllamaDriver(srv.url) as driver:
        assert await driver.supports_tools(MODEL) is expected
        assert await driver.supports_tools(MODEL) is expected
    shows = [r for r in srv.requests if r.path == "/api/show"]
    assert shows[0].method == "POST" and shows[0].json == {"model": MODEL}
    assert len(shows) == 1  # what /api/show says is remembered (its capabilities, its context length)


async def test_ollama_supports_tools_unknown_model_or_server(srv):
    async with OllamaDriver(srv.url) as driver:
        assert await driver.supports_tools("nope:7b") is None
    async with OllamaDriver(closed_port_url()) as driver:
        assert await driver.supports_tools(MODEL) is None


# -- models and hints (issue 13) ------------------------------------------------------------------


def test_pick_default_model():
    assert pick_default_model("  llama3.2 ", ["a"]) == "llama3.2"
    assert pick_default_model("", ["only"]) == "only"
    assert pick_default_model("", ["first", "second"]) == "first"
    assert pick_default_model("", []) == ""


async def test_default_model(srv, wire):
    srv.models = ["served-model", "other"]
    async with driver_for(wire, srv.url) as driver:
        assert await driver.default_model("configured") == "configured"
        assert srv.requests == []  # a configured model needs no request
        assert await driver.default_model("") == "served-model"
        srv.models = []
        assert await driver.default_model("") == ""
    async with driver_for(wire, closed_port_url()) as driver:
        with pytest.raises(LLMUnavailable, match="not reachable"):
            await driver.default_model("")


def test_model_status_and_hints_speak_the_drivers_language():
    ollama, openai = OllamaDriver("localhost"), OpenAIDriver("http://127.0.0.1:8080/v1")
    assert ollama.model_status("llama3.2", ["llama3.2:latest"]) == (True, "LLM ready: llama3.2")
    assert openai.model_status("m", ["m"]) == (True, "LLM ready: m")
    assert not openai.has_model("m", ["m:latest"])

    ok, text = ollama.model_status("qwen3", ["llama3.2:latest"])
    assert not ok and "pick one of llama3.2:latest" in text and "`ollama pull qwen3`" in text
    ok, text = ollama.model_status("qwen3", [])
    assert not ok and "ollama pull qwen3" in text
    assert "ollama serve" in ollama.unreachable_hint() and "ollama pull" in ollama.missing_model_hint("x")

    for model, models in [("", ["only-model"]), ("wrong", ["a", "b"]), ("", []), ("x", [])]:
        ok, text = openai.model_status(model, models)
        assert not ok and "ollama" not in text.lower(), text
    ok, text = openai.model_status("wrong", ["a", "b"])
    assert "QUANDA_LLM_MODEL" in text and "a, b" in text
    for hint in (openai.unreachable_hint(), openai.unreachable_hint("m"), openai.missing_model_hint("m")):
        assert "ollama pull" not in hint.lower() and "ollama serve" not in hint.lower()


async def test_status_line_flow_with_one_served_model_and_none_configured(srv):
    """Issue 13: QUANDA_LLM_URL set, QUANDA_LLM_MODEL empty, one model served → ready, green."""
    srv.models = ["the-one"]
    async with OpenAIDriver(srv.openai_url) as driver:
        models = await driver.list_models()
        model = pick_default_model("", models)
        assert driver.model_status(model, models) == (True, "LLM ready: the-one")


async def test_unreachable_openai_listing_never_mentions_ollama():
    async with OpenAIDriver(closed_port_url() + "/v1") as driver:
        with pytest.raises(LLMUnavailable) as info:
            await driver.list_models()
    assert "ollama" not in str(info.value).lower()
