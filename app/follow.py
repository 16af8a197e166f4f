"""Following one stream for the tabs that show it: one reader, one view, one render per frame.

Frames follow the display: at most one per FRAME_INTERVAL_S (a 60 Hz screen's frame), each timed from the
start of the one before, whatever the token rate; whatever arrives meanwhile joins the next frame. A token
that finds no frame pending goes at once, so the first token of an answer (and any token after a pause)
reaches the page within one frame of its arrival, and at most one frame later at any rate.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from fasthtml.common import to_xml

from quanda import metrics
from quanda.components.layout import Notice
from quanda.fanout import send_to_all
from quanda.core import QuandaError, QuandaMessage, QuandaReader, QuandaToken

log = logging.getLogger("quanda.follow")

FRAME_INTERVAL_S = 1 / 60


class StreamView(Protocol):
    """Turns a message's tokens into fragments for one connection; holds only what it has yet to send."""

    def feed(self, token: QuandaToken) -> None: ...

    def flush(self) -> list[Any]: ...



class Follower:
    """Follows one message from one position for every tab that asked for exactly that: one reader, one
    view, one render per frame, the same text sent to each tab. Tabs join only until the first frame goes
    out; a tab asking later (another position, a reconnect) gets a follower of its own."""

    def __init__(self, store: Any, message_id: str, after_seq: int | None, view: StreamView):
        self.store, self.message_id, self.after_seq, self.view = store, message_id, after_seq, view
        self.conns: set[Any] = set()
        self.sent = False
        self.task = asyncio.create_task(self._run(), name=f"follow-{message_id}")

    def join(self, conn: Any) -> None:
        self.conns.add(conn)

    def leave(self, conn: Any) -> None:
        self.conns.discard(conn)
        if not self.conns:
            self.task.cancel()

    async def _send(self, fragments: list[Any]) -> None:
        await send_to_all(list(self.conns), "".join(to_xml(f, indent=False) for f in fragments))

    async def _run(self) -> None:
        try:
            message = await QuandaMessage.from_id(self.store, self.message_id)
        except QuandaError as exc:
            await self._send([Notice(str(exc))])
            return
        dirty = asyncio.Event()
        ended: list[BaseException | None] = []
        loop = asyncio.get_running_loop()
        waiting_since: list[float] = []  # when the oldest token not yet in a frame arrived (for the metrics)

        async def pump() -> None:
            try:
                async for token in QuandaReader(message, after_seq=self.after_seq):
                    self.view.feed(token)
                    if not waiting_since:
                        waiting_since.append(loop.time())
                    dirty.set()
                ended.append(None)
            except QuandaError as exc:
                ended.append(exc)
            finally:
                dirty.set()

        pump_task = asyncio.create_task(pump())
        try:
            while True:
                await dirty.wait()
                dirty.clear()
                started = loop.time()
                fragments = self.view.flush()
                if fragments:
                    self.sent = True
                    await self._send(fragments)
                    if waiting_since:
                        metrics.TOKEN_TO_FRAME.observe(loop.time() - waiting_since.pop())
                waiting_since.clear()
                if ended or not self.conns:
                    break
                # frame pacing, timed from the frame's start, with a floor so a late server still batches:
                # whatever arrives meanwhile joins the next frame
                now = loop.time()
                await asyncio.sleep(max(started + FRAME_INTERVAL_S, now + 0.75 * FRAME_INTERVAL_S) - now)
            if ended and ended[0] is not None:
                log.warning("stream %s ended early: %s", self.message_id, ended[0])
                await self._send([Notice("this stream was interrupted; reload the page to see where it is")])
        finally:
            pump_task.cancel()
            for conn in list(self.conns):
                if conn.followers.get(self.message_id) is self:
                    del conn.followers[self.message_id]
