"""A scriptable LLM server on a loopback port, for tests and benchmarks.

It speaks both wire protocols the app uses, over real HTTP/1.1 (chunked bodies):
Ollama ``POST /api/chat`` (NDJSON), ``GET /api/tags`` and ``POST /api/show``; OpenAI-compatible
``POST /v1/chat/completions`` (SSE) and ``GET /v1/models``. Replies come from a script::

    async with LLMTestServer(Reply(chunks=["Hel", "lo"])) as srv:
        OllamaDriver(srv.url)                      # Ollama wire
        OpenAIDriver(srv.openai_url)               # OpenAI wire (srv.url + "/v1")
        srv.script = Reply(chunks=[Chunk(thinking="hm"), "Hi"], end="stall")
        srv.script = [Reply(...), Reply(...)]      # one per chat request, in order
        srv.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", {"name": "x"})])]),
                            Reply(chunks=["Added."]))  # by tool round: before / after a tool result
        srv.chat_requests[-1].json["messages"]     # what the client sent
        assert await srv.wait_disconnect()         # a client left a stream before its end

``async with`` serves on the running event loop; ``with`` serves from a background thread (for
synchronous code, or an app under test running in another process). ``python tests/llm_server.py``
serves a steady stream of tokens for manual runs and benchmarks.

Faults: ``Reply(status=500)`` fails before the stream; ``end=`` ``"error"`` (an error line instead of
the final line), ``"truncate"`` (clean end without it), ``"drop"`` (connection cut), ``"stall"``
(silence until the client leaves); ``Raw(b"...")`` writes bytes verbatim (a non-JSON line, an SSE
comment); ``split=n`` writes every frame in ``n``-byte pieces (lines and UTF-8 characters split across
network writes); ``SSE(...)`` picks OpenAI-wire details (CRLF, ``data:`` without a space, keep-alive
comments, multi-line data, reasoning field, llama.cpp or vLLM error style). A chat request for a model
not in ``srv.models`` gets a 404, as from the real servers.

Tools: ``Chunk(tool_calls=[ToolCall(name, arguments)])`` streams calls in each wire's format (Ollama:
whole calls; OpenAI: an opening fragment with id and name, then the arguments in ``SSE.tool_fragment``
-character pieces, several calls interleaved unless ``SSE.tool_interleave=False``); ``arguments`` given
as a string is sent verbatim (malformed arguments). ``srv.reject_tools = 400`` refuses every request
that carries ``tools`` (as llama.cpp without ``--jinja``, vLLM without auto tool choice, or Ollama for
a model without tools); ``srv.capabilities[model]`` is what ``/api/show`` lists. Tool-round messages
sent back are checked as the real servers check them (an OpenAI ``tool`` message must answer a
``tool_call_id`` of the assistant message before it; Ollama's arguments must be an object): a request
that breaks the rules gets a 400 saying why.

Kinds of real servers (``LLMTestServer(kind=...)``, tests/llm_kinds.py): ``"llama-cpp-python"`` interrupts a
running stream at any new request and answers an over-long streamed request with an empty 200;
``"llama.cpp"`` has ``/props`` and ``/tokenize`` and refuses an over-long request with a 400 naming ``n_ctx``;
every kind sends ``usage`` when asked (but llama-cpp-python), and the Ollama wire cuts an over-long prompt
from the front silently (``srv.dropped_tokens``). ``srv.window`` is the window, ``srv.prompt_tokens`` what
each chat request's prompt counted, ``srv.interrupted`` how many streams a new request ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from tests import llm_kinds

NOW = "2025-01-01T00:00:00Z"
PIECE_PAUSE_S = 0.001
Frames = list[tuple[float | None, bytes]]  # per line/event: (delay before it, None = the reply's; bytes)


@dataclass
class ToolCall:
    """A complete tool call; the OpenAI wire streams its arguments as fragments.

    ``arguments``: a dict, or a string sent verbatim (to script malformed JSON). ``id``: the call's id
    on the wire (OpenAI default ``call_<index>``; Ollama sends none unless given).
    """

    name: str
    arguments: dict | str = field(default_factory=dict)
    id: str | None = None


@dataclass
class Chunk:
    """One streamed message: answer text, thinking text and/or tool calls."""

    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    delay: float | None = None


@dataclass
class Raw:
    """Bytes written verbatim as one frame."""

    data: bytes
    delay: float | None = None


@dataclass
class SSE:
    """How the OpenAI wire is written."""

    crlf: bool = False
    no_space: bool = False
    keepalive: bool = False
    multiline: bool = False
    reasoning_field: str = "reasoning_content"
    error_style: Literal["data", "field"] = "data"
    done_after_error: bool = True
    tool_fragment: int | None = 7  # characters of arguments per delta; None: all in the opening one
    tool_interleave: bool = True  # fragments of several calls round-robin, else one call after another
    tool_ids: bool = True  # the opening fragment carries an id
    tool_index_zero: bool = False  # every call says index 0 (told apart by their ids only)


@dataclass
class Reply:
    """The script of one chat answer.

    ``chunks``: strings (answer text), ``Chunk`` or ``Raw`` frames. ``final``: text carried by the
    final line. ``delay``: seconds before each frame unless the frame sets its own. ``status``: not
    200 answers that status with the protocol's JSON error body and no stream. ``done_reason``
    defaults to what the servers say: ``"tool_calls"`` on the OpenAI wire after calls, else ``"stop"``.
    """

    chunks: list[str | Chunk | Raw] = field(default_factory=list)
    final: str = ""
    done_reason: str | None = None
    end: Literal["done", "error", "truncate", "drop", "stall"] = "done"
    error: str = "scripted failure"
    status: int = 200
    delay: float = 0.0
    split: int | None = None
    sse: SSE = field(default_factory=SSE)


class Rounds:
    """Replies by tool round: ``replies[k]`` answers a request whose messages hold ``k`` assistant
    messages with tool calls after the last user message (0: the first call of a turn; 1: after the
    first tool results; …). The last reply answers any later round. Usable as ``srv.script`` or as an
    element of a script queue; a Retry of a round gets the same reply again."""

    def __init__(self, *replies: Reply) -> None:
        if not replies:
            raise ValueError("Rounds needs at least one reply")
        self.replies = list(replies)

    def __call__(self, request: RecordedRequest) -> Reply:
        return self.replies[min(tool_round(request.json), len(self.replies) - 1)]


def tool_round(body: Any) -> int:
    """How many tool rounds a chat request's messages hold since the last user message."""
    messages = body.get("messages") if isinstance(body, dict) else None
    rounds = 0
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            rounds = 0
        elif message.get("role") == "assistant" and message.get("tool_calls"):
            rounds += 1
    return rounds


Script = Reply | Callable[["RecordedRequest"], Reply]


@dataclass
class RecordedRequest:
    """A request the server received; ``json`` is the decoded body (None when empty or not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


class LLMTestServer:
    """The server. ``url`` is the Ollama base URL, ``openai_url`` the OpenAI one (``url + "/v1"``)."""

    def __init__(
        self,
        script: Script | list[Script] | None = None,
        *,
        models: list[str] | None = None,
        api_key: str | None = None,
        port: int = 0,
        kind: str = "generic",
    ) -> None:
        llm_kinds.configure(self, kind)
        self.script = script if script is not None else Reply()
        self.models = list(models) if models is not None else ["quanda-test"]
        self.api_key = api_key
        self.port = port
        #: answer every chat request that carries ``tools`` with this status (None: accept tools)
        self.reject_tools: int | None = None
        self.reject_tools_message = "tools param requires --jinja flag"
        #: ``/api/show`` capabilities per model (default ``["completion", "tools"]``; None: not listed,
        #: as from an Ollama too old to say)
        self.capabilities: dict[str, list[str] | None] = {}
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task] = set()
        self._changed: asyncio.Condition | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def script(self) -> Script | deque[Script]:
        """The reply for every chat request (a ``Reply``, or a function of the request such as
        ``Rounds``), or a queue of them consumed one per request."""
        return self._script

    @script.setter
    def script(self, value: Script | list[Script]) -> None:
        self._script = deque(value) if isinstance(value, list) else value

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat requests received, oldest first."""
        return [r for r in self.requests if r.path in ("/api/chat", "/v1/chat/completions")]

    async def start(self) -> None:
        """Serve on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and end every open connection."""
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def __aenter__(self) -> LLMTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> LLMTestServer:
        started = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve_in_thread(started),), daemon=True
        )
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("LLMTestServer did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve_in_thread(self, started: threading.Event) -> None:
        self._stop = asyncio.Event()
        await self.start()
        started.set()
        await self._stop.wait()
        await self.stop()

    async def wait_disconnect(self, count: int = 1, timeout: float = 5.0) -> bool:
        """True once ``count`` clients in all have left a stream before its end; False on timeout."""
        assert self._loop is not None
        waiting = self._wait_disconnect(count, timeout)
        if asyncio.get_running_loop() is self._loop:
            return await waiting
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(waiting, self._loop))

    async def _wait_disconnect(self, count: int, timeout: float) -> bool:
        assert self._changed is not None
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self.disconnects >= count), timeout)
            except TimeoutError:
                return False
        return True

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = await _read_request(reader)
            if request is not None:
                self.requests.append(request)
                await llm_kinds.interrupt_running(self)
                await self._route(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop() ends open streams; a cancelled handler would upset asyncio's stream callback
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _route(
        self, req: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        openai = req.path.startswith("/v1/")
        if openai and self.api_key and req.headers.get("authorization") != f"Bearer {self.api_key}":
            await _send_json(writer, 401, _error_body(True, "Invalid API key", 401))
        elif (req.method, req.path) == ("GET", "/api/tags"):
            tags = [{"name": m, "model": m, "modified_at": NOW, "size": 1} for m in self.models]
            await _send_json(writer, 200, {"models": tags})
        elif (req.method, req.path) == ("GET", "/v1/models"):
            data = [{"id": m, "object": "model", "owned_by": "quanda-test"} for m in self.models]
            await _send_json(writer, 200, {"object": "list", "data": data})
        elif (req.method, req.path) == ("POST", "/api/show"):
            await self._show(req, writer)
        elif req.method == "POST" and req.path in ("/api/chat", "/v1/chat/completions"):
            await self._chat(req, openai, reader, writer)
        elif await llm_kinds.route(self, req, _send_json, writer):
            pass
        else:
            await _send_json(writer, 404, {"error": f"no route for {req.method} {req.path}"})

    async def _show(self, req: RecordedRequest, writer: asyncio.StreamWriter) -> None:
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model") or body.get("name")
        if model not in self.models:
            await _send_json(writer, 404, {"error": f"model '{model}' not found"})
            return
        info: dict = {"modelfile": "", "template": "{{ .Prompt }}", "details": {"format": "gguf"},
                      "model_info": llm_kinds.model_info(self)}
        capabilities = self.capabilities.get(model, ["completion", "tools"])
        if capabilities is not None:
            info["capabilities"] = list(capabilities)
        await _send_json(writer, 200, info)

    def _next_reply(self, req: RecordedRequest) -> Reply | None:
        script = self._script
        if isinstance(script, deque):
            if not script:
                return None
            script = script.popleft()
        return script if isinstance(script, Reply) else script(req)

    async def _chat(
        self, req: RecordedRequest, openai: bool, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model")
        if self.reject_tools is not None and body.get("tools"):
            error = _error_body(openai, self.reject_tools_message, self.reject_tools)
            await _send_json(writer, self.reject_tools, error)
            return
        problem = _check_messages(body.get("messages"), openai)
        if problem:
            await _send_json(writer, 400, _error_body(openai, problem, 400))
            return
        reply = self._next_reply(req)
        if reply is None:
            await _send_json(writer, 500, _error_body(openai, "LLMTestServer: no scripted reply left", 500))
            return
        if model not in self.models:
            message = f"model '{model}' not found" if not openai else f"The model `{model}` does not exist."
            await _send_json(writer, 404, _error_body(openai, message, 404))
            return
        if reply.status != 200:
            await _send_json(writer, reply.status, _error_body(openai, reply.error, reply.status))
            return
        refused = llm_kinds.over_window(self, body, openai)
        if refused is not None:
            status, error = refused
            if error is None:  # llama-cpp-python: an empty 200
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n0\r\n\r\n")
                await writer.drain()
            else:
                await _send_json(writer, status, error)
            return
        frames = _openai_frames(reply, model, self, body) if openai else _ollama_frames(reply, model, self)
        ctype = "text/event-stream" if openai else "application/x-ndjson"
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        finished, interrupted = asyncio.Event(), asyncio.Event()
        self.running.add(interrupted)
        stream = asyncio.ensure_future(_write_stream(writer, reply, frames, finished, interrupted if openai else None))
        watch = asyncio.ensure_future(_wait_eof(reader))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.running.discard(interrupted)
            for task in (stream, watch):
                task.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
        if stream.done() and not stream.cancelled() and stream.exception() and not _failed(stream):
            raise stream.exception()  # type: ignore[misc]
        left_early = not finished.is_set() and (watch.done() and not watch.cancelled() or _failed(stream))
        if left_early:
            assert self._changed is not None
            async with self._changed:
                self.disconnects += 1
                self._changed.notify_all()


def _failed(task: asyncio.Future) -> bool:
    return task.done() and not task.cancelled() and isinstance(task.exception(), ConnectionError)


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


async def _write_stream(
    writer: asyncio.StreamWriter, reply: Reply, frames: Frames, finished: asyncio.Event,
    interrupted: asyncio.Event | None = None,
) -> None:
    pieces: list[tuple[float, bytes]] = []
    for delay, frame in frames:
        step = reply.split or len(frame) or 1
        for i in range(0, len(frame), step):
            pause = (reply.delay if delay is None else delay) if i == 0 else PIECE_PAUSE_S
            pieces.append((pause, frame[i : i + step]))
    for n, (pause, piece) in enumerate(pieces):
        if pause:
            await asyncio.sleep(pause)
        if interrupted is not None and interrupted.is_set():  # llama-cpp-python: [DONE], no finish_reason
            finished.set()
            writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
            return
        last = n == len(pieces) - 1
        if last and reply.end in ("done", "error", "truncate"):
            finished.set()
            writer.write(_http_chunk(piece) + b"0\r\n\r\n")
        else:
            writer.write(_http_chunk(piece))
        await writer.drain()
    if not pieces and reply.end != "stall":
        finished.set()
        writer.write(b"0\r\n\r\n")
    if reply.end == "drop":
        finished.set()
        writer.transport.abort()
    elif reply.end == "stall":
        if interrupted is not None:
            await interrupted.wait()
            writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
            return
        await asyncio.sleep(3600)


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):X}\r\n".encode() + data + b"\r\n"


def _chunks(reply: Reply) -> list[Chunk | Raw]:
    return [Chunk(content=c) if isinstance(c, str) else c for c in reply.chunks]


def _go_json(obj: Any) -> bytes:
    """JSON as Go's encoder writes it (Ollama): ``<``, ``>``, ``&``, U+2028/9 escaped."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for char in "<>&\u2028\u2029":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return (text + "\n").encode()


def _ollama_frames(reply: Reply, model: str, srv: Any = None) -> Frames:
    frames: Frames = []
    calls = 0
    for chunk in _chunks(reply):
        if isinstance(chunk, Raw):
            frames.append((chunk.delay, chunk.data))
            continue
        message: dict = {"role": "assistant", "content": chunk.content}
        if chunk.thinking:
            message["thinking"] = chunk.thinking
        if chunk.tool_calls:
            message["tool_calls"] = []
            for c in chunk.tool_calls:
                call: dict = {"function": {"index": calls, "name": c.name, "arguments": c.arguments}}
                if c.id:
                    call["id"] = c.id
                message["tool_calls"].append(call)
                calls += 1
        line = {"model": model, "created_at": NOW, "message": message, "done": False}
        frames.append((chunk.delay, _go_json(line)))
    if reply.end == "done":
        final = {
            "model": model,
            "created_at": NOW,
            "message": {"role": "assistant", "content": reply.final},
            "done": True,
            "done_reason": reply.done_reason or "stop",
            "total_duration": 1000,
            "eval_count": len(frames),
        }
        if srv is not None:
            final.update(llm_kinds.ollama_final(srv, len(frames)))
        frames.append((None, _go_json(final)))
    elif reply.end == "error":
        frames.append((None, _go_json({"error": reply.error})))
    return frames


def _openai_frames(reply: Reply, model: str, srv: Any = None, body: dict | None = None) -> Frames:
    style = reply.sse

    def event(obj: Any, field_name: str = "data") -> bytes:
        nl = "\r\n" if style.crlf else "\n"
        sep = ":" if style.no_space else ": "
        indent = 1 if style.multiline else None
        text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=indent)
        head = f": keep-alive{nl}{nl}" if style.keepalive else ""
        return (head + "".join(f"{field_name}{sep}{line}{nl}" for line in text.split("\n")) + nl).encode()

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0, "model": model}
        return event({**obj, "choices": [choice]})

    frames: Frames = [(0.0, chunk({"role": "assistant", "content": None}))]
    next_index = 0
    for item in _chunks(reply):
        if isinstance(item, Raw):
            frames.append((item.delay, item.data))
            continue
        delta: dict = {}
        if item.thinking:
            delta[style.reasoning_field] = item.thinking
        if item.content:
            delta["content"] = item.content
        if delta:
            frames.append((item.delay, chunk(delta)))
        for fragment in _tool_call_fragments(item.tool_calls, next_index, style):
            frames.append((item.delay, chunk({"tool_calls": [fragment]})))
        next_index += len(item.tool_calls)
    if reply.end == "done":
        finish = reply.done_reason or ("tool_calls" if next_index else "stop")
        frames.append((None, chunk({"content": reply.final} if reply.final else {}, finish)))
        usage = llm_kinds.openai_usage_chunk(srv, body or {}, model, len(frames) - 2) if srv is not None else None
        if usage is not None:
            frames.append((None, event(usage)))
        frames.append((None, event("[DONE]")))
    elif reply.end == "error":
        error = {"code": 500, "message": reply.error, "type": "server_error"}
        if style.error_style == "field":
            frames.append((None, event(error, "error")))
        else:
            frames.append((None, event({"error": error})))
        if style.done_after_error:
            frames.append((None, event("[DONE]")))
    return frames


def _tool_call_fragments(calls: list[ToolCall], first_index: int, style: SSE) -> list[dict]:
    """Streamed ``tool_calls`` deltas: per call an opening fragment (index, id, type, name, the first
    piece of the arguments), then the rest of its arguments in ``style.tool_fragment``-character
    pieces, calls round-robin when ``style.tool_interleave``."""
    openings: list[dict] = []
    rests: list[list[dict]] = []
    for offset, call in enumerate(calls):
        index = 0 if style.tool_index_zero else first_index + offset
        args = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        size = style.tool_fragment or len(args) or 1
        pieces = [args[i : i + size] for i in range(0, len(args), size)] or [""]
        opening: dict = {"index": index, "type": "function"}
        if style.tool_ids:
            opening["id"] = call.id or f"call_{first_index + offset}"
        opening["function"] = {"name": call.name, "arguments": pieces[0]}
        openings.append(opening)
        rests.append([{"index": index, "function": {"arguments": piece}} for piece in pieces[1:]])
    if not style.tool_interleave:
        return [fragment for opening, rest in zip(openings, rests) for fragment in (opening, *rest)]
    out = list(openings)
    for step in range(max((len(rest) for rest in rests), default=0)):
        out += [rest[step] for rest in rests if step < len(rest)]
    return out


def _check_messages(messages: Any, openai: bool) -> str | None:
    """Why a chat request's messages would be refused by a real server (None when they would not):
    the tool-round rules of each wire."""
    if not isinstance(messages, list):
        return "messages must be an array"
    pending: list[str] = []  # OpenAI: tool_call_ids the last assistant message still waits for
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{i}] must be an object with a role"
        role, content = message["role"], message.get("content")
        if openai and role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return (f"messages[{i}]: a message with role 'tool' must be a response to a preceding "
                        f"message with 'tool_calls' (tool_call_id {call_id!r})")
            pending.remove(call_id)
        elif pending:
            return (f"messages[{i}]: an assistant message with 'tool_calls' must be followed by tool "
                    f"messages responding to each 'tool_call_id' (missing: {', '.join(pending)})")
        if content is not None and not isinstance(content, str):
            return f"messages[{i}].content must be a string"
        if role == "assistant" and message.get("tool_calls") is not None:
            problem, pending = _check_tool_calls(i, message["tool_calls"], openai)
            if problem:
                return problem
        if not openai and role == "tool" and not isinstance(message.get("tool_name", ""), str):
            return f"messages[{i}].tool_name must be a string"
    if pending:
        return f"the tool calls {', '.join(pending)} have no tool message answering them"
    return None


def _check_tool_calls(i: int, calls: Any, openai: bool) -> tuple[str | None, list[str]]:
    if not isinstance(calls, list):
        return f"messages[{i}].tool_calls must be an array", []
    ids: list[str] = []
    for j, call in enumerate(calls):
        where = f"messages[{i}].tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return f"{where} needs a function with a name", []
        arguments = fn.get("arguments")
        if openai:
            if not isinstance(call.get("id"), str) or not call["id"] or call.get("type") != "function":
                return f"{where} needs an id and type 'function'", []
            if not isinstance(arguments, str):
                return f"{where}.function.arguments must be a string (JSON text)", []
            try:
                json.loads(arguments)  # llama.cpp parses them to render its chat template
            except ValueError:
                return f"{where}.function.arguments is not valid JSON", []
            ids.append(call["id"])
        elif not isinstance(arguments, dict):
            return (f"json: cannot unmarshal {type(arguments).__name__} into Go struct field "
                    f"{where}.function.arguments of type api.ToolCallFunctionArguments"), []
    return None, ids


def _error_body(openai: bool, message: str, status: int) -> dict:
    if openai:
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": status}}
    return {"error": message}


async def _send_json(writer: asyncio.StreamWriter, status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    raw = await reader.readexactly(length) if length else b""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return RecordedRequest(method, target.split("?", 1)[0], headers, body)


def main() -> None:
    """Serve a steady token stream until interrupted (for manual runs and benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=11435)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.0005, help="seconds between tokens")
    parser.add_argument("--model", default="quanda-test")
    args = parser.parse_args()
    reply = Reply(chunks=[f"token{i} " for i in range(args.tokens)], delay=args.delay)

    async def serve() -> None:
        async with LLMTestServer(reply, models=[args.model], port=args.port) as srv:
            print(f"Ollama at {srv.url}, OpenAI at {srv.openai_url}, model {args.model!r}", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
