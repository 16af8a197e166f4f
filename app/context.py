"""What the app's parts share (`AppContext`), and what a plugin's code is handed (`Handle`).

A Handle is the app context seen from one owner (a browser session today; a workspace once there are
accounts), and, when the code answers a browser tab, from that tab: `send` answers it alone; `publish`
states a fact that every tab of the owner, on every server, renders through the plugins' fact views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine, Iterable

from quanda import ownership
from quanda.config import Settings
from quanda.jobs import Jobs
from quanda.core import QuandaStore
from quanda.core import MessageRecord

Send = Callable[..., Awaitable[None]]


class ClientError(Exception):
    """A request refused; its text is shown to the user, next to what they did."""


@dataclass
class AppContext:
    settings: Settings
    store: QuandaStore
    plugins: list[Any] = field(default_factory=list)
    jobs: Jobs | None = None
    llm: Any = None  # the LLM driver (app/llm)
    accounts: Any = None  # users, logins and API tokens (app/accounts.py)
    state: dict[str, Any] = field(default_factory=dict)  # each plugin's own per-app state, by plugin name

    def handle(self, owner: str, *, page: str | None = None, send: Send | None = None) -> "Handle":
        return Handle(self, owner, page, send)

    async def publish(self, owner: str, topic: str, **fact: Any) -> None:
        """A fact for every tab of `owner` on every server (rendered there by the plugins' fact views)."""
        await self.store.publish(topic, {"owner": owner, **fact})

    async def post_event(self, owner: str, text: str, key: str | None = None) -> None:
        """An ambient event ("You added the todo …"): handed to every plugin that listens (the chat keeps it
        in the conversation the LLM sees, and shows it as a line in the sidebar). With a `key`, an event
        posted again under the same key (a retry after a crash) is not shown twice."""
        for plugin in self.plugins:
            if plugin.on_event is not None:
                await plugin.on_event(self.handle(owner), text, key)

    def plugin_hook(self, name: str) -> Callable[..., Any] | None:
        """The first plugin's (by order) implementation of an optional hook, e.g. "ask" or "sidebar"."""
        return next((getattr(p, name) for p in self.plugins if getattr(p, name) is not None), None)


@dataclass
class Handle:
    """What every page, WebSocket action, fact view and job of a plugin is handed. Its methods and `store`,
    `owner`, `page`, `settings` are the public API; `ctx` is the app's own (tests/test_public_api.py checks that
    the reference plugins and the examples do without it)."""

    ctx: AppContext
    owner: str
    page: str | None = None  # the plugin page the tab shows (for fact views)
    _send: Send | None = None

    @property
    def store(self) -> QuandaStore:
        return self.ctx.store

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    async def send(self, *fragments: Any) -> None:
        """To the tab that asked, and only to it (nothing when the request did not come from a tab)."""
        if self._send is not None and fragments:
            await self._send(*fragments)

    async def publish(self, topic: str, **fact: Any) -> None:
        await self.ctx.publish(self.owner, topic, **fact)

    async def post_event(self, text: str, key: str | None = None) -> None:
        await self.ctx.post_event(self.owner, text, key)

    async def own(self, message_id: str, role: str) -> None:
        """Record a new message as this owner's: only their tabs and API calls may use it."""
        await ownership.own(self.store, self.owner, message_id, role)

    async def owned(self, message_id: object, roles: Iterable[str] | None = None) -> MessageRecord:
        """The message if this owner may use it; QuandaNotFoundError (like an unknown id) otherwise."""
        return await ownership.owned(self.store, self.owner, message_id, roles)

    async def start_job(self, kind: str, message_id: str, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` (which writes message `message_id`) in the background, under a lease."""
        assert self.ctx.jobs is not None
        await self.ctx.jobs.start(kind, message_id, self.owner, work)

    async def stop_job(self, message_id: str) -> bool:
        """Stop the job writing `message_id`, on whichever server runs it; False when none does."""
        assert self.ctx.jobs is not None
        return await self.ctx.jobs.stop(message_id)

    async def job_running(self, message_id: str, settle_s: float = 0.0) -> bool:
        """Whether a server holds the job writing `message_id` (after giving one of this server that is
        ending up to `settle_s` seconds to end)."""
        assert self.ctx.jobs is not None
        if settle_s:
            await self.ctx.jobs.settle(message_id, settle_s)
        return await self.ctx.jobs.running(message_id, settle_s)
