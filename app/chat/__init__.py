"""Chat: the sidebar on every page, a Chat page listing the conversations, answers streamed from the LLM.

Modules, one concept each: `conversation` (an owner's conversations and their ordered entries), `drafts` (the
question being typed), `status` (is the LLM there, which model), `prompt` (what the LLM is sent), `answers`
(generation, Stop, Retry, recovery, commands), `tools` (an answer's rounds of native tool calls), `actions`
(what the user does, and the hooks other plugins reach the chat through), `views` (how its facts show),
`export` (a conversation as Markdown or JSON).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fasthtml.common import H2, APIRouter, Div, P, Section

import quanda.static

from quanda.components.buttons import ws_button
from .stream_view import ChatView
from quanda.components.conversations import ConversationList, ConversationView, SearchBox, SearchResults
from quanda import approvals
from quanda.context import AppContext, Handle
from quanda.plugin import Plugin

from . import actions, agui, answers, api, conversation, drafts, export, manage, turns, views
from .status import LLMStatus
from .tools import ToolBox

router = APIRouter()  # the chat's HTTP routes: its API (api.py), the exports (export.py), AG-UI (agui.py)
for part in (api.router, export.router, agui.router):
    router.routes.extend(part.routes)


class ChatState:
    """The chat's per-app state."""

    def __init__(self, ctx: AppContext):
        self.status = LLMStatus(ctx.llm, ctx.settings.default_model, ctx.settings.llm_check_s,
                                elsewhere=lambda: turns.held_elsewhere(ctx.store, ctx.llm))
        self.tools = ToolBox(ctx.plugins)  # the plugins' commands as native tools
        self.sweeper: asyncio.Task | None = None
        self.approvals: asyncio.Task | None = None  # carries out decisions left behind, expires old questions
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
    state = ctx.state["chat"] = ChatState(ctx)
    state.sweeper = asyncio.create_task(drafts.sweep(ctx), name="chat-draft-sweeper")
    state.approvals = asyncio.create_task(approvals.sweep(ctx), name="chat-approval-sweeper")


async def page(h: Handle):
    """The conversations: the one in the sidebar and every earlier one, each to read, continue or export."""
    convs = await conversation.conversations(h.store, h.owner)
    current = await conversation.current(h.store, h.owner)
    return Section(
        Div(H2("Conversations"),
            ws_button("New conversation", "chat.new", id="chat-new-page",
                      title="Start a new conversation in the sidebar (this one is kept)"),
            cls="chat-page-head"),
        P("The sidebar holds the current conversation. Earlier ones are kept: open one to read it, continue it "
          "in the sidebar, rename or delete it, or export it as Markdown or JSON.", cls="muted"),
        SearchBox(), SearchResults([]),
        Div(ConversationList(convs, current), ConversationView(None), cls="chat-page-body"),
        cls="chat-full card")


plugin = Plugin(
    name="chat",
    label="Chat",
    order=90,
    router=router,
    page=page,
    startup=startup,
    ws_handlers={"chat.draft": actions.on_draft, "chat.send": actions.on_send, "chat.stop": actions.on_stop,
                 "chat.retry": actions.on_retry, "chat.approve": actions.on_approve, "chat.reject": actions.on_reject,
                 "chat.undo": actions.on_undo, "chat.speak_up": actions.on_speak_up, "chat.edit": actions.on_edit,
                 "chat.cancel_edit": actions.on_cancel_edit, "chat.new": actions.on_new,
                 "chat.continue": actions.on_continue, "chat.open": actions.on_open,
                 "chat.status": actions.on_status, "chat.regenerate": actions.on_regenerate,
                 "chat.version": actions.on_version, "chat.rename": manage.on_rename, "chat.delete": manage.on_delete,
                 "chat.search": manage.on_search, "chat.settings": manage.on_settings},
    stream_views={"assistant": ChatView, "q": ChatView, "thinking": ChatView},
    fact_views=views.FACT_VIEWS,
    recover={answers.ROLE: answers.recover},
    sidebar=actions.sidebar,
    on_event=actions.on_event,
    ask=actions.ask,
    assets=(str(Path(quanda.static.__file__).parent / "chat.js"),),  # the input's keys, the badge's checks
)
