"""The chat over HTTP: what a terminal (`python -m quanda.tui`) or any client needs to be a peer of the browser
tabs — the same conversation, live in both, Stop and Retry from either.

JSON in and out; access, errors and limits as for the rest of the HTTP API (app/http_api.py): the
page's session, or `Authorization: Bearer <token>`; 400 invalid, 401 no access, 404 unknown or someone else's,
409 refused in the answer's current state, 503 the store failed.

    GET  /api/chat/conversation?limit=N   the current conversation's last N entries (default 50, at most 200),
                                          each with its message's state; the LLM status; a `cursor`
    GET  /api/chat/events                 SSE: the conversation, then what changes (see below)
    POST /api/chat/ask {"text", "model"?} → 201 {"question_id", "answer_id"}: asked in the conversation, as Send
                                          does (409 while an answer is being written)
    POST /api/chat/answers/{id}/stop      → 202: the LLM stops generating; 409 if it is not being written
    POST /api/chat/answers/{id}/retry     → 202: regenerated in place; 409 if it is being written or final
    POST /api/chat/answers/{id}/regenerate → 202 {"answer_id"}: a new version of the last answer; 409 otherwise
    GET  /api/chat/settings               the current conversation's settings (model, system_prompt,
                                          temperature, context: only those set)
    PUT  /api/chat/settings {...}         → 200 the settings after the change (null or "" unsets one); 400 invalid
    POST /api/chat/new                    → 200 {"conversation"}: a new, empty conversation becomes the current
                                          one (in every tab too); 409 while an answer is being written
    GET  /api/chat/status                 {"ok", "text", "model", "models", "answering"}: the LLM status
    GET  /api/chat/approvals              {"approvals": [...]}: the actions of the conversation's answers that
                                          wait for the user's decision
    POST /api/chat/approvals/{key}/approve → 200 {"key", "decision": "approved"}: the action runs (once); 409
                                          when it was decided already (by any tab, client or server)
    POST /api/chat/approvals/{key}/reject  → 200 {"key", "decision": "rejected"}: the model is told
    POST /api/chat/actions/{key}/undo     → 200 {"key", "text"}: an action the LLM ran (an answer's `results`)
                                          taken back, once; 409 with the reason when it cannot be (undone
                                          already, not undoable, the data changed since)

Following (`/api/chat/events`): without `Last-Event-ID` the first event is `chat.snapshot` (what
`/conversation` returns); then `chat.entry` (a new entry), `chat.state` (an answer's status changed) and
`chat.thinking` (an answer's thinking began), each with `id:` a cursor (see timeline.py) that resumes exactly
after it; `chat.approval` (an action asked or decided: the question as `/approvals` lists it; no id, a state);
`chat.undo` (`{"key", "answer_id"}`: an action was undone; no id); `chat.status` (the LLM status, no id: it is a state, sent at every connect and when it changes);
`: keep-alive` comments every KEEPALIVE_S; `signed-out` (`{"reason"}`, then the stream ends) when the token or
session it was opened with is revoked. With `Last-Event-ID` the stream resumes from that cursor, or starts
with a `chat.snapshot` when it cannot (`"reason"` says why). Answers' text streams on
`/api/messages/{id}/events`, resumable by seq.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fasthtml.common import APIRouter
from starlette.responses import JSONResponse, StreamingResponse

from quanda import approvals, undo
from quanda.context import ClientError, Handle

from quanda.access import handle_of
from quanda.http_api import body_json, error, guarded
from quanda.ownership import fact_for
from quanda.revocation import revocable
from quanda.core import QuandaError, QuandaMessage

from . import actions, answers, conversation, manage, timeline, versions

log = logging.getLogger("quanda.chat.api")
router = APIRouter()

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
KEEPALIVE_S = 15.0
QUIET_TOPICS = ("chat.draft", "chat.sent")  # facts that change nothing a follower shows
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def limit_of(request) -> int:
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise ValueError(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


async def answering(h: Handle) -> str | None:
    """The answer being written in the conversation now (on any server), if any."""
    for _key, entry in reversed(await conversation.entries(h.store, h.owner, limit=8)):
        if entry.get("type") == answers.ROLE and entry.get("status") == "generating":
            return entry["message_id"] if await h.job_running(entry["message_id"]) else None
    return None


async def status_json(h: Handle) -> dict[str, Any]:
    status = await answers.llm_status(h).check()
    return {"ok": status.ok, "text": status.text, "model": status.model, "models": list(status.models),
            "answering": await answering(h)}


async def snapshot_json(h: Handle, limit: int, reason: str | None = None) -> tuple[timeline.View, dict]:
    view, entries = await timeline.snapshot(h, limit)
    body = {"entries": entries, "status": await status_json(h), "cursor": view.cursor()}
    if reason:
        body["reason"] = reason
    return view, body


@router.get("/api/chat/conversation")
@guarded
async def list_conversation(request):
    h = await handle_of(request)
    return JSONResponse((await snapshot_json(h, limit_of(request)))[1])


@router.get("/api/chat/status")
@guarded
async def llm_status(request):
    return JSONResponse(await status_json(await handle_of(request)))


def sse(name: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/api/chat/events")
@guarded
async def follow(request):
    h = await handle_of(request)
    limit = limit_of(request)
    resumed = request.headers.get("last-event-id")
    view = timeline.View.parse(resumed)
    woke, badge, asked, undone = asyncio.Event(), [False], [], []

    def on_fact(topic: str, fact: dict) -> None:
        if not fact_for(fact, h.owner) or not topic.startswith("chat.") or topic in QUIET_TOPICS:
            return
        badge[0] = badge[0] or topic == "chat.badge"
        if topic == approvals.TOPIC and fact.get("key") not in asked:
            asked.append(fact.get("key"))
        if topic == undo.TOPIC:
            undone.append({"key": fact.get("key"), "answer_id": fact.get("answer_id")})
        woke.set()

    async def stream():
        nonlocal view
        stop_listening = await h.store.listen(on_fact)  # before the first read: nothing falls in between
        try:
            if view is None:
                view, body = await snapshot_json(h, limit, "not a cursor" if resumed else None)
                yield sse("chat.snapshot", body, view.cursor())
            else:
                yield sse("chat.status", await status_json(h))
            while True:
                try:
                    async for name, data in timeline.changes(h, view, limit):
                        yield sse(name, data, view.cursor())
                except timeline.Reset as reset:
                    view, body = await snapshot_json(h, limit, str(reset))
                    yield sse("chat.snapshot", body, view.cursor())
                if badge[0]:
                    badge[0] = False
                    yield sse("chat.status", await status_json(h))
                while asked:
                    question = await approvals.one(h, asked.pop(0))
                    if question is not None:
                        yield sse("chat.approval", question)
                while undone:
                    yield sse("chat.undo", undone.pop(0))
                try:  # a fact wakes us; so does the keep-alive, which also re-reads (a fact lost is caught)
                    await asyncio.wait_for(woke.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                woke.clear()
        except QuandaError as exc:
            log.warning("following the conversation of %s ended: %s", h.owner, exc)
            yield sse("chat.error", {"error": "the database is unavailable; reconnect in a moment"})
        finally:
            stop_listening()

    return StreamingResponse(revocable(request, h.owner, stream()), media_type="text/event-stream",
                             headers=STREAM_HEADERS)


@router.post("/api/chat/ask")
@guarded
async def ask(request):
    h = await handle_of(request)
    body = await body_json(request)
    text = actions.question_text(body)
    if not text:
        raise ValueError("text: type a question first")
    model = body.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise ValueError("model must be a string")
        offered = (await answers.llm_status(h).check()).models
        if offered and model not in offered:
            raise ValueError(f"the LLM server has no model {model!r}; it has: {', '.join(offered)}")
    if await actions.answering(h):
        return error(409, "an answer is still being written: wait for it or stop it")
    question = await QuandaMessage.create(h.store, role="q", content=text)
    await h.own(question.id, "q")
    answer_id = await actions.ask(h, await h.store.get_message(question.id), model)
    return JSONResponse({"question_id": question.id, "answer_id": answer_id}, status_code=201)


async def act_on_answer(request, message_id: str, act, status: str):
    """Stop or Retry an answer of the caller's: 202 with the answer's new status, 409 when its state refuses."""
    h = await handle_of(request)
    record = await h.owned(message_id, roles=(answers.ROLE,))
    try:
        await act(h, record.id)
    except ClientError as exc:
        return error(409, str(exc))
    return JSONResponse({"answer_id": record.id, "status": status}, status_code=202)


@router.post("/api/chat/answers/{message_id}/stop")
@guarded
async def stop(request, message_id: str):
    return await act_on_answer(request, message_id, answers.stop, "stopping")


@router.post("/api/chat/answers/{message_id}/retry")
@guarded
async def retry(request, message_id: str):
    return await act_on_answer(request, message_id, answers.retry, "generating")


@router.get("/api/chat/approvals")
@guarded
async def pending_approvals(request):
    h = await handle_of(request)
    found = []
    for _key, entry in await conversation.entries(h.store, h.owner, limit=timeline.TRACKED):
        if entry.get("type") == answers.ROLE and entry.get("approvals"):
            found += [q for q in await approvals.of_answer(h, entry["message_id"]) if q["decision"] is None]
    return JSONResponse({"approvals": found})


async def decide(request, key: str, approve: bool):
    h = await handle_of(request)
    if await approvals.one(h, key) is None:
        return error(404, "no such approval here")
    try:
        decision = await approvals.decide(h, key, approve)
    except ClientError as exc:
        return error(409, str(exc))
    return JSONResponse({"key": key, "decision": decision})


@router.post("/api/chat/approvals/{key}/approve")
@guarded
async def approve(request, key: str):
    return await decide(request, key, True)


@router.post("/api/chat/approvals/{key}/reject")
@guarded
async def reject(request, key: str):
    return await decide(request, key, False)


@router.post("/api/chat/actions/{key}/undo")
@guarded
async def undo_action(request, key: str):
    h = await handle_of(request)
    try:
        text = await undo.undo(h, key)
    except ClientError as exc:
        return error(404 if str(exc) == "no such action here" else 409, str(exc))
    return JSONResponse({"key": key, "text": text})


@router.post("/api/chat/new")
@guarded
async def new_conversation(request):
    h = await handle_of(request)
    try:
        await actions.switch(h, None)
    except ClientError as exc:
        return error(409, str(exc))
    return JSONResponse({"conversation": timeline.conversation_tag(await timeline.current_conversation(h))})


@router.post("/api/chat/answers/{message_id}/regenerate")
@guarded
async def regenerate(request, message_id: str):
    h = await handle_of(request)
    record = await h.owned(message_id, roles=(answers.ROLE,))
    try:
        answer_id = await versions.regenerate(h, record.id)
    except ClientError as exc:
        return error(409, str(exc))
    return JSONResponse({"answer_id": answer_id, "replaces": record.id, "status": "generating"}, status_code=202)


@router.get("/api/chat/settings")
@guarded
async def get_settings(request):
    h = await handle_of(request)
    return JSONResponse(await conversation.settings_of(h.store, h.owner))


@router.put("/api/chat/settings")
@guarded
async def put_settings(request):
    h = await handle_of(request)
    body = await body_json(request)
    try:
        changes = manage.settings_from(body)
    except ClientError as exc:
        raise ValueError(str(exc)) from None
    cid = await conversation.current(h.store, h.owner)
    settings = await conversation.set_settings(h.store, h.owner, cid, **changes)
    await h.publish("chat.settings")
    return JSONResponse(settings or {})
