"""QUANDA_LOG_FORMAT=json: a real server writes one JSON object per line, each HTTP request's lines carry its
request id (the client's X-Request-ID, or one made up and sent back), and an answer's job's lines carry the
job and answer ids and the id of the request that started it; the default stays human."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from quanda import logs
from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

TOKEN = "logs-token"


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["fine"])) as server:
        yield server


async def ask_and_wait(server: AppServer, request_id: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        asked = await api.post("/api/chat/ask", json={"text": "hello"}, headers={"X-Request-ID": request_id})
        assert asked.status_code == 201 and asked.headers["x-request-id"] == request_id
        made_up = (await api.get("/api/chat/status")).headers["x-request-id"]
        assert len(made_up) == 16 and made_up != request_id
        for _ in range(400):
            if (await api.get("/api/chat/conversation")).json()["entries"][-1].get("status") == "done":
                return asked.json()["answer_id"]
            await asyncio.sleep(0.05)  # the answer ends in the background: polled over HTTP
    raise AssertionError("the answer did not end within 20 s")


async def test_json_lines_carry_request_answer_and_job_ids(tmp_path, llm):
    server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test",
                       QUANDA_LOG_FORMAT="json").start()
    try:
        answer_id = await ask_and_wait(server, "trace-me-1")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access" and "/api/chat/ask" in line["message"]]
    assert access and access[0]["request_id"] == "trace-me-1"
    in_job = [line for line in lines if line.get("job_id") == answer_id]
    assert in_job, "no line was logged by the answer's job"
    assert all(line["answer_id"] == answer_id and line["request_id"] == "trace-me-1" for line in in_job)


async def test_the_default_stays_human(tmp_path, llm):
    server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test").start()
    try:
        await ask_and_wait(server, "human-1")
    finally:
        server.stop()
    text = server.log_text()
    assert "Quanda serving with" in text and not text.lstrip().startswith("{")


def test_formatter_and_bad_setting():
    token = logs.ANSWER_ID.set("a" * 24)
    try:
        record = logging.LogRecord("quanda.x", logging.WARNING, __file__, 1, "said %s", ("hi",), None)
        line = json.loads(logs.JSONFormatter().format(record))
    finally:
        logs.ANSWER_ID.reset(token)
    assert line["message"] == "said hi" and line["answer_id"] == "a" * 24 and "request_id" not in line
    with pytest.raises(ValueError):
        logs.setup("xml")
