"""The drivers against the kinds of real LLM servers, as the fixture plays them (tests/llm_kinds.py): a server
that cuts a running answer at any other request, windows and what each server does past them, token counts,
usage and speed. tests/test_real_llm.py does the same against a real model."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import httpx
import pytest

from quanda.llm import COMPLETED, DELTA, ERROR, LLMBusy, OllamaDriver, OpenAIDriver
from tests.llm_server import LLMTestServer, Raw, Reply

MODEL = "quanda-test"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
SLOW = Reply(chunks=[f"w{i} " for i in range(40)], delay=0.02)


async def run(driver, messages=MESSAGES, options=None, until=None):
    """The events of one answer; `until(events)` is awaited after the first delta (while it streams)."""
    events, poked = [], False
    async with aclosing(driver.stream_chat(messages, MODEL, None, options)) as stream:
        async for event in stream:
            events.append(event)
            if until is not None and not poked and event.type == DELTA:
                poked = True
                await until(events)
    return events


def text_of(events) -> str:
    return "".join(e.text for e in events if e.type == DELTA)


async def test_a_request_to_llama_cpp_python_cuts_its_running_answer():
    """What the app must never do: another request (here a bare GET /v1/models) ends the answer with [DONE]
    and no finish_reason. The driver says so: an answer cut, not a whole one."""
    async with LLMTestServer(SLOW, kind="llama-cpp-python") as srv, OpenAIDriver(srv.openai_url) as driver:
        async def poll(_events):
            async with httpx.AsyncClient() as client:
                await client.get(srv.openai_url + "/models")
        events = await run(driver, until=poll)
        assert events[-1].type == ERROR and events[-1].data["reason"] == "cut"
        assert srv.interrupted == 1 and len(text_of(events).split()) < 40


async def test_the_driver_sends_nothing_else_to_llama_cpp_python_while_it_answers():
    async with LLMTestServer(SLOW, kind="llama-cpp-python") as srv, OpenAIDriver(srv.openai_url) as driver:
        async def poll(_events):
            with pytest.raises(LLMBusy):
                await asyncio.create_task(driver.list_models())  # as a status check does, from another task
            assert driver.gate.busy
        events = await run(driver, until=poll)
        assert events[-1].type == COMPLETED and len(text_of(events).split()) == 40
        assert srv.interrupted == 0 and driver.kind == "llama-cpp-python"
        assert await driver.list_models() == [MODEL]  # once the answer is over, asking is fine again


async def test_answers_to_a_server_of_one_request_at_a_time_take_turns():
    async with LLMTestServer(SLOW, kind="llama-cpp-python") as srv, OpenAIDriver(srv.openai_url) as driver:
        first, second = await asyncio.gather(run(driver), run(driver))
        assert first[-1].type == COMPLETED and second[-1].type == COMPLETED
        assert srv.interrupted == 0


async def test_llama_server_serves_several_at_once_and_side_requests_go_out():
    async with LLMTestServer(SLOW, kind="llama.cpp") as srv, OpenAIDriver(srv.openai_url) as driver:
        async def poll(_events):
            assert await asyncio.create_task(driver.list_models()) == [MODEL]
        events = await run(driver, until=poll)
        assert events[-1].type == COMPLETED
        assert driver.kind == "llama.cpp" and driver.gate.exclusive is False
        assert await driver.context_window(MODEL) == 2048  # from /props: the window of one slot
        assert await driver.count_tokens(["hello, world", "hi"], MODEL) == [3, 1]  # its /tokenize


async def test_a_cut_teaches_an_unknown_server_to_be_asked_one_thing_at_a_time():
    async with LLMTestServer(SLOW, kind="llama-cpp-python") as srv, OpenAIDriver(srv.openai_url) as driver:
        driver._probed = True  # a server that could not be identified (taken to serve several)
        driver.gate.exclusive = False
        async def poll(_events):
            await asyncio.create_task(driver.list_models())
        events = await run(driver, until=poll)
        assert events[-1].data["reason"] == "cut" and driver.gate.exclusive is True
        events = await run(driver, until=poll_busy(driver))
        assert events[-1].type == COMPLETED


def poll_busy(driver):
    async def poll(_events):
        with pytest.raises(LLMBusy):
            await asyncio.create_task(driver.list_models())
    return poll


@pytest.mark.parametrize("kind", ["llama-cpp-python", "llama.cpp", "generic"])
async def test_a_request_longer_than_the_window_is_refused_and_the_window_learnt(kind):
    """llama-cpp-python: an empty 200 (the driver asks again, not streamed, to read the window); llama.cpp,
    OpenAI, vLLM: a 400 naming it."""
    long = [{"role": "user", "content": "word " * 3000}]
    async with LLMTestServer(Reply(chunks=["x"]), kind=kind) as srv, OpenAIDriver(srv.openai_url) as driver:
        srv.window = 2048
        events = await run(driver, long)
        assert events[-1].type == ERROR and events[-1].data["reason"] == "too_long"
        assert events[-1].data["window"] == 2048 and driver.windows[MODEL] == 2048
        assert "context window" in events[-1].text


async def test_usage_and_speed_from_each_kind():
    async with LLMTestServer(Reply(chunks=["a", "b"]), kind="llama.cpp") as srv, OpenAIDriver(srv.openai_url) as d:
        usage = (await run(d))[-1].data["usage"]
        assert usage["prompt_tokens"] == srv.prompt_tokens[-1] and usage["completion_tokens"] == 2
        assert usage["tokens_per_s"] > 0 and usage["prompt_ms"] > 0
    async with LLMTestServer(Reply(chunks=["a", "b"])) as srv:
        async with OpenAIDriver(srv.openai_url) as d:
            assert (await run(d))[-1].data["usage"] == {"prompt_tokens": srv.prompt_tokens[-1],
                                                         "completion_tokens": 2}
        async with OllamaDriver(srv.url) as d:
            usage = (await run(d))[-1].data["usage"]
            assert usage["prompt_tokens"] == srv.prompt_tokens[-1] and usage["tokens_per_s"] > 0
    async with LLMTestServer(Reply(chunks=["a"]), kind="llama-cpp-python") as srv, OpenAIDriver(srv.openai_url) as d:
        assert "usage" not in (await run(d))[-1].data  # it sends none, even when asked


async def test_ollama_window_and_options():
    async with LLMTestServer(Reply(chunks=["a"])) as srv, OllamaDriver(srv.url) as driver:
        srv.trained_context = 8192
        assert await driver.context_window(MODEL) == 8192
        await run(driver, options={"context": 4096, "temperature": 0.2, "max_tokens": 900})
        assert srv.chat_requests[-1].json["options"] == {"num_ctx": 4096, "temperature": 0.2, "num_predict": 900}
        await run(driver, [{"role": "user", "content": "word " * 3000}])  # no num_ctx: Ollama's small default
        assert srv.dropped_tokens > 0  # cut from the front, silently: why the app always sends num_ctx


async def test_openai_options_are_sent():
    async with LLMTestServer(Reply(chunks=["a"])) as srv, OpenAIDriver(srv.openai_url) as driver:
        await run(driver, options={"context": 4096, "temperature": 0.2, "max_tokens": 900})
        body = srv.chat_requests[-1].json
        assert (body["temperature"], body["max_tokens"], body["stream_options"]) == (0.2, 900, {"include_usage": True})


async def test_an_answer_whose_end_was_read_is_whole_even_if_the_connection_breaks_after():
    reply = Reply(chunks=["Done.", Raw(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')],
                  end="drop")
    async with LLMTestServer(reply) as srv, OpenAIDriver(srv.openai_url) as driver:
        events = await run(driver)
        assert events[-1].type == COMPLETED and text_of(events) == "Done."


async def test_parallel_setting_overrides_what_the_server_looks_like():
    async with LLMTestServer(SLOW, kind="llama.cpp") as srv:
        async with OpenAIDriver(srv.openai_url, parallel=1) as driver:
            events = await run(driver, until=poll_busy(driver))
            assert events[-1].type == COMPLETED
            assert not any(r.path == "/props" for r in srv.requests)  # told: nothing to find out
