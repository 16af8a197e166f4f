"""POST /api/ag-ui read with AG-UI's Python types (`ag-ui-protocol`): every event validates as the protocol's
`Event`; a runId POSTed again never asks again (its events, from the start or after Last-Event-ID); refusals
and failures are RUN_ERROR with a code and no internal text; bad bodies, no access and unknown runs get
clear HTTP errors; `onDisconnect: continue` keeps an answer going without its client."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from ag_ui.core import Event, EventType, RunAgentInput, UserMessage
from pydantic import TypeAdapter

from quanda.chat.agui_events import Cursor
from tests.llm_server import Reply

TOKEN = "agui-token"
# the module's app server (tests/conftest.py)
SERVER_ENV = {"QUANDA_API_TOKEN": TOKEN, "QUANDA_AGUI_STOP_GRACE_S": "0.3"}
WAIT_S = 20
EVENTS = TypeAdapter(Event)



@pytest.fixture
async def api(server):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=WAIT_S) as client:
        yield client


def run_input(thread: str, run: str, text: str, **extra) -> dict:
    """A RunAgentInput as the protocol's own type serialises it (camelCase on the wire)."""
    value = RunAgentInput(thread_id=thread, run_id=run, messages=[UserMessage(id=f"u-{run}", content=text)],
                          tools=[], context=[], state={}, forwarded_props=extra.pop("forwarded_props", {}))
    return {**value.model_dump(mode="json", by_alias=True), **extra}


async def read_run(api, body: dict, headers: dict | None = None, until: int | None = None) -> list[tuple]:
    """(event id or None, the event as AG-UI's type) for each event of a response (the first `until` only)."""
    found: list[tuple] = []

    async def read() -> None:
        async with api.stream("POST", "/api/ag-ui", json=body, headers=headers or {}) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    found.append((event_id, EVENTS.validate_json(line[6:])))
                    event_id = None
                    if until is not None and len(found) >= until:
                        return
    await asyncio.wait_for(read(), WAIT_S)
    return found


def kinds(events: list[tuple]) -> list[str]:
    return [event.type.value for _id, event in events]


def text(events: list[tuple]) -> str:
    return "".join(e.delta for _id, e in events if e.type == EventType.TEXT_MESSAGE_CONTENT)


def applied(events: list[tuple]) -> dict[str, str]:
    """Each message's text as a client applying the events holds it (as `@ag-ui/client` does: a snapshot
    replaces the messages, a start keeps a message it has, a delta appends to it)."""
    held: dict[str, str] = {}
    for _id, e in events:
        if e.type == EventType.MESSAGES_SNAPSHOT:
            held = {m.id: m.content if isinstance(m.content, str) else "" for m in e.messages}
        elif e.type == EventType.TEXT_MESSAGE_START:
            held.setdefault(e.message_id, "")
        elif e.type == EventType.TEXT_MESSAGE_CONTENT:
            held[e.message_id] += e.delta
    return held


async def test_every_event_is_the_protocols_and_a_run_is_asked_once(api, llm):
    llm.script = Reply(chunks=["One ", "two ", "three."], delay=0.01)
    asked = len(llm.chat_requests)
    body = run_input("t-once", "r-once", "Count")
    events = await read_run(api, body)
    assert kinds(events)[0] == "RUN_STARTED" and kinds(events)[-1] == "RUN_FINISHED"
    assert events[0][1].thread_id == "t-once" and events[-1][1].run_id == "r-once"
    assert text(events) == "One two three."
    again = await read_run(api, body)  # the same run again: its events, no second question
    assert text(again) == "One two three." and len(llm.chat_requests) == asked + 1
    answer_id = next(e.message_id for _i, e in events if e.type == EventType.TEXT_MESSAGE_START)
    # the answer was whole when this response began: its snapshot leaves it to the events (once, not twice)
    assert applied(again)[answer_id] == applied(events)[answer_id] == "One two three."
    ids = [event_id for event_id, _e in events if event_id]
    middle = ids[len(ids) // 2]
    after = await read_run(api, body, {"Last-Event-ID": middle})
    assert "MESSAGES_SNAPSHOT" not in kinds(after) and kinds(after)[-1] == "RUN_FINISHED"
    sent_after = [e.delta for i, e in events[[x[0] for x in events].index(middle) + 1:]
                  if e.type == EventType.TEXT_MESSAGE_CONTENT]
    assert text(after) == "".join(sent_after)  # exactly what followed that id
    snapshot = next(e for _i, e in events if e.type == EventType.MESSAGES_SNAPSHOT)
    assert snapshot.messages[-1].role == "user" and answer_id not in {m.id for m in snapshot.messages}


async def test_what_tabs_do_shows_in_the_thread(api, llm):
    llm.script = Reply(chunks=["Noted."])
    await read_run(api, run_input("t-tabs", "r-tabs-1", "Hi"))
    asked = await api.post("/api/chat/ask", json={"text": "asked from another client"})
    assert asked.status_code == 201, asked.text
    for _ in range(100):
        entries = (await api.get("/api/chat/conversation")).json()["entries"]
        if entries[-1].get("status") == "done":
            break
        await asyncio.sleep(0.05)  # the answer asked elsewhere ends in the background
    events = await read_run(api, run_input("t-tabs", "r-tabs-2", "And now?"))
    snapshot = next(e for _i, e in events if e.type == EventType.MESSAGES_SNAPSHOT)
    users = [m.content for m in snapshot.messages if m.role == "user"]
    assert users == ["Hi", "asked from another client", "And now?"]


async def test_a_failed_answer_is_a_run_error_with_the_users_words(api, llm):
    llm.script = Reply(status=500, error="boom: /srv/secret/path.py line 12")
    events = await read_run(api, run_input("t-fail", "r-fail", "Fail please"))
    error = events[-1][1]
    assert error.type == EventType.RUN_ERROR and error.code == "answer_failed"
    entry = (await api.get("/api/chat/conversation")).json()["entries"][-1]
    assert error.message == entry["message"]["warning"]  # the words every tab shows, nothing of the server's
    assert entry["status"] == "failed" and "Traceback" not in error.message


async def test_refusals_are_run_errors(api, llm):
    events = await read_run(api, run_input("t-refuse", "r-refuse", "   "))
    assert kinds(events) == ["RUN_STARTED", "RUN_ERROR"] and events[1][1].code == "refused"
    body = run_input("t-refuse", "r-refuse-2", "hi")
    body["tools"] = [{"name": "todo_insert", "description": "mine", "parameters": {"type": "object"}}]
    events = await read_run(api, body)
    assert events[-1][1].type == EventType.RUN_ERROR and "todo_insert" in events[-1][1].message


async def test_bad_requests_get_clear_http_errors(api, server):
    bad = await api.post("/api/ag-ui", json={"threadId": "t"})
    assert bad.status_code == 400 and "RunAgentInput" in bad.json()["error"]
    cursor = await api.post("/api/ag-ui", json=run_input("t-x", "r-x", "hi"), headers={"Last-Event-ID": "nope"})
    assert cursor.status_code == 400
    unknown = await api.post("/api/ag-ui", json=run_input("t-x", "r-unknown", "hi"),
                             headers={"Last-Event-ID": "1.0.0"})
    assert unknown.status_code == 404
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        refused = await anonymous.post("/api/ag-ui", json=run_input("t-x", "r-y", "hi"))
    assert refused.status_code == 401


async def test_continue_keeps_the_answer_going_without_its_client(api, llm):
    words = [f"c{i} " for i in range(20)]
    llm.script = Reply(chunks=words, delay=0.03)
    body = run_input("t-cont", "r-cont", "Go on", forwarded_props={"quanda": {"onDisconnect": "continue"}})
    first = await read_run(api, body, until=4)  # then the client goes away
    assert kinds(first)[0] == "RUN_STARTED"
    await asyncio.sleep(1.0)  # longer than the stop grace (0.3 s): a "stop" run would be stopped by now
    rest = await read_run(api, body, {"Last-Event-ID": next(i for i, _e in reversed(first) if i)})
    assert kinds(rest)[-1] == "RUN_FINISHED" and rest[-1][1].outcome.type == "success"
    assert text(first) + text(rest) == "".join(words)


def test_cursor_ids():
    assert str(Cursor.parse("12.3.1")) == "12.3.1" and Cursor.parse(None) is None
    for bad in ("1.2", "a.b.c", "1.2.3.4", "-1.0.0", "1.2.99999"):
        with pytest.raises(ValueError):
            Cursor.parse(bad)
    assert json.loads(json.dumps(str(Cursor(1, 2, 3)))) == "1.2.3"


async def test_stop_from_another_client_ends_the_run_cancelled(api, llm):
    llm.script = Reply(chunks=[f"s{i} " for i in range(200)], delay=0.03)
    body = run_input("t-stop", "r-stop", "Talk")
    found: list[tuple] = []

    async def follow() -> None:
        found.extend(await read_run(api, body))
    reading = asyncio.create_task(follow())
    for _ in range(200):
        entries = (await api.get("/api/chat/conversation")).json()["entries"]
        if len(entries) >= 2 and (entries[-2].get("message") or {}).get("content") == "Talk" \
                and entries[-1]["message"]["content"]:
            break
        await asyncio.sleep(0.05)  # until the answer streams
    stopped = await api.post(f"/api/chat/answers/{entries[-1]['message_id']}/stop")
    assert stopped.status_code == 202, stopped.text
    await asyncio.wait_for(reading, WAIT_S)
    assert kinds(found)[-1] == "RUN_FINISHED" and found[-1][1].outcome.type == "cancelled"
    assert 0 < len(text(found)) < len("".join(f"s{i} " for i in range(200)))
