"""What request handlers and plugins share: settings, the store, the WebSocket hub, the plugins."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from app.components.chat import EventLine
from app.components import ids
from app.config import Settings
from app.quanda import QuandaStore
from app.ws import Hub

MAX_EVENTS_SHOWN = 50


@dataclass
class AppContext:
    settings: Settings
    store: QuandaStore
    hub: Hub
    plugins: list[Any] = field(default_factory=list)
    jobs: dict[str, asyncio.Task] = field(default_factory=dict)  # message id -> the task writing it

    async def post_event(self, sid: str, text: str) -> None:
        """An ambient event: persisted for the session's conversation and shown as a line in #msg-list."""
        key = f"{sid}:{time.time_ns():020d}"
        await self.store.put_record("event", key, {"text": text, "at": time.time()})
        await self.hub.broadcast(sid, EventLine(text, oob=True))

    async def recent_events(self, sid: str) -> list[str]:
        records = await self.store.list_records("event", prefix=f"{sid}:")
        return [data["text"] for _key, data in records[-MAX_EVENTS_SHOWN:]]

    async def own(self, sid: str, message_id: str, role: str) -> None:
        """Record that a message belongs to a session (only its tabs may follow it)."""
        await self.store.put_record("owner", message_id, {"sid": sid, "role": role})

    def start_job(self, message_id: str, coro: Any) -> asyncio.Task:
        """Run the writer of a message in the background: it outlives the request and the tab."""
        task = asyncio.create_task(coro, name=f"job-{message_id}")
        self.jobs[message_id] = task
        task.add_done_callback(lambda t: self.jobs.pop(message_id, None))
        return task


def ctx_of(app: Any) -> AppContext:
    return app.state.ctx


__all__ = ["AppContext", "ctx_of", "ids"]
