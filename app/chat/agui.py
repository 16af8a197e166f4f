"""`POST /api/ag-ui`: the chat as an AG-UI agent (https://docs.ag-ui.com). It takes a `RunAgentInput` and
answers with AG-UI events over SSE (agui_events.py says which and how they resume).

Threads. A thread is a conversation of the caller's workspace (the page's session or a bearer token, as the
rest of the HTTP API). A `threadId` that is one of the workspace's conversation ids continues it; another
`threadId` gets a new conversation the first time it is seen (records of kind "agui_thread"). A run makes its
conversation the current one, so its question and answer show in every tab and the terminal client, live,
and what the tabs do (ambient events, their own questions) shows in the thread.

A run asks the last `user` message of `messages` when it is new to the thread, through the chat's own path
(as Send does); the rest of `messages` is the client's copy of the thread, which the server has already.
The client's `tools` are offered to the model beside ours (client_tools.py); a round that calls one ends the
run with the call (`RUN_FINISHED` names it in `pendingToolCallIds`), and a run whose `messages` end with
the `tool` results of those calls continues the answer from them. Our own tools run exactly once, here.

Runs are records (kind "agui_run", keyed by workspace and `runId`): POSTing a run id again never asks
again, it sends that run's events — from the start, or after the event named by `Last-Event-ID`. When the
client goes away before the run ends (`abortRun()`, a closed tab), the answer is stopped (the LLM's stream
closed) QUANDA_AGUI_STOP_GRACE_S later, unless a client resumed the run in the meantime; with
`forwardedProps: {"quanda": {"onDisconnect": "continue"}}` it goes on regardless (resume it any time; the
tabs show it anyway). `forwardedProps.quanda.model` picks the model.

Errors: a body that is not a RunAgentInput gets 400, no access 401, a `Last-Event-ID` of no run 404 (JSON,
as the rest of the API); a run refused (an answer is being written, nothing to answer, a tool name taken)
or failing (the LLM unreachable, …) gets `RUN_ERROR` with a code and a message meant for the user; a run
whose token or session is revoked while it streams ends with `RUN_ERROR` code `signed_out`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextlib import aclosing
from typing import Any

from ag_ui.core import RunAgentInput, RunErrorEvent, RunStartedEvent
from fasthtml.common import APIRouter
from pydantic import ValidationError
from starlette.responses import JSONResponse, StreamingResponse

from quanda.llm.tools import TOOL_NAME_RE
from quanda.context import ClientError, Handle
from quanda.access import handle_of
from quanda.http_api import body_json, error
from quanda.revocation import revocable
from quanda.core import QuandaError, QuandaMessage, QuandaNotFoundError

from . import actions, agui_events, answers, client_tools, conversation, tools

log = logging.getLogger("quanda.chat.agui")
router = APIRouter()

THREAD_KIND = "agui_thread"  # "<owner>:<threadId>" -> {"cid"}
RUN_KIND = "agui_run"  # "<owner>:<runId>" -> the run (see `start_run`)
ATTACH_KIND = "agui_attach"  # "<owner>:<runId>" -> {"token"}: the response sending the run now
MAX_ID_CHARS = 200
STARTING_WAIT_S = 10.0  # how long a second POST of a run that is starting waits for its answer id
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class RunResponse(StreamingResponse):
    """A stream that tells `on_close` whether it ended with its run or was left (the client went away)."""

    def __init__(self, events: Any, on_close: Any):
        self.completed = False

        async def body():
            async with aclosing(events):  # a client gone: the run's readers end with the response
                async for text in events:
                    yield text
            self.completed = True
        super().__init__(body(), media_type="text/event-stream", headers=STREAM_HEADERS)
        self._body, self.on_close = self.body_iterator, on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            await self.on_close(self.completed)


def refused(run_input: RunAgentInput, code: str, message: str) -> StreamingResponse:
    async def events():
        yield agui_events.encode(RunStartedEvent(thread_id=run_input.thread_id, run_id=run_input.run_id))
        yield agui_events.encode(RunErrorEvent(message=message, code=code))
    return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)


@router.post("/api/ag-ui")
async def run_agent(request):
    try:
        h = await handle_of(request)
    except PermissionError as exc:
        return error(401, str(exc))
    try:
        run_input = parse_input(await body_json(request))
        after = agui_events.Cursor.parse(request.headers.get("last-event-id"))
    except ValueError as exc:
        return error(400, str(exc))
    key = f"{h.owner}:{run_input.run_id}"
    try:
        run = await existing_run(h, key)
        if run is None:
            if after is not None:
                return error(404, "there is no such run to resume (Last-Event-ID names an event of a run)")
            run = await start_run(h, key, run_input)
        elif run["thread_id"] != run_input.thread_id:
            return error(400, "that runId belongs to another thread")
        token = secrets.token_hex(8)
        await h.store.put_record(ATTACH_KIND, key, {"token": token})
    except ClientError as exc:
        return refused(run_input, "refused", str(exc))
    except QuandaError as exc:
        log.error("AG-UI run %s could not start: %s", run_input.run_id, exc)
        return refused(run_input, "store_unavailable", "the database is unavailable; try again")

    async def on_close(completed: bool) -> None:
        if not completed and run.get("on_disconnect") != "continue":
            h.ctx.state["chat"].in_background(stop_unless_resumed(h, key, token, run["answer_id"]))

    events = revocable(request, h.owner, agui_events.RunEvents(h, run, after).stream(), farewell=signed_out)
    return RunResponse(events, on_close)


def signed_out(reason: str) -> str:
    """What a run's stream ends with when the caller's token or session is revoked meanwhile."""
    return agui_events.encode(RunErrorEvent(message=reason, code="signed_out"))


def parse_input(body: dict) -> RunAgentInput:
    try:
        run_input = RunAgentInput.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ValueError(f"the body is not an AG-UI RunAgentInput: {problems}") from None
    for name in ("thread_id", "run_id"):
        value = getattr(run_input, name)
        if not 1 <= len(value) <= MAX_ID_CHARS or not value.isprintable():
            raise ValueError(f"{name}: 1 to {MAX_ID_CHARS} printable characters")
    return run_input


async def existing_run(h: Handle, key: str) -> dict | None:
    """The run recorded under `key` (waiting a little for one that is starting), or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTING_WAIT_S
    while (run := await h.store.get_record(RUN_KIND, key)) is not None and "answer_id" not in run:
        if run.get("failed") or loop.time() > deadline:
            raise ClientError("that run did not start: send the next one with a new runId")
        await asyncio.sleep(0.05)  # another request is starting this run: its record says when it has
    return run


async def start_run(h: Handle, key: str, run_input: RunAgentInput) -> dict:
    """Ask the run's question (or continue from its tool results) in the thread's conversation, once."""
    if not await h.store.insert_record(RUN_KIND, key, {"thread_id": run_input.thread_id}):
        found = await existing_run(h, key)  # the same run POSTed twice at once: the other one starts it
        if found is None:
            raise ClientError("that run did not start: send the next one with a new runId")
        return found
    try:
        run = await ask_or_continue(h, run_input)
    except BaseException:
        await h.store.put_record(RUN_KIND, key, {"thread_id": run_input.thread_id, "failed": True})
        raise
    await h.store.put_record(RUN_KIND, key, run)
    return run


async def ask_or_continue(h: Handle, run_input: RunAgentInput) -> dict:
    props = quanda_props(run_input.forwarded_props)
    cid = await thread_conversation(h, run_input.thread_id)
    if cid != await conversation.current(h.store, h.owner):
        await actions.switch(h, cid)
    offered = client_definitions(h, run_input.tools or [])
    model = props.get("model") if isinstance(props.get("model"), str) else None
    last = run_input.messages[-1] if run_input.messages else None
    if last is not None and last.role == "user" and not await is_ours(h, last.id):
        text = actions.question_text({"text": text_of(last.content)})
        if not text:
            raise ClientError("the last user message has no text to answer")
        if await actions.answering(h):
            raise ClientError(actions.STILL_WRITING)
        question = await QuandaMessage.create(h.store, role="q", content=text)
        await h.own(question.id, "q")
        answer_id = await actions.ask(h, await h.store.get_message(question.id), model,
                                      lambda aid: client_tools.attach(h, aid, offered, []))
    else:
        replay = await replay_results(h, run_input.messages)
        if replay is None:
            raise ClientError("nothing to answer: end `messages` with a new user message, or with the results "
                              "of the tool calls the last run left pending")
        if await actions.answering(h):
            raise ClientError(actions.STILL_WRITING)
        await answers.seal_unfinished(h)
        answer_id = await answers.start_answer(h, model or (await answers.llm_status(h).choose())[0],
                                               lambda aid: client_tools.attach(h, aid, offered, replay))
    return {"thread_id": run_input.thread_id, "run_id": run_input.run_id, "cid": cid, "answer_id": answer_id,
            "on_disconnect": "continue" if props.get("onDisconnect") == "continue" else "stop"}


def quanda_props(forwarded: Any) -> dict:
    props = forwarded.get("quanda") if isinstance(forwarded, dict) else None
    return props if isinstance(props, dict) else {}


async def thread_conversation(h: Handle, thread_id: str) -> str:
    """The conversation a thread is: one of the workspace's by id, or the one made for this thread id."""
    if await conversation.conversation(h.store, h.owner, thread_id) is not None:
        return thread_id
    found = await h.store.get_record(THREAD_KIND, f"{h.owner}:{thread_id}")
    if found and await conversation.conversation(h.store, h.owner, found["cid"]) is not None:
        return found["cid"]
    await actions.switch(h, None)  # a new conversation (the current one if it is still empty)
    cid = await conversation.current(h.store, h.owner)
    await h.store.put_record(THREAD_KIND, f"{h.owner}:{thread_id}", {"cid": cid})
    return cid


def client_definitions(h: Handle, offered: list) -> list[dict]:
    """The client's tools as tool definitions; ClientError for a name the model could not call or one of ours."""
    if len(offered) > client_tools.MAX_TOOLS:
        raise ClientError(f"at most {client_tools.MAX_TOOLS} tools per run")
    ours = tools.toolbox(h).specs
    definitions = []
    for tool in offered:
        if not TOOL_NAME_RE.match(tool.name):
            raise ClientError(f"tool name {tool.name[:80]!r}: 1-64 letters, digits, '_' or '-'")
        if tool.name in ours:
            raise ClientError(f"tool name {tool.name!r} is taken by one of the server's own tools")
        definitions.append(client_tools.definition(tool.name, tool.description, tool.parameters))
    return definitions


async def is_ours(h: Handle, message_id: str) -> bool:
    try:
        await h.owned(message_id)
    except (QuandaNotFoundError, QuandaError):
        return False
    return True


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.text for part in content or () if getattr(part, "type", "") == "text")


async def replay_results(h: Handle, messages: list) -> list[dict] | None:
    """The turns that continue the last answer from the client's results for its pending calls (the
    assistant message that made the round's calls, then one `tool` message per call), or None when
    `messages` end with no such results."""
    given = {}
    for message in reversed(messages):
        if message.role != "tool":
            break
        given[message.tool_call_id] = text_of(message.content)
    if not given:
        return None
    found = next(iter(given))
    parsed = agui_events.parse_tool_call_id(found)
    if parsed is None or not await is_ours(h, parsed[0]):
        return None
    answer_id, round_no, _ = parsed
    record = await h.store.get_record(tools.ROUND_KIND, tools.round_key(answer_id, round_no))
    if record is None or await h.store.get_record(tools.ROUND_KIND, tools.round_key(answer_id, round_no + 1)):
        return None
    calls, results = record["calls"], []
    for call in calls:
        call_id = agui_events.tool_call_id(answer_id, round_no, call["position"])
        if client_tools.is_frontend(call):
            content = given.get(call_id, "the client sent no result for this call")
            if not await h.store.insert_record(client_tools.RESULT_KIND, call_id, {"content": content}):
                return None  # answered already: a run continued from it
            results.append(content)
        else:
            results.append(await agui_events.call_result(h, answer_id, round_no, call) or "not run")
    return h.ctx.llm.tool_messages(calls, results)


async def stop_unless_resumed(h: Handle, key: str, token: str, answer_id: str) -> None:
    """The client went away: stop the answer after the grace, unless a client took the run up again."""
    await asyncio.sleep(h.settings.agui_stop_grace_s)
    attached = await h.store.get_record(ATTACH_KIND, key)
    if attached is None or attached.get("token") == token:
        if await h.stop_job(answer_id):
            log.info("AG-UI run %s: the client went away, its answer %s is stopped", key, answer_id)
