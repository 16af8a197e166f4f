"""How the chat's facts show in a tab (every tab: the chat fills the sidebar, which is on every page).

A view sends only what targets elements the tab shows: a message's updates only while the sidebar's
conversation holds it, the list of conversations only to tabs on the Chat page.
"""

from __future__ import annotations

from fasthtml.common import Div

from quanda.components import ids
from quanda.components.answer import HorizonGone, HorizonMarker
from quanda.components.chat import (AppendToList, ChatMessage, DraftPreview, EditingBanner, EventLine,
                                    MessageActions, MessageList, SendSlot, ThinkingSection, TurnField)
from quanda.components.conversations import ConversationList
from quanda.components.notice import FieldNotice
from quanda.context import Handle
from quanda.core import QuandaError
from quanda.render import render_markdown

from . import actions, answers, conversation, drafts, manage

CHAT_PAGE = "chat"


async def event(h: Handle, fact: dict):
    return EventLine(fact["text"], oob=True)


async def message(h: Handle, fact: dict):
    try:
        record = await h.store.get_message(fact["message_id"])
    except QuandaError:
        return None
    state = fact.get("state", "final")
    info = await actions.answer_info(h, record.id) if record.role == answers.ROLE else None
    fragments = [AppendToList(ChatMessage(record, state, info=info))]
    if record.role == answers.ROLE and state == "generating":
        fragments.append(SendSlot(record.id, oob=True))  # Send becomes Stop while it is written
        fragments += await earlier_answer(h, record.id)
    return fragments


async def earlier_answer(h: Handle, answer_id: str) -> list:
    """The answer before a new one is no longer the last: its Regenerate goes."""
    live = await conversation.entries(h.store, h.owner, limit=50)
    found = [entry["message_id"] for _key, entry in live if entry["type"] == answers.ROLE]
    if len(found) < 2 or found[-1] != answer_id:
        return []
    info = await actions.answer_info(h, found[-2])
    return [MessageActions(found[-2], info.status, oob=True, info=info)] if info else []


async def state(h: Handle, fact: dict):
    info = await actions.answer_info(h, fact["message_id"])
    if info is None:
        return None
    fragments = [MessageActions(fact["message_id"], fact["state"], oob=True, info=info)]
    if info.sealed and info.status in answers.UNFINISHED:  # the outcome under it says why: not twice
        fragments.append(Div("", id=ids.msg_warning_id(fact["message_id"]), cls="msg-warning", hx_swap_oob="true"))
    if fact["state"] == "generating":
        fragments.append(SendSlot(fact["message_id"], oob=True))
    else:  # the answer ended: Stop gives way to Send, and "an answer is still being written" is no longer true
        fragments += [SendSlot(await actions.answering(h), oob=True), FieldNotice(ids.CHAT_NOTICE)]
    return fragments


async def thinking(h: Handle, fact: dict):
    if not await conversation.holds(h.store, h.owner, fact["answer_id"]):
        return None
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


async def draft_gone(h: Handle, fact: dict):
    """The draft was sealed (it sat untouched too long) or dropped: its preview leaves the page. Text still in
    a tab's input stays there; typing again starts a new draft."""
    return DraftPreview("")


async def sent(h: Handle, fact: dict):
    """A question was sent (from any tab): every tab starts the next turn, its preview empty. What a tab's box
    holds stays (the tab that sent emptied its own as it sent, static/chat.js)."""
    return [TurnField(await actions.turn(h), oob=True), DraftPreview(""), EditingBanner(None, oob=True),
            SendSlot(await actions.answering(h), oob=True)]


async def horizon(h: Handle, fact: dict):
    """Where what the assistant sees begins moved (an answer's prompt left older messages out): the marker
    moves there, before the first message it sees."""
    info = await conversation.find_answer(h.store, h.owner, fact["message_id"])
    if info is None or not await conversation.holds(h.store, h.owner, fact["message_id"]):
        return None
    entry = info[1]
    first = await conversation.message_at(h.store, entry.get("seen_from"))
    if first is None:
        return HorizonGone()
    return [HorizonGone(), HorizonMarker(entry.get("dropped", 0), oob_before=ids.msg_id(first))]


async def badge(h: Handle, fact: dict):
    return await actions.badge(h, oob=True)


async def switched(h: Handle, fact: dict):
    """The sidebar's conversation changed (another one, or an edited turn): redraw its messages."""
    fragments = [MessageList(await actions.history(h, limit=actions.HISTORY_ENTRIES * 2), oob=True),
                 SendSlot(await actions.answering(h), oob=True), EditingBanner(None, oob=True),
                 await manage.settings_view(h, fact)]
    if h.page == CHAT_PAGE:
        fragments.append(await conversation_list(h))
    return fragments


async def conversations(h: Handle, fact: dict):
    return await conversation_list(h) if h.page == CHAT_PAGE else None


async def conversation_list(h: Handle):
    return ConversationList(await conversation.conversations(h.store, h.owner),
                            await conversation.current(h.store, h.owner), oob=True)


async def settings(h: Handle, fact: dict):
    return await manage.settings_view(h, fact)


FACT_VIEWS = {"chat.event": event, "chat.settings": settings, "chat.message": message, "chat.state": state, "chat.thinking": thinking,
              "chat.horizon": horizon,
              "chat.draft": draft, drafts.GONE: draft_gone, "chat.sent": sent, "chat.badge": badge,
              actions.SWITCHED: switched, actions.CONVERSATIONS: conversations}
