"""How the chat's facts show in a tab (every tab: the chat fills the sidebar, which is on every page)."""

from __future__ import annotations

from app.components.chat import (AppendToList, ChatMessage, DraftPreview, EventLine, MessageActions,
                                 ThinkingSection)
from app.plugins import Handle
from app.quanda import QuandaError
from app.render import render_markdown

from . import actions


async def event(h: Handle, fact: dict):
    return EventLine(fact["text"], oob=True)


async def message(h: Handle, fact: dict):
    try:
        record = await h.store.get_message(fact["message_id"])
    except QuandaError:
        return None
    return AppendToList(ChatMessage(record, fact.get("state", "final")))


async def state(h: Handle, fact: dict):
    return MessageActions(fact["message_id"], fact["state"], oob=True)


async def thinking(h: Handle, fact: dict):
    try:
        record = await h.store.get_message(fact["thinking_id"])
    except QuandaError:
        return None
    return ThinkingSection(fact["answer_id"], record, oob=True)


async def draft(h: Handle, fact: dict):
    try:
        text = (await h.store.get_message(fact["message_id"])).content
    except QuandaError:
        return None
    return DraftPreview(render_markdown(text) if text else "")


async def sent(h: Handle, fact: dict):
    """A question was sent (from any tab): every tab's input starts the next turn, its preview empty."""
    return [await actions.chat_input(h, fact.get("model"), oob=True), DraftPreview("")]


async def badge(h: Handle, fact: dict):
    return await actions.badge(h, oob=True)


FACT_VIEWS = {"chat.event": event, "chat.message": message, "chat.state": state, "chat.thinking": thinking,
              "chat.draft": draft, "chat.sent": sent, "chat.badge": badge}
