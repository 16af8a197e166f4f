"""`GET /api/openapi.json`: the HTTP API described in OpenAPI 3.1, for clients generated in other languages.

It covers every route under `/api/` and the operational ones under `/-/` (health, plugins, metrics), their
bodies and their errors; a served description lists only the routes the app has mounted (a host without the
chat leaves the chat's out). tests/test_openapi.py checks it both ways against the routes that exist and
validates real responses against it. AG-UI's `RunAgentInput` comes from the protocol's own types.

Access and errors are the API's (app/http_api.py): the page's session cookie or a bearer token; every
error body is `{"error": "..."}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ag_ui.core import RunAgentInput
from starlette.responses import JSONResponse

VERSION = "1"

ERRORS = {400: "Invalid input (the message says what)", 401: "No access: sign in, or send a bearer token",
          403: "Not from here", 404: "Unknown, or someone else's", 409: "Refused in the current state",
          413: "Over a size limit", 503: "The store is unavailable: try again"}
NULLABLE_STRING = {"type": ["string", "null"]}
MESSAGE_STATE = {
    "type": "object", "required": ["id", "role", "content", "estimate", "warning", "immutable", "last_seq"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9a-f]{24}$"}, "role": {"type": "string"},
                   "content": {"type": "string"}, "estimate": NULLABLE_STRING, "warning": {"type": "string"},
                   "immutable": {"type": "boolean"}, "last_seq": {"type": "integer", "minimum": 0}}}
CHAT_STATUS = {
    "type": "object", "required": ["ok", "text", "model", "models", "answering"],
    "properties": {"ok": {"type": "boolean"}, "text": {"type": "string"}, "model": {"type": "string"},
                   "models": {"type": "array", "items": {"type": "string"}}, "answering": NULLABLE_STRING}}
CHAT_ENTRY = {
    "type": "object", "required": ["key", "type", "at"],
    "description": "An entry of the conversation: an ambient event (`text`), a question or an answer (`message`; "
                   "an answer also has `status`, `model`, its `thinking`, and how it ended: `outcome`, `reason`, "
                   "`usage`, `version` of `versions`)",
    "properties": {"key": {"type": "string"}, "type": {"enum": ["event", "q", "assistant"]},
                   "at": {"type": ["number", "null"]}, "text": {"type": "string"},
                   "message_id": {"type": "string"},
                   "message": {"oneOf": [{"$ref": "#/components/schemas/MessageState"}, {"type": "null"}]},
                   "status": {"enum": ["generating", "done", "stopped", "failed", "cut", "interrupted", "final"]},
                   "outcome": {"enum": ["generating", "done", "stopped", "failed", "cut", "interrupted"]},
                   "reason": {"type": "string"}, "usage": {"oneOf": [{"$ref": "#/components/schemas/Usage"},
                                                                     {"type": "null"}]},
                   "version": {"type": "integer", "minimum": 1}, "versions": {"type": "integer", "minimum": 1},
                   "model": NULLABLE_STRING, "thinking_id": NULLABLE_STRING,
                   "thinking": {"oneOf": [{"$ref": "#/components/schemas/MessageState"}, {"type": "null"}]}}}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "MessageState": MESSAGE_STATE,
    "NewMessage": {"type": "object", "required": ["role"],
                   "properties": {"role": {"enum": ["assistant", "note", "q", "user"]}, "content": {"type": "string"}}},
    "MessageCreated": {"type": "object", "required": ["id", "role"],
                       "properties": {"id": {"type": "string"}, "role": {"type": "string"}}},
    "NewToken": {"type": "object", "required": ["kind", "text"],
                 "properties": {"kind": {"enum": ["chunk", "override", "warning"]}, "text": {"type": "string"},
                                "estimate": NULLABLE_STRING}},
    "TokenWritten": {"type": "object", "required": ["seq", "kind"],
                     "properties": {"seq": {"type": "integer", "minimum": 1}, "kind": {"type": "string"}}},
    "AnswerRequest": {"type": "object", "properties": {"model": {"type": "string"}}},
    "AnswerStarted": {"type": "object", "required": ["answer_id"], "properties": {"answer_id": {"type": "string"}}},
    "ChatStatus": CHAT_STATUS,
    "ChatEntry": CHAT_ENTRY,
    "ChatSnapshot": {"type": "object", "required": ["entries", "status", "cursor"],
                     "properties": {"entries": {"type": "array", "items": {"$ref": "#/components/schemas/ChatEntry"}},
                                    "status": {"$ref": "#/components/schemas/ChatStatus"},
                                    "cursor": {"type": "string"}, "reason": {"type": "string"}}},
    "Ask": {"type": "object", "required": ["text"],
            "properties": {"text": {"type": "string", "maxLength": 32000}, "model": {"type": "string"}}},
    "Asked": {"type": "object", "required": ["question_id", "answer_id"],
              "properties": {"question_id": {"type": "string"}, "answer_id": {"type": "string"}}},
    "AnswerAction": {"type": "object", "required": ["answer_id", "status"],
                     "properties": {"answer_id": {"type": "string"}, "status": {"type": "string"}}},
    "Usage": {"type": "object", "description": "What an answer cost: the server's numbers where it gives them "
                                               "(`counted`: server), else the app's (estimate)",
              "properties": {"prompt_tokens": {"type": ["integer", "null"]}, "completion_tokens": {"type": "integer"},
                             "ttft_s": {"type": "number"}, "seconds": {"type": "number"},
                             "tokens_per_s": {"type": "number"}, "window": {"type": ["integer", "null"]},
                             "counted": {"enum": ["server", "estimate"]}}},
    "Regenerated": {"type": "object", "required": ["answer_id", "replaces", "status"],
                    "properties": {"answer_id": {"type": "string"}, "replaces": {"type": "string"},
                                   "status": {"type": "string"}}},
    "ConversationSettings": {"type": "object", "description": "Those set; null or \"\" unsets one",
                             "properties": {"model": NULLABLE_STRING, "system_prompt": NULLABLE_STRING,
                                            "temperature": {"type": ["number", "null", "string"]},
                                            "context": {"type": ["integer", "null", "string"]}}},
    "NewConversation": {"type": "object", "required": ["conversation"],
                        "properties": {"conversation": {"type": "string"}}},
    "Health": {"type": "object", "required": ["ok"],
               "properties": {"ok": {"type": "boolean"}, "reason": {"type": "string"}}},
    "Plugin": {"type": "object", "required": ["name", "label", "order", "menu", "routes", "hooks"],
               "properties": {"name": {"type": "string"}, "label": {"type": "string"}, "order": {"type": "integer"},
                              "menu": {"type": "boolean"}, "routes": {"type": "integer"},
                              "ws_actions": {"type": "array", "items": {"type": "string"}},
                              "stream_roles": {"type": "array", "items": {"type": "string"}},
                              "facts": {"type": "array", "items": {"type": "string"}},
                              "commands": {"type": "integer"},
                              "hooks": {"type": "array", "items": {"type": "string"}}}},
}
MESSAGE_ID = {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "Resume after this event (the `id:` of the last event received)"}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(name: str, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": ref(name)}}}


def operation(summary: str, ok: dict[int, Any], errors: tuple[int, ...] = (400, 401, 503), *,
              body: dict | None = None, params: tuple = (), tag: str = "messages") -> dict:
    """One operation: its success responses (status -> schema name, a media-type map, or None: no body) and the
    error statuses it can answer."""
    responses: dict[str, Any] = {}
    for status, schema in ok.items():
        if schema is None:
            responses[str(status)] = {"description": "Done, no body"}
        elif isinstance(schema, dict):
            responses[str(status)] = {"description": schema.pop("description", "OK"), "content": schema}
        else:
            responses[str(status)] = {"description": "OK", "content": {"application/json": {"schema": ref(schema)}}}
    for status in errors:
        responses[str(status)] = {"description": ERRORS[status],
                                  "content": {"application/json": {"schema": ref("Error")}}}
    found: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if body is not None:
        found["requestBody"] = body
    if params:
        found["parameters"] = list(params)
    return found


def event_stream(what: str) -> dict:
    return {"description": what, "text/event-stream": {"schema": {"type": "string"}}}


def paths() -> dict[str, dict[str, Any]]:
    limit = {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}}
    return {
        "/api/messages": {"post": operation("Create a message", {201: "MessageCreated"}, body=json_body("NewMessage"))},
        "/api/messages/{message_id}": {"get": operation("A message's state", {200: "MessageState"},
                                                        (400, 401, 404, 503), params=(MESSAGE_ID,))},
        "/api/messages/{message_id}/tokens": {"post": operation(
            "Append a token", {200: "TokenWritten"}, (400, 401, 404, 409, 413, 503), body=json_body("NewToken"),
            params=(MESSAGE_ID,))},
        "/api/messages/{message_id}/immutable": {"post": operation(
            "Seal a message (idempotent)", {204: None}, (400, 401, 404, 503), params=(MESSAGE_ID,))},
        "/api/messages/{message_id}/events": {"get": operation(
            "Follow a message: one SSE event per token, id = seq (thread.message.snapshot, thread.message.delta, "
            "thread.message.override, thread.run.warning, thread.run.completed)",
            {200: event_stream("SSE, `: keep-alive` comments while quiet")}, (400, 401, 404, 503),
            params=(MESSAGE_ID, LAST_EVENT_ID))},
        "/api/messages/{message_id}/answer": {"post": operation(
            "Answer a question message in the background", {202: "AnswerStarted"}, (400, 401, 404, 503),
            body=json_body("AnswerRequest", required=False), params=(MESSAGE_ID,))},
        "/api/chat/conversation": {"get": operation("The current conversation's last entries",
                                                    {200: "ChatSnapshot"}, params=(limit,), tag="chat")},
        "/api/chat/status": {"get": operation("The LLM status", {200: "ChatStatus"}, (401, 503), tag="chat")},
        "/api/chat/events": {"get": operation(
            "Follow the conversation: chat.snapshot, then chat.entry, chat.state, chat.thinking (ids are cursors), "
            "chat.status, chat.error", {200: event_stream("SSE")}, params=(limit, LAST_EVENT_ID), tag="chat")},
        "/api/chat/ask": {"post": operation("Ask in the conversation, as Send does", {201: "Asked"},
                                            (400, 401, 409, 503), body=json_body("Ask"), tag="chat")},
        "/api/chat/answers/{message_id}/stop": {"post": operation(
            "Stop an answer being written", {202: "AnswerAction"}, (400, 401, 404, 409, 503),
            params=(MESSAGE_ID,), tag="chat")},
        "/api/chat/answers/{message_id}/retry": {"post": operation(
            "Regenerate a stopped or failed answer in place", {202: "AnswerAction"}, (400, 401, 404, 409, 503),
            params=(MESSAGE_ID,), tag="chat")},
        "/api/chat/answers/{message_id}/regenerate": {"post": operation(
            "A new version of the last answer (the old one kept)", {202: "Regenerated"}, (400, 401, 404, 409, 503),
            params=(MESSAGE_ID,), tag="chat")},
        "/api/chat/settings": {
            "get": operation("The current conversation's settings", {200: "ConversationSettings"}, (401, 503),
                             tag="chat"),
            "put": operation("Change the current conversation's settings", {200: "ConversationSettings"},
                             body=json_body("ConversationSettings"), tag="chat")},
        "/api/chat/new": {"post": operation("Start a new conversation (the current one is kept)",
                                            {200: "NewConversation"}, (401, 409, 503), tag="chat")},
        "/api/ag-ui": {"post": operation(
            "Run the chat as an AG-UI agent: RunAgentInput in, AG-UI events out (docs/ag-ui.md)",
            {200: event_stream("SSE: `data:` lines of AG-UI events, `id:` cursors for Last-Event-ID")},
            (400, 401, 404), body={"required": True, "content": {"application/json": {"schema": ref("RunAgentInput")}}},
            params=(LAST_EVENT_ID,), tag="ag-ui")},
        "/api/openapi.json": {"get": {"summary": "This description", "tags": ["meta"], "responses": {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/-/health": {"get": {"summary": "200 when a write round trip through the store succeeds", "tags": ["meta"],
                              "responses": {"200": {"description": "Healthy", "content": {
                                  "application/json": {"schema": ref("Health")}}},
                                  "503": {"description": "Not healthy (reason)", "content": {
                                      "application/json": {"schema": ref("Health")}}}}}},
        "/-/plugins": {"get": {"summary": "The plugins loaded", "tags": ["meta"], "responses": {"200": {
            "description": "OK", "content": {"application/json": {"schema": {"type": "array",
                                                                             "items": ref("Plugin")}}}}}}},
        "/-/metrics": {"get": {"summary": "Prometheus text exposition (loopback, or QUANDA_METRICS_TOKEN)",
                               "tags": ["meta"], "responses": {
                                   "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                                   "403": {"description": ERRORS[403], "content": {
                                       "application/json": {"schema": ref("Error")}}}}}},
    }


@lru_cache(maxsize=1)
def full_description() -> dict[str, Any]:
    agui = RunAgentInput.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    schemas = {**agui.pop("$defs", {}), **SCHEMAS, "RunAgentInput": agui}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Quanda HTTP API", "version": VERSION,
                 "description": "Durable streaming messages, the chat, and an AG-UI agent endpoint."},
        "components": {"schemas": schemas, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer",
                       "description": "QUANDA_API_TOKEN (local mode) or a user's token (accounts mode)"},
            "session": {"type": "apiKey", "in": "cookie", "name": "quanda_session"}}},
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths(),
    }


def described_routes(description: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in description["paths"].items() for method in ops}


def mounted_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every HTTP API route the app has: under /api/ or /-/, HEAD left out."""
    found = set()
    for route in app.routes:
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None) or ()
        if path.startswith(("/api/", "/-/")):
            found |= {(m, path) for m in methods if m != "HEAD"}
    return found


def description_for(app: Any) -> dict[str, Any]:
    full = full_description()
    mounted = {path for _m, path in mounted_routes(app)}
    return {**full, "paths": {path: ops for path, ops in full["paths"].items() if path in mounted}}


async def openapi_endpoint(request):  # (no annotation: FastHTML passes `request` by its name)
    return JSONResponse(description_for(request.app))
