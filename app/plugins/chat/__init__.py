"""Chat: the sidebar on every page, a full-page view of the history, answers streamed from the LLM.

Modules, one concept each: `conversation` (an owner's ordered entries), `status` (is the LLM there, which
model), `prompt` (what the LLM is sent), `answers` (generation, Stop, Retry, recovery, commands), `tools` (an
answer's rounds of native tool calls), `actions` (what the user does, and the hooks other plugins reach the
chat through), `views` (how its facts show).
"""

from __future__ import annotations

import asyncio
import logging

from fasthtml.common import H2, P, Section

from app.components.chat import ChatView
from app.plugins import AppContext, Handle, Plugin

from . import actions, answers, api, views
from .status import LLMStatus
from .tools import ToolBox


class ChatState:
    """The chat's per-app state."""

    def __init__(self, ctx: AppContext):
        self.status = LLMStatus(ctx.llm, ctx.settings.default_model)
        self.tools = ToolBox(ctx.plugins)  # the plugins' commands as native tools
        self._background: set[asyncio.Task] = set()

    def in_background(self, work) -> None:
        """Run `work` apart from any job (kept referenced until it ends; its failure only logged)."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logging.getLogger("quanda.chat").warning("background work failed: %r", task.exception())


async def startup(ctx: AppContext) -> None:
    ctx.state["chat"] = ChatState(ctx)


async def page(h: Handle):
    # the chat itself is the sidebar, widened to fill the page while this view is open (see app.css)
    return Section(H2("Chat"), P("The whole conversation, kept across restarts. Stop halts an answer (the LLM "
                                 "stops generating); Retry regenerates a stopped or failed answer in place; "
                                 "Poke asks the assistant to react to what you just did."),
                   cls="chat-full card")


plugin = Plugin(
    name="chat",
    label="Chat",
    order=90,
    router=api.router,
    page=page,
    startup=startup,
    ws_handlers={"chat.draft": actions.on_draft, "chat.send": actions.on_send, "chat.stop": actions.on_stop,
                 "chat.retry": actions.on_retry},
    stream_views={"assistant": ChatView, "q": ChatView, "thinking": ChatView},
    fact_views=views.FACT_VIEWS,
    recover={answers.ROLE: answers.recover},
    sidebar=actions.sidebar,
    on_event=actions.on_event,
    ask=actions.ask,
)
