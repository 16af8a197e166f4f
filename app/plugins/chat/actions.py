"""What the user does in the chat (draft, Send, Poke, Stop, Retry), what other plugins hand it (ambient
events, questions from the HTTP API), and the sidebar it fills."""

from __future__ import annotations

import time

from app.components.chat import ChatInput, ChatMessage, ChatSidebar, EventLine, StatusBadge
from app.plugins import ClientError, Handle
from app.quanda import QuandaError, QuandaMessage, QuandaWriter

from . import answers, conversation

MAX_QUESTION_CHARS = 32_000
HISTORY_ENTRIES = 60
DRAFT_KIND = "draft"
TURN_KIND = "chat_turn"


def question_text(data: dict) -> str:
    text = data.get("text", "")
    if not isinstance(text, str):
        raise ClientError("text must be a string")
    if len(text) > MAX_QUESTION_CHARS:
        raise ClientError(f"the question is too long ({len(text):,} characters; at most {MAX_QUESTION_CHARS:,})")
    return text.strip()


async def turn(h: Handle) -> int:
    return (await h.store.get_record(TURN_KIND, h.owner) or {"turn": 0})["turn"]


async def chat_input(h: Handle, wanted_model: object = None, oob: bool = False):
    model, models = await answers.llm_status(h).choose(wanted_model)
    return ChatInput(model, models, await turn(h), oob=oob)


async def badge(h: Handle, oob: bool = False):
    status = await answers.llm_status(h).check()
    return StatusBadge(status.ok, status.text, oob=oob)


async def history(h: Handle) -> list:
    items = []
    for _key, entry in await conversation.entries(h.store, h.owner, limit=HISTORY_ENTRIES * 2):
        if entry["type"] == "event":
            items.append(EventLine(entry["text"]))
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
            thinking = await h.store.get_message(entry["thinking_id"]) if entry.get("thinking_id") else None
        except QuandaError:
            continue
        state = entry.get("status", "final") if record.role == answers.ROLE else "final"
        if state == "generating" and not await h.job_running(record.id):
            state = "interrupted"
        items.append(ChatMessage(record, state, thinking))
    return items


async def sidebar(h: Handle):
    return ChatSidebar(await history(h), await badge(h), await chat_input(h))


async def on_event(h: Handle, text: str, key: str | None = None) -> None:
    """An ambient event: into the conversation the LLM sees, and a line in every tab's sidebar. Under a
    key, at most once."""
    entry = {"type": "event", "text": text}
    if key is None:
        await conversation.add_entry(h.store, h.owner, entry)
    elif not await h.store.commit_records([("insert", "chat_once", key, {}),
                                           ("put", conversation.KIND, f"{h.owner}:{time.time_ns():020d}",
                                            {**entry, "at": time.time()})]):
        return
    await h.publish("chat.event", text=text)


async def on_draft(h: Handle, data: dict) -> None:
    text = question_text(data)
    if str(data.get("turn", "")) != str(await turn(h)):
        return  # typed before the last Send, arriving after it
    draft = await h.store.get_record(DRAFT_KIND, h.owner)
    if draft is None:
        if not text:
            return
        message = await QuandaMessage.create(h.store, role="q")
        await h.own(message.id, "q")
        draft = {"message_id": message.id}
        await h.store.put_record(DRAFT_KIND, h.owner, draft)
    await QuandaWriter(await QuandaMessage.from_id(h.store, draft["message_id"])).override(text)
    await h.publish("chat.draft", message_id=draft["message_id"])


async def answering(h: Handle) -> bool:
    """Whether an answer of this owner is being written (on any server)."""
    for _key, entry in (await conversation.entries(h.store, h.owner, limit=8))[::-1]:
        if entry["type"] == answers.ROLE and entry.get("status") == "generating":
            return await h.job_running(entry["message_id"])
    return False


async def on_send(h: Handle, data: dict) -> None:
    poke = bool(data.get("poke"))
    text = question_text(data)
    if not text and not poke:
        raise ClientError("type a question first")
    if await answering(h):
        raise ClientError("an answer is still being written: wait for it or press Stop")
    await answers.seal_unfinished(h)
    await h.store.put_record(TURN_KIND, h.owner, {"turn": await turn(h) + 1})
    model = (await answers.llm_status(h).choose(data.get("model")))[0]
    await h.publish("chat.sent", model=model)
    if text:
        await ask_in_conversation(h, await question_from_draft(h, text))
    else:
        await h.post_event("You pressed Poke.")
    await answers.start_answer(h, model)


async def question_from_draft(h: Handle, text: str):
    """The sealed question: the draft message if one was being typed, else a new one."""
    store = h.store
    draft = await store.get_record(DRAFT_KIND, h.owner)
    await store.delete_record(DRAFT_KIND, h.owner)
    if draft is not None:
        question = await QuandaMessage.from_id(store, draft["message_id"])
    else:
        question = await QuandaMessage.create(store, role="q")
        await h.own(question.id, "q")
    writer = QuandaWriter(question)
    if (await question.refresh()).content != text:
        await writer.override(text)
    await writer.make_immutable()
    return await store.get_message(question.id)


async def ask_in_conversation(h: Handle, question) -> None:
    await conversation.add_entry(h.store, h.owner, {"type": "q", "message_id": question.id})
    await h.publish("chat.message", message_id=question.id, state="final")


async def ask(h: Handle, question, model: str | None) -> str:
    """The HTTP API's /answer: the question joins the owner's conversation and is answered there (API
    clients may ask several at once; the page's Send waits for the answer being written)."""
    if not question.immutable:
        await QuandaWriter(QuandaMessage(h.store, question)).make_immutable()
    await answers.seal_unfinished(h)
    await ask_in_conversation(h, question)
    return await answers.start_answer(h, model or (await answers.llm_status(h).choose())[0])


async def on_stop(h: Handle, data: dict) -> None:
    await answers.stop(h, data.get("message_id"))


async def on_retry(h: Handle, data: dict) -> None:
    await answers.retry(h, data.get("message_id"))
