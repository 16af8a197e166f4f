"""What request handlers and plugins share: settings, the store, the WebSocket hub, the plugins."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from app import conversation
from app.components.chat import EventLine
from app.config import Settings
from app.quanda import QuandaStore
from app.ws import Hub


@dataclass
class AppContext:
    settings: Settings
    store: QuandaStore
    hub: Hub
    plugins: list[Any] = field(default_factory=list)
    jobs: dict[str, asyncio.Task] = field(default_factory=dict)  # message id -> the task writing it
    llm: Any = None  # the LLM driver (app/llm)
    chat: Any = None  # the ChatService (app/chat.py), when the chat plugin is loaded

    async def post_event(self, sid: str, text: str) -> None:
        """An ambient event: part of the conversation the LLM sees, and a subtle line in #msg-list."""
        await conversation.add_entry(self.store, sid, {"type": "event", "text": text})
        await self.hub.broadcast(sid, EventLine(text, oob=True))

    async def own(self, sid: str, message_id: str, role: str) -> None:
        """Record that a message belongs to a session (only its tabs may follow it)."""
        await self.store.put_record("owner", message_id, {"sid": sid, "role": role})

    def start_job(self, message_id: str, coro: Any, name: str | None = None) -> asyncio.Task:
        """Run the writer of a message in the background: it outlives the request and the tab."""
        task = asyncio.create_task(coro, name=name or f"job-{message_id}")
        self.jobs[message_id] = task
        task.add_done_callback(lambda t: self.jobs.pop(message_id, None))
        return task


def ctx_of(app: Any) -> AppContext:
    return app.state.ctx

