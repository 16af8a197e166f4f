"""The HTTP API over the core (the seed's endpoints), JSON in and out, SSE for following a message.

Access: the browser session that owns a message, or `Authorization: Bearer $QUANDA_API_TOKEN` when that
variable is set (which may use any message). Errors: 400 invalid input, 401 no access, 404 unknown or
someone else's message, 409 immutable, 413 over a size limit, 503 the store failed.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging

from fasthtml.common import APIRouter
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.client_json import ClientJSONError, parse_client_json
from app.plugins import Plugin
from app.quanda import (QuandaError, QuandaImmutableError, QuandaLimitError, QuandaMessage, QuandaNotFoundError,
                        QuandaReader, QuandaStoreError)
from app.quanda.validation import MAX_SEQ

log = logging.getLogger("quanda.api")
router = APIRouter()
EVENT_NAMES = {"chunk": "thread.message.delta", "override": "thread.message.override",
               "warning": "thread.run.warning", "immutable": "thread.run.completed"}
API_ROLES = {"q", "assistant", "user", "note"}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def caller(request) -> str | None:
    """'*' for a valid bearer token, the session id for a browser session, else None."""
    token = request.app.state.ctx.settings.api_token
    auth = request.headers.get("authorization", "")
    if token and auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), token):
        return "*"
    sid = request.scope.get("session", {}).get("sid")
    return sid if isinstance(sid, str) else None


async def body_json(request) -> dict:
    """The body as a JSON object (its size and nesting were checked at the door, app/door.py)."""
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


async def owned(request, message_id: str):
    """The message, if the caller may use it; raises QuandaNotFoundError otherwise (no existence leak)."""
    who = caller(request)
    if who is None:
        raise PermissionError("sign in with the browser session or Authorization: Bearer <QUANDA_API_TOKEN>")
    ctx = request.app.state.ctx
    record = await ctx.store.get_message(message_id)
    if who != "*":
        owner = await ctx.store.get_record("owner", record.id)
        if owner is None or owner.get("sid") != who:
            raise QuandaNotFoundError(f"no message with id {message_id!r}")
    return record


def guarded(handler):
    @functools.wraps(handler)
    async def wrapped(request, **kwargs):
        try:
            return await handler(request, **kwargs)
        except PermissionError as exc:
            return error(401, str(exc))
        except (ValueError, TypeError) as exc:
            return error(413 if isinstance(exc, QuandaLimitError) else 400, str(exc))
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
    who = caller(request)
    if who is None:
        raise PermissionError("sign in with the browser session or Authorization: Bearer <QUANDA_API_TOKEN>")
    body = await body_json(request)
    role, content = body.get("role"), body.get("content", "")
    if role not in API_ROLES:
        raise ValueError(f"role must be one of {', '.join(sorted(API_ROLES))}")
    if not isinstance(content, str):
        raise ValueError("content must be a string")
    ctx = request.app.state.ctx
    message = await QuandaMessage.create(ctx.store, role=role, content=content)
    await ctx.own("api" if who == "*" else who, message.id, role)
    return JSONResponse({"id": message.id, "role": message.role}, status_code=201)


@router.get("/api/messages/{message_id}")
@guarded
async def get_message(request, message_id: str):
    return JSONResponse(state(await owned(request, message_id)))


@router.post("/api/messages/{message_id}/tokens")
@guarded
async def post_token(request, message_id: str):
    record = await owned(request, message_id)
    body = await body_json(request)
    kind, text, estimate = body.get("kind"), body.get("text"), body.get("estimate")
    if kind not in ("chunk", "override", "warning"):
        raise ValueError("kind must be chunk, override or warning")
    if not isinstance(text, str) or (estimate is not None and not isinstance(estimate, str)):
        raise ValueError("text must be a string (and estimate a string or null)")
    if estimate is not None and kind != "chunk":
        raise ValueError("only a chunk carries an estimate")
    token = await request.app.state.ctx.store.append(record.id, kind, text, estimate)
    return JSONResponse({"seq": token.seq, "kind": token.kind})


@router.post("/api/messages/{message_id}/immutable")
@guarded
async def seal(request, message_id: str):
    record = await owned(request, message_id)
    await request.app.state.ctx.store.append(record.id, "immutable")
    return Response(status_code=204)


@router.get("/api/messages/{message_id}/events")
@guarded
async def events(request, message_id: str):
    record = await owned(request, message_id)
    last = request.headers.get("last-event-id")
    after = None
    if last not in (None, ""):
        if not (last.isascii() and last.isdigit() and len(last) <= 19 and int(last) <= MAX_SEQ):
            raise ValueError(f"Last-Event-ID must be a seq: a whole number from 0 to {MAX_SEQ}")
        after = int(last)
        if after > record.last_seq:
            raise ValueError(f"Last-Event-ID {after} is past the message's last seq ({record.last_seq})")
    message = QuandaMessage(request.app.state.ctx.store, record)

    async def stream():
        snapshot = after is None
        async for token in QuandaReader(message, after_seq=after):
            name = "thread.message.snapshot" if snapshot and token.kind == "override" else EVENT_NAMES[token.kind]
            snapshot = False
            data = json.dumps({"seq": token.seq, "kind": token.kind, "text": token.text, "estimate": token.estimate})
            yield f"id: {token.seq}\nevent: {name}\ndata: {data}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/api/messages/{message_id}/answer")
@guarded
async def answer(request, message_id: str):
    record = await owned(request, message_id)
    ctx = request.app.state.ctx
    if ctx.chat is None:
        raise ValueError("the chat plugin is not loaded")
    if record.role not in ("q", "user"):
        raise ValueError("answers are generated for question messages (role q)")
    body = await body_json(request)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError("model must be a string")
    answer_id = await ctx.chat.answer_question(record, model, owner=caller(request))
    return JSONResponse({"answer_id": answer_id}, status_code=202)


plugin = Plugin(name="api", label="HTTP API", order=200, router=router)
