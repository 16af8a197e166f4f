"""The WebSocket transport: owners ↔ connections (tabs), the streams each tab follows with coalesced frames,
the facts rendered for each tab, and clear errors for bad client frames.

An owner may have several tabs (connections), on this server and on others. A tab tells which page it shows
and which streams are on it (`view`), and when new streams appear (`follow`); each stream is followed from
the seq the page holds, rendered by a `StreamView` chosen by the message's role, and sent as out-of-band FT
fragments (app/follow.py). Facts published through
the store (by any server) are rendered here for this server's tabs of their owner, by the plugins' fact views.
What one client may ask — frames per second per connection and per owner, connections per owner and per
address — is limited here, with the numbers and rules of app/ratelimit.py.

Over 300 lines in one module: the hub's registry of tabs, their follows and the frame guard share the
connection state and its locking; split, each part would reach into the others'.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from fasthtml.common import to_xml

from quanda import metrics
from quanda.client_json import ClientJSONError, parse_client_json
from quanda.components.auth import SignedOut
from quanda.components.layout import Notice
from quanda.context import ClientError, Handle
from quanda.ownership import role_if_owned
from quanda.fanout import send_to_all
from quanda.follow import Follower, StreamView
from quanda.core import QuandaError, QuandaStoreError
from quanda.core.validation import check_seq
from quanda.ratelimit import NOTICE_EVERY_S, STRAINED_S, Limits

log = logging.getLogger("quanda.ws")

MAX_CLIENT_FRAME_BYTES = 64 * 1024
MAX_FOLLOWED_STREAMS = 64
OWNER_SCOPE = "quanda.owner"  # set in the socket's ASGI scope once its owner is known: FrameGuard paces by it


ViewFactory = Callable[[str], StreamView]
Handler = Callable[[Handle, dict], Awaitable[None]]
FactRenderer = Callable[[str, dict, Handle], Awaitable[list[Any]]]
HandleFactory = Callable[..., Handle]


class Connection:
    def __init__(self, hub: "Hub", ws: Any, owner: str, login: str | None = None, address: str = ""):
        self.hub, self.ws, self.owner, self.login, self.address = hub, ws, owner, login, address
        self.page: str | None = None
        self.followers: dict[str, Follower] = {}
        self.ended: set[str] = set()  # streams of the page followed to their end
        self._lock = asyncio.Lock()
        self.closed = False
        self.unwatch: Callable[[], None] | None = None  # stops watching its credential for revocation

    async def send(self, *fragments: Any) -> None:
        if fragments:
            await self.send_text("".join(to_xml(f, indent=False) for f in fragments))

    async def send_text(self, text: str) -> None:
        if self.closed:
            return
        async with self._lock:  # one frame at a time, so fragments never interleave
            try:
                await self.ws.send_text(text)
                metrics.FRAMES_OUT.inc()
            except Exception as exc:  # the socket went away under us
                log.debug("send failed: %s", exc)
                self.close()

    def attach(self, message_id: str, follower: "Follower") -> None:
        """Follow a stream through `follower` (replacing any earlier following of it)."""
        self.detach(message_id)
        if len(self.followers) >= MAX_FOLLOWED_STREAMS:
            raise ClientError(f"too many streams followed at once (at most {MAX_FOLLOWED_STREAMS})")
        self.followers[message_id] = follower
        self.ended.discard(message_id)
        follower.join(self)
        follower.task.add_done_callback(lambda task: self._ended(message_id, follower, task))

    def _ended(self, message_id: str, follower: Any, task: asyncio.Task) -> None:
        """A stream followed to its end need not be followed again while the page shows it."""
        if not task.cancelled() and self in follower.conns and not self.closed:
            self.ended.add(message_id)

    def detach(self, message_id: str) -> None:
        old = self.followers.pop(message_id, None)
        if old is not None:
            old.leave(self)

    def close(self) -> None:
        self.closed = True
        if self.unwatch is not None:
            self.unwatch()
            self.unwatch = None
        for follower in self.followers.values():
            follower.leave(self)
        self.followers.clear()


class Hub:
    """Every open connection of this server, grouped by owner."""

    def __init__(self, store: Any, handlers: dict[str, Handler], views: dict[str, ViewFactory],
                 render_fact: FactRenderer, handle: HandleFactory, limits: Limits | None = None,
                 health: Any = None):
        self.store, self.views, self.render_fact, self.handle = store, views, render_fact, handle
        self.limits, self.health = limits, health
        if health is not None:
            health.listen(self.on_store_health)
        self.handlers: dict[str, Handler] = {"follow": self._on_follow, "view": self._on_view, **handlers}
        self.owners: dict[str, set[Connection]] = {}
        self.connections: dict[Any, Connection] = {}
        self._joinable: dict[tuple[str, int | None, int], Follower] = {}
        self._facts: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self._closing: set[asyncio.Task] = set()
        self._fact_task: asyncio.Task | None = None
        self._stop_listening: Callable[[], None] | None = None

    async def open(self) -> None:
        self._stop_listening = await self.store.listen(self._on_fact)
        self._fact_task = asyncio.create_task(self._render_facts(), name="hub-facts")

    def connect(self, ws: Any, owner: str, login: str | None = None, address: str = "") -> Connection:
        """Register a tab; ClientError (saying why) when its owner or address has too many open already."""
        if self.limits is not None:
            refused = self.limits.admit(owner, address)
            if refused is not None:
                log.info("refused a WebSocket of %s from %s: %s", owner[:8], address, refused)
                metrics.RATE_LIMITED.labels("tabs").inc()
                raise ClientError(refused)
            ws.scope[OWNER_SCOPE] = owner
        conn = Connection(self, ws, owner, login, address)
        self.connections[ws] = conn
        metrics.OPEN_TABS.inc()
        self.owners.setdefault(owner, set()).add(conn)
        log.debug("owner %s: %d connection(s)", owner[:8], len(self.owners[owner]))
        return conn

    def disconnect(self, ws: Any) -> None:
        conn = self.connections.pop(ws, None)
        if conn is None:
            return
        metrics.OPEN_TABS.dec()
        conn.close()
        if self.limits is not None:
            self.limits.release(conn.owner, conn.address)
        conns = self.owners.get(conn.owner)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.owners[conn.owner]

    async def close(self) -> None:
        if self._stop_listening is not None:
            self._stop_listening()
        if self._fact_task is not None:
            self._fact_task.cancel()
            await asyncio.gather(self._fact_task, return_exceptions=True)
        for conn in list(self.connections.values()):
            conn.close()

    # -- facts ----------------------------------------------------------------------------------------------

    def _on_fact(self, topic: str, fact: dict) -> None:
        if fact.get("owner") not in self.owners or topic.startswith("auth."):  # auth.*: app/revocation.py
            return
        self._facts.put_nowait((topic, fact))

    def sign_out(self, conn: Connection, reason: str) -> None:
        """The tab's access was revoked: tell it why, close it (1008 with the reason: the page shows it and
        does not reconnect). Nothing more reaches it from the moment this is called."""
        if conn.closed:
            return
        task = asyncio.get_running_loop().create_task(self._sign_out(conn, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        conn.close()

    async def _sign_out(self, conn: Connection, reason: str) -> None:
        async with conn._lock:  # after a frame being sent, if any
            try:
                await conn.ws.send_text(to_xml(SignedOut(reason), indent=False))
                await conn.ws.close(code=1008, reason=reason[:120])
            except Exception:  # noqa: BLE001 - already gone
                pass

    async def _render_facts(self) -> None:
        """One fact at a time, in order: rendered once per view — the owner and the page a tab shows, all that a
        fact view is handed (`Handle(owner, page)`, no tab of its own) — and the same text sent to every tab with
        that view. Nothing of a fact's rendering differs per tab; what does (the streams a tab follows, from the
        seq its page holds) is the followers' (app/follow.py), shared too by the tabs that hold the same seq."""
        while True:
            topic, fact = await self._facts.get()
            by_page: dict[str | None, list[Connection]] = {}
            for conn in self.owners.get(fact["owner"], ()):
                if not conn.closed:
                    by_page.setdefault(conn.page, []).append(conn)
            for page, tabs in by_page.items():
                try:
                    fragments = await self.render_fact(topic, fact, self.handle(fact["owner"], page=page))
                except Exception:  # noqa: BLE001 - a view's bug must not stop the other facts
                    log.exception("rendering fact %s failed", topic)
                    continue
                if fragments:
                    await send_to_all(tabs, "".join(to_xml(f, indent=False) for f in fragments))

    async def on_store_health(self, ok: bool) -> None:
        """Every tab here hears when the database goes away and when it is back."""
        reason = getattr(self.health, "reason", "")
        notice = Notice(STORE_BACK, kind="info") if ok else Notice(STORE_DOWN.format(f" ({reason})" if reason else ""))
        text = to_xml(notice, indent=False)
        await asyncio.gather(*(conn.send_text(text) for conn in list(self.connections.values())))

    # -- incoming frames ------------------------------------------------------------------------------------

    async def receive(self, ws: Any, data: dict) -> None:
        metrics.FRAMES_IN.inc()
        conn = self.connections.get(ws)
        if conn is None:
            return
        action = data.get("action")
        handler = self.handlers.get(action) if isinstance(action, str) else None
        h = self.handle(conn.owner, page=conn.page, send=conn.send)
        try:
            if handler is None:
                raise ClientError(f"unknown action {str(action)[:40]!r}" if action else "message without an action")
            if handler in (self._on_follow, self._on_view):
                await handler(conn, data)
            else:
                await handler(h, data)
        except ClientError as exc:
            log.info("refused client message (%s): %s", conn.owner[:8], exc)
            await conn.send(Notice(str(exc)))
        except QuandaError as exc:
            log.warning("action %s failed: %s", action, exc)
            if isinstance(exc, QuandaStoreError) and self.health is not None:
                self.health.failed(exc)
            await conn.send(Notice(user_text(exc)))

    async def _on_view(self, conn: Connection, data: dict) -> None:
        """The tab shows `page` with exactly these streams (`fresh`: those just rendered, from their marker's
        seq): follow them, and stop following any other."""
        page = data.get("page")
        conn.page = page if isinstance(page, str) and len(page) <= 40 else None
        streams = self._streams(data)
        fresh = data.get("fresh", [])
        if not isinstance(fresh, list):
            raise ClientError("view needs 'fresh': [message_id, …]")
        for message_id in [m for m in conn.followers if m not in streams]:
            conn.detach(message_id)
        conn.ended &= set(streams)  # bounded by what the page shows
        await self._follow(conn, {m: seq for m, seq in streams.items()
                                  if m in fresh or (m not in conn.followers and m not in conn.ended)})

    async def _on_follow(self, conn: Connection, data: dict) -> None:
        """Follow these streams from these seqs (replacing any following of them)."""
        await self._follow(conn, self._streams(data))

    @staticmethod
    def _streams(data: dict) -> dict:
        streams = data.get("streams", {})
        if not isinstance(streams, dict):
            raise ClientError("follow needs {'streams': {message_id: seq}}")
        if len(streams) > MAX_FOLLOWED_STREAMS:
            raise ClientError(f"too many streams followed at once (at most {MAX_FOLLOWED_STREAMS})")
        return streams

    async def _follow(self, conn: Connection, streams: dict) -> None:
        for message_id, seq in streams.items():
            try:
                seq = check_seq(seq)
            except QuandaError:
                raise ClientError(f"bad seq for stream {str(message_id)[:40]!r}: a whole number ≥ 0") from None
            role = await role_if_owned(self.store, conn.owner, message_id)
            if role is None:
                raise ClientError(f"no stream {str(message_id)[:40]!r} here")
            factory = self.views.get(role)
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
        follower = Follower(self.store, message_id, None if snapshot else seq, view)
        self._joinable[key] = follower
        follower.task.add_done_callback(lambda _t: self._joinable.get(key) is follower and self._joinable.pop(key))
        return follower


STORE_DOWN = ("The database is unavailable{}: nothing new can be saved, and an answer being written has stopped. "
              "Quanda keeps trying and says so here when it is back.")
STORE_BACK = "The database is back. An answer that was cut short can be retried."


def user_text(exc: QuandaError) -> str:
    """What a user is told of a failure of the core: its message, except for the database's own."""
    if isinstance(exc, QuandaStoreError):
        return "the database is unavailable right now; try again in a moment"
    return str(exc)


class FrameGuard:
    """ASGI middleware on the WebSocket route: frames that are not JSON objects, too large or too deeply
    nested are answered with a visible error and never reach FastHTML (which would answer with bare text or
    drop the socket); the socket stays up. With `limits`, every frame — good or bad — first waits for its
    connection's pace and, beyond its share, its owner's (app/ratelimit.py)."""

    def __init__(self, app: Any, max_bytes: int = MAX_CLIENT_FRAME_BYTES, limits: Limits | None = None):
        self.app, self.max_bytes, self.limits = app, max_bytes, limits

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        limits = self.limits
        pace = limits.connection_pace() if limits is not None else None
        loop = asyncio.get_running_loop()
        told = strained_since = None

        async def notice(text: str) -> None:
            await send({"type": "websocket.send", "text": to_xml(Notice(text))})

        async def guarded_receive() -> dict:
            nonlocal told, strained_since
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                if limits is not None and pace is not None:
                    now = loop.time()
                    wait = limits.frame_wait_s(pace, scope.get(OWNER_SCOPE), now)
                    if wait <= 0:
                        strained_since = None
                    else:  # over its own rate, or over its share of its owner's (never for another tab's)
                        strained_since = now if strained_since is None else strained_since
                        if now - strained_since > STRAINED_S:
                            log.warning("closed a WebSocket of %s over its rate for %g s",
                                        str(scope.get(OWNER_SCOPE))[:8], STRAINED_S)
                            metrics.RATE_LIMITED.labels("ws_strained").inc()
                            await notice(limits.strained())
                            await send({"type": "websocket.close", "code": 1008})
                            return {"type": "websocket.disconnect", "code": 1008}
                        metrics.RATE_LIMITED.labels("ws_frames").inc()
                        if told is None or now - told >= NOTICE_EVERY_S:
                            told = now
                            log.info("slowing down a WebSocket of %s", str(scope.get(OWNER_SCOPE))[:8])
                            await notice(limits.slow_down())
                        await asyncio.sleep(wait)  # the socket is not read meanwhile: TCP holds the sender back
                problem = self.check(message)
                if problem is None:
                    return message
                log.info("refused WebSocket frame: %s", problem)
                await notice(problem)

        return await self.app(scope, guarded_receive, send)

    def check(self, message: dict) -> str | None:
        text = message.get("text")
        if text is None:
            return "binary frames are not accepted"
        if len(text) > self.max_bytes or len(text.encode("utf-8", "surrogatepass")) > self.max_bytes:
            return f"message too large ({len(text.encode('utf-8', 'surrogatepass'))} bytes; at most {self.max_bytes})"
        try:
            value = parse_client_json(text)
        except ClientJSONError as exc:
            return f"malformed message ({exc})" if "nested" in str(exc) else "malformed message (not JSON)"
        if not isinstance(value, dict):
            return "malformed message (expected a JSON object)"
        return None
