"""The WebSocket transport: sessions ↔ connections, per-connection stream followers with coalescing,
resume by seq, and clear errors for bad client frames.

A browser session may have several tabs (connections). Fragments for a session go to its connections
only. A stream (a QuandaMessage shown on the page) is followed per connection from the seq the page
holds, rendered by a `StreamView` chosen by the message's role, and sent as out-of-band FT fragments:
the first update at once, then at most one frame per FRAME_INTERVAL_S, whatever the token rate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol

from fasthtml.common import Div, to_xml

from app.client_json import ClientJSONError, parse_client_json
from app.components import ids
from app.quanda import QuandaError, QuandaMessage, QuandaReader, QuandaToken
from app.quanda.validation import check_seq

log = logging.getLogger("quanda.ws")

FRAME_INTERVAL_S = 0.020
MAX_CLIENT_FRAME_BYTES = 64 * 1024
MAX_FOLLOWED_STREAMS = 64


class StreamView(Protocol):
    """Turns a message's tokens into fragments for one connection; holds only what it has yet to send."""

    def feed(self, token: QuandaToken) -> None: ...

    def flush(self) -> list[Any]: ...


ViewFactory = Callable[[str], StreamView]
Handler = Callable[["Connection", dict], Awaitable[None]]


def Notice(text: str, kind: str = "error"):
    """A visible message at the top of the page (replaces the previous one)."""
    return Div(text, id=ids.NOTICE, cls=f"notice {kind}", role="alert", hx_swap_oob="true")


class ClientError(Exception):
    """A client frame we refuse; the text is shown to the user."""


class Connection:
    def __init__(self, hub: "Hub", ws: Any, sid: str):
        self.hub, self.ws, self.sid = hub, ws, sid
        self.followers: dict[str, Follower] = {}
        self._lock = asyncio.Lock()
        self.closed = False

    async def send(self, *fragments: Any) -> None:
        if fragments:
            await self.send_text("".join(to_xml(f, indent=False) for f in fragments))

    async def send_text(self, text: str) -> None:
        if self.closed:
            return
        async with self._lock:  # one frame at a time, so fragments never interleave
            try:
                await self.ws.send_text(text)
            except Exception as exc:  # the socket went away under us
                log.debug("send failed: %s", exc)
                self.close()

    def attach(self, message_id: str, follower: "Follower") -> None:
        """Follow a stream through `follower` (replacing any earlier following of it)."""
        old = self.followers.pop(message_id, None)
        if old is not None and old is not follower:
            old.leave(self)
        if len(self.followers) >= MAX_FOLLOWED_STREAMS:
            raise ClientError(f"too many streams followed at once (at most {MAX_FOLLOWED_STREAMS})")
        self.followers[message_id] = follower
        follower.join(self)

    def close(self) -> None:
        self.closed = True
        for follower in self.followers.values():
            follower.leave(self)
        self.followers.clear()


class Follower:
    """Follows one message from one position for every tab that asked for exactly that: one reader, one
    view, one render per frame, the same text sent to each tab. Tabs join only until the first frame goes
    out; a tab asking later (another position, a reconnect) gets a follower of its own."""

    def __init__(self, hub: "Hub", message_id: str, after_seq: int | None, view: StreamView):
        self.hub, self.message_id, self.after_seq, self.view = hub, message_id, after_seq, view
        self.conns: set[Connection] = set()
        self.sent = False
        self.task = asyncio.create_task(self._run(), name=f"follow-{message_id}")

    def join(self, conn: Connection) -> None:
        self.conns.add(conn)

    def leave(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if not self.conns:
            self.task.cancel()

    async def _send(self, fragments: list[Any]) -> None:
        text = "".join(to_xml(f, indent=False) for f in fragments)
        for conn in list(self.conns):
            await conn.send_text(text)

    async def _run(self) -> None:
        try:
            message = await QuandaMessage.from_id(self.hub.store, self.message_id)
        except QuandaError as exc:
            await self._send([Notice(str(exc))])
            return
        dirty = asyncio.Event()
        ended: list[BaseException | None] = []

        async def pump() -> None:
            try:
                async for token in QuandaReader(message, after_seq=self.after_seq):
                    self.view.feed(token)
                    dirty.set()
                ended.append(None)
            except QuandaError as exc:
                ended.append(exc)
            finally:
                dirty.set()

        pump_task = asyncio.create_task(pump())
        loop = asyncio.get_running_loop()
        try:
            while True:
                await dirty.wait()
                dirty.clear()
                started = loop.time()
                fragments = self.view.flush()
                if fragments:
                    self.sent = True
                    await self._send(fragments)
                if ended or not self.conns:
                    break
                # frame pacing, timed from the frame's start, with a floor so a late server still batches:
                # whatever arrives meanwhile joins the next frame
                now = loop.time()
                await asyncio.sleep(max(started + FRAME_INTERVAL_S, now + 0.75 * FRAME_INTERVAL_S) - now)
            if ended and ended[0] is not None:
                await self._send([Notice(f"stream interrupted: {ended[0]}")])
        finally:
            pump_task.cancel()
            for conn in list(self.conns):
                if conn.followers.get(self.message_id) is self:
                    del conn.followers[self.message_id]


class Hub:
    """Every open connection, grouped by browser session."""

    def __init__(self, store: Any):
        self.store = store
        self.sessions: dict[str, set[Connection]] = {}
        self.connections: dict[Any, Connection] = {}
        self.handlers: dict[str, Handler] = {"follow": self._on_follow}
        self.views: dict[str, ViewFactory] = {}
        self._joinable: dict[tuple[str, int | None, int], Follower] = {}

    def connect(self, ws: Any, sid: str) -> Connection:
        conn = Connection(self, ws, sid)
        self.connections[ws] = conn
        self.sessions.setdefault(sid, set()).add(conn)
        log.debug("session %s: %d connection(s)", sid[:8], len(self.sessions[sid]))
        return conn

    def disconnect(self, ws: Any) -> None:
        conn = self.connections.pop(ws, None)
        if conn is None:
            return
        conn.close()
        conns = self.sessions.get(conn.sid)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.sessions[conn.sid]

    async def broadcast(self, sid: str, *fragments: Any) -> None:
        """Send to every tab of one session (never to another session)."""
        await asyncio.gather(*(conn.send(*fragments) for conn in list(self.sessions.get(sid, ()))))

    async def close(self) -> None:
        for conn in list(self.connections.values()):
            conn.close()

    # -- incoming frames -------------------------------------------------------------------------------

    async def receive(self, ws: Any, data: dict) -> None:
        conn = self.connections.get(ws)
        if conn is None:
            return
        action = data.get("action")
        handler = self.handlers.get(action) if isinstance(action, str) else None
        try:
            if handler is None:
                raise ClientError(f"unknown action {action!r}" if action else "message without an action")
            await handler(conn, data)
        except ClientError as exc:
            log.info("refused client message (%s): %s", conn.sid[:8], exc)
            await conn.send(Notice(str(exc)))
        except QuandaError as exc:
            log.warning("action %s failed: %s", action, exc)
            await conn.send(Notice(str(exc)))

    async def _on_follow(self, conn: Connection, data: dict) -> None:
        streams = data.get("streams")
        if not isinstance(streams, dict):
            raise ClientError("follow needs {'streams': {message_id: seq}}")
        if len(streams) > MAX_FOLLOWED_STREAMS:
            raise ClientError(f"too many streams followed at once (at most {MAX_FOLLOWED_STREAMS})")
        for message_id, seq in streams.items():
            try:
                seq = check_seq(seq)
            except QuandaError:
                raise ClientError(f"bad seq for stream {str(message_id)[:40]!r}: a whole number ≥ 0") from None
            owner = await self.store.get_record("owner", message_id) if isinstance(message_id, str) else None
            if owner is None or owner.get("sid") != conn.sid:
                raise ClientError(f"no stream {str(message_id)[:40]!r} in this session")
            factory = self.views.get(owner.get("role", ""))
            if factory is None:
                raise ClientError(f"stream {message_id} cannot be shown here")
            conn.attach(message_id, self._follower(message_id, seq, factory))

    def _follower(self, message_id: str, seq: int, factory: ViewFactory) -> Follower:
        """A follower for tabs that hold `seq` of the stream: a new one, or one not yet sending."""
        view = factory(message_id)
        snapshot = getattr(view, "snapshot", False)  # views that re-render from a snapshot, not resume mid-way
        key = (message_id, None if snapshot else seq, seq)
        follower = self._joinable.get(key)
        if follower is not None and not follower.sent and not follower.task.done():
            return follower
        if snapshot:
            view.page_seq = seq
        follower = Follower(self, message_id, None if snapshot else seq, view)
        self._joinable[key] = follower
        follower.task.add_done_callback(lambda _t: self._joinable.get(key) is follower and self._joinable.pop(key))
        return follower


class FrameGuard:
    """ASGI middleware on the WebSocket route: frames that are not JSON objects, or too large, are answered
    with a visible error and never reach FastHTML (which would answer with bare text); the socket stays up."""

    def __init__(self, app: Any, max_bytes: int = MAX_CLIENT_FRAME_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)

        async def guarded_receive() -> dict:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                problem = self.check(message)
                if problem is None:
                    return message
                log.info("refused WebSocket frame: %s", problem)
                await send({"type": "websocket.send", "text": to_xml(Notice(problem))})

        return await self.app(scope, guarded_receive, send)

    def check(self, message: dict) -> str | None:
        text = message.get("text")
        if text is None:
            return "binary frames are not accepted"
        if len(text) > self.max_bytes or len(text.encode()) > self.max_bytes:
            return f"message too large ({len(text.encode())} bytes; at most {self.max_bytes})"
        try:
            value = parse_client_json(text)
        except ClientJSONError as exc:
            return f"malformed message ({exc})" if "nested" in str(exc) else "malformed message (not JSON)"
        if not isinstance(value, dict):
            return "malformed message (expected a JSON object)"
        return None

