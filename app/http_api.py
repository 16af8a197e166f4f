"""The HTTP API over the core (the seed's endpoints), JSON in and out, SSE for following a message.

Access: the browser session that owns a message, or `Authorization: Bearer $QUANDA_API_TOKEN` when that
variable is set (which may use any message). SSE streams send a `: keep-alive` comment after KEEPALIVE_S
seconds without an event, and end with a `signed-out` event when what they were opened with is revoked
(app/revocation.py). Errors: 400 invalid input, 401 no access, 404 unknown or
someone else's message, 409 immutable, 413 over a size limit, 503 the store failed. Bodies are checked for
size and nesting at the door (app/door.py) before they reach a route.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from contextlib import aclosing

from fasthtml.common import APIRouter
from starlette.responses import JSONResponse, Response, StreamingResponse

from quanda.client_json import ClientJSONError, parse_client_json
from quanda.context import ClientError
from quanda.plugin import Plugin
from quanda.access import handle_of
from quanda.revocation import revocable
from quanda.core import (QuandaError, QuandaImmutableError, QuandaLimitError, QuandaMessage, QuandaNotFoundError,
                        QuandaReader, QuandaStoreError)
from quanda.core.validation import MAX_SEQ

log = logging.getLogger("quanda.api")
router = APIRouter()
EVENT_NAMES = {"chunk": "thread.message.delta", "override": "thread.message.override",
               "warning": "thread.run.warning", "immutable": "thread.run.completed"}
API_ROLES = {"q", "assistant", "user", "note"}
KEEPALIVE_S = 15.0  # an SSE comment after this long without an event


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def body_json(request) -> dict:
    """The body as a JSON object (its size and nesting were checked at the door)."""
    raw = await request.body()
    try:
        value = parse_client_json(raw.decode("utf-8")) if raw else {}
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 text") from None
    except ClientJSONError as exc:
        raise ValueError(f"the body is not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def guarded(handler):
    @functools.wraps(handler)
    async def wrapped(request, **kwargs):
        try:
            return await handler(request, **kwargs)
        except PermissionError as exc:
            return error(401, str(exc))
        except QuandaLimitError as exc:
            return error(413, str(exc))
        except (ValueError, TypeError, ClientError) as exc:
            return error(400, str(exc))
        except QuandaNotFoundError as exc:
            return error(404, str(exc))
        except QuandaImmutableError as exc:
            return error(409, str(exc))
        except QuandaStoreError as exc:
            log.error("API: store failed: %s", exc)
            return error(503, "the database is unavailable; try again")
        except QuandaError as exc:
            return error(400, str(exc))
    return wrapped


def state(record) -> dict:
    return {"id": record.id, "role": record.role, "content": record.content, "estimate": record.estimate,
            "warning": record.warning, "immutable": record.immutable, "last_seq": record.last_seq}


@router.post("/api/messages")
@guarded
async def create_message(request):
    h = await handle_of(request)
    body = await body_json(request)
    role, content = body.get("role"), body.get("content", "")
    if role not in API_ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(API_ROLES))}")
    if not isinstance(content, str):
        raise ValueError("content must be a string")
    message = await QuandaMessage.create(h.store, role=role, content=content)
    await h.own(message.id, role)
    return JSONResponse({"id": message.id, "role": message.role}, status_code=201)


@router.get("/api/messages/{message_id}")
@guarded
async def get_message(request, message_id: str):
    return JSONResponse(state(await (await handle_of(request)).owned(message_id)))


@router.post("/api/messages/{message_id}/tokens")
@guarded
async def post_token(request, message_id: str):
    h = await handle_of(request)
    record = await h.owned(message_id)
    body = await body_json(request)
    kind, text, estimate = body.get("kind"), body.get("text"), body.get("estimate")
    if kind not in ("chunk", "override", "warning"):
        raise ValueError("kind must be chunk, override or warning")
    if not isinstance(text, str) or (estimate is not None and not isinstance(estimate, str)):
        raise ValueError("text must be a string (and estimate a string or null)")
    if estimate is not None and kind != "chunk":
        raise ValueError("only a chunk carries an estimate")
    token = await h.store.append(record.id, kind, text, estimate)
    return JSONResponse({"seq": token.seq, "kind": token.kind})


@router.post("/api/messages/{message_id}/immutable")
@guarded
async def seal(request, message_id: str):
    h = await handle_of(request)
    record = await h.owned(message_id)
    await h.store.append(record.id, "immutable")
    return Response(status_code=204)


def resume_point(request, record) -> int | None:
    """The seq a `Last-Event-ID` header resumes after, or None for a snapshot; ValueError if it is not one."""
    last = request.headers.get("last-event-id")
    if last in (None, ""):
        return None
    if not (last.isascii() and last.isdigit() and len(last) <= 19 and int(last) <= MAX_SEQ):
        raise ValueError(f"Last-Event-ID must be a seq: a whole number from 0 to {MAX_SEQ}")
    if int(last) > record.last_seq:
        raise ValueError(f"Last-Event-ID {last} is past the message's last seq ({record.last_seq})")
    return int(last)


async def with_keepalives(reader, every_s: float = KEEPALIVE_S, backlog: int = 256):
    """The reader's tokens, and None after every `every_s` seconds without one (the SSE stream then sends a
    comment, so a client can tell a quiet message from a dead connection)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=backlog)
    end = object()

    async def pump() -> None:
        try:
            async for token in reader:
                await queue.put(token)
        except QuandaError as exc:
            await queue.put(exc)
        await queue.put(end)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), every_s)
            except asyncio.TimeoutError:
                yield None
                continue
            if item is end:
                return
            if isinstance(item, QuandaError):
                raise item
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@router.get("/api/messages/{message_id}/events")
@guarded
async def events(request, message_id: str):
    h = await handle_of(request)
    record = await h.owned(message_id)
    after = resume_point(request, record)
    message = QuandaMessage(h.store, record)

    async def stream():
        snapshot = after is None
        async with aclosing(with_keepalives(QuandaReader(message, after_seq=after))) as tokens:  # its reader ends
            try:                                                                             # with the response
                async for token in tokens:
                    if token is None:
                        yield ": keep-alive\n\n"
                        continue
                    name = "thread.message.snapshot" if snapshot and token.kind == "override" else EVENT_NAMES[token.kind]
                    snapshot = False
                    data = json.dumps({"seq": token.seq, "kind": token.kind, "text": token.text,
                                       "estimate": token.estimate})
                    yield f"id: {token.seq}\nevent: {name}\ndata: {data}\n\n"
            except QuandaError as exc:  # the response has begun: the stream ends saying so (a client resumes
                log.warning("following message %s ended: %s", message.id, exc)  # from its Last-Event-ID)
                yield f"event: error\ndata: {json.dumps({'error': 'the database is unavailable; reconnect in a moment'})}\n\n"

    return StreamingResponse(revocable(request, h.owner, stream()), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/api/messages/{message_id}/answer")
@guarded
async def answer(request, message_id: str):
    h = await handle_of(request)
    record = await h.owned(message_id)
    ask = h.ctx.plugin_hook("ask")
    if ask is None:
        raise ValueError("no plugin answers questions (the chat plugin is not loaded)")
    if record.role not in ("q", "user"):
        raise ValueError("answers are generated for question messages (role q)")
    body = await body_json(request)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError("model must be a string")
    return JSONResponse({"answer_id": await ask(h, record, model)}, status_code=202)


plugin = Plugin(name="api", label="HTTP API", order=200, router=router)
