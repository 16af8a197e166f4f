"""Chat: the sidebar on every page and a full-page view of the history. The work is in app/chat.py."""

from __future__ import annotations

from fasthtml.common import H2, P, Section

from app.chat import ChatService
from app.components.chat import ChatView
from app.plugins import Plugin


async def startup(ctx) -> None:
    ctx.chat = ChatService(ctx)
    await ctx.chat.mark_interrupted()


async def page(ctx, sid: str):
    # the chat itself is the sidebar, widened to fill the page while this view is open (see app.css)
    return Section(H2("Chat"), P("The whole conversation, kept across restarts. Stop halts an answer (the LLM "
                                 "stops generating); Retry regenerates a stopped or failed answer in place; "
                                 "Poke asks the assistant to react to what you just did."),
                   cls="chat-full card")


def handler(name: str):
    async def handle(conn, data):
        await getattr(conn.hub.ctx.chat, name)(conn, data)
    return handle


plugin = Plugin(
    name="chat",
    label="Chat",
    order=90,
    page=page,
    startup=startup,
    ws_handlers={"chat.draft": handler("on_draft"), "chat.send": handler("on_send"),
                 "chat.stop": handler("on_stop"), "chat.retry": handler("on_retry")},
    stream_views={"assistant": ChatView, "q": ChatView, "thinking": ChatView},
)
