"""What the user does in the chat (draft, Send, Poke, Stop, Retry, edit the last question, new / open / continue
a conversation), what other plugins hand it (ambient events, questions from the HTTP API), and the sidebar it
fills. Refusals show in the chat's own notice, above its input (`near`)."""

from __future__ import annotations

import time

from quanda.components import ids
from quanda.components.answer import ConversationSettings, HorizonMarker
from quanda.components.chat import (ArchivedMessage, ChatInput, ChatMessage, ChatSidebar, EventLine,
                                    PreviousVersion, StatusBadge, ModelPicker)
from quanda.components.conversations import ConversationView
from quanda.context import ClientError, Handle
from quanda.notices import near
from quanda.core import QuandaError, QuandaWriter, QuandaMessage
from quanda.render import render_markdown

from . import answers, conversation, drafts, outcome, versions

MAX_QUESTION_CHARS = 32_000
HISTORY_ENTRIES = 60
TURN_KIND = "chat_turn"
SWITCHED = "chat.switched"  # the fact: the owner's sidebar shows another conversation (or a redrawn one)
CONVERSATIONS = "chat.conversations"  # the fact: the list of conversations changed
STILL_WRITING = "an answer is still being written: wait for it or press Stop"


def question_text(data: dict) -> str:
    text = data.get("text", "")
    if not isinstance(text, str):
        raise ClientError("text must be a string")
    if len(text) > MAX_QUESTION_CHARS:
        raise ClientError(f"the question is too long ({len(text):,} characters; at most {MAX_QUESTION_CHARS:,})")
    return text.strip()


async def turn(h: Handle) -> int:
    return (await h.store.get_record(TURN_KIND, h.owner) or {"turn": 0})["turn"]


async def answering(h: Handle) -> str | None:
    """The answer of this owner's current conversation being written (on any server), if any."""
    for _key, entry in (await conversation.entries(h.store, h.owner, limit=8))[::-1]:
        if entry["type"] == answers.ROLE and entry.get("status") == "generating":
            return entry["message_id"] if await h.job_running(entry["message_id"]) else None
    return None


async def chat_input(h: Handle, wanted_model: object = None, oob: bool = False, *, restore: bool = False,
                     text: str = "", editing: str | None = None):
    """The input; with `restore`, holding the draft being typed (a reload keeps it). The model picker shows
    the conversation's model (the one last sent with), else the default."""
    if wanted_model is None:
        wanted_model = (await conversation.settings_of(h.store, h.owner)).get("model")
    model, models = await answers.llm_status(h).choose(wanted_model)
    preview = render_markdown(text) if text else ""
    if restore and (found := await drafts.live(h)) is not None:
        draft, record = found
        text, editing = record.content, draft.get("edit")
        preview = render_markdown(text) if text else ""
    return ChatInput(model, models, await turn(h), oob=oob, text=text, preview=preview, editing=editing,
                     answering=await answering(h))


async def badge(h: Handle, oob: bool = False):
    status = await answers.llm_status(h).check()
    return StatusBadge(status.ok, status.text, oob=oob, check_s=h.settings.llm_check_s, model=status.model,
                       busy=status.busy)


async def history(h: Handle, cid: str | None = None, archived: bool = False, limit: int | None = None) -> list:
    """A conversation's items: live bubbles (the sidebar) or read-only ones (`archived`: the Chat page's
    viewer); the messages an edited question replaced are collapsed into "Previous version"."""
    found = await conversation.entries(h.store, h.owner, limit=limit, cid=cid, superseded=True)
    live = [(key, entry) for key, entry in found if not entry.get("superseded")]
    last_answer = next((key for key, entry in reversed(live) if entry["type"] == answers.ROLE), None)
    horizon = next(((entry.get("seen_from"), entry.get("dropped", 0)) for key, entry in reversed(live)
                    if entry["type"] == answers.ROLE and key == last_answer), (None, 0))
    items: list = []
    previous: list = []
    for key, entry in found:
        if horizon[0] and key == horizon[0]:
            items.append(HorizonMarker(horizon[1]))
        if entry["type"] == "event":
            items.append(EventLine(entry["text"]))
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
            thinking = await h.store.get_message(entry["thinking_id"]) if entry.get("thinking_id") else None
        except QuandaError:
            continue
        is_answer = record.role == answers.ROLE
        if entry.get("superseded"):
            previous.append(ArchivedMessage(record, thinking, outcome.info(entry, record) if is_answer else None))
            continue
        if previous:
            items.append(PreviousVersion(previous))
            previous = []
        running = not is_answer or outcome.status_of(entry) != "generating" or await h.job_running(record.id)
        info = outcome.info(entry, record, last=key == last_answer, running=running) if is_answer else None
        if archived:
            items.append(ArchivedMessage(record, thinking, info))
            continue
        items.append(ChatMessage(record, info.status if info else "final", thinking, info=info))
    if previous:
        items.append(PreviousVersion(previous))
    return items


async def sidebar(h: Handle):
    return ChatSidebar(await history(h, limit=HISTORY_ENTRIES * 2), await badge(h),
                       await chat_input(h, restore=True),
                       ConversationSettings(await conversation.settings_of(h.store, h.owner)))


async def on_event(h: Handle, text: str, key: str | None = None) -> None:
    """An ambient event: into the conversation the LLM sees, and a line in every tab's sidebar. Under a
    key, at most once."""
    entry = {"type": "event", "text": text}
    if key is None:
        await conversation.add_entry(h.store, h.owner, entry)
    elif not await h.store.commit_records([
            ("insert", "chat_once", key, {}),
            ("put", conversation.KIND, conversation.entry_key(await conversation.current(h.store, h.owner),
                                                              time.time_ns()), {**entry, "at": time.time()})]):
        return
    await h.publish("chat.event", text=text)


@near(ids.CHAT_NOTICE, clear_on_success=False)
async def on_draft(h: Handle, data: dict) -> None:
    text = question_text(data)
    if str(data.get("turn", "")) != str(await turn(h)):
        return  # typed before the last Send, arriving after it
    edit = data.get("edit") if isinstance(data.get("edit"), str) and data.get("edit") else None
    message_id = await drafts.write(h, text, edit)
    if message_id is not None:
        await h.publish("chat.draft", message_id=message_id)


@near(ids.CHAT_NOTICE)
async def on_send(h: Handle, data: dict) -> None:
    poke = bool(data.get("poke"))
    text = question_text(data)
    edit = data.get("edit") or None
    if not text and not poke:
        raise ClientError("type a question first")
    if await answering(h):
        raise ClientError(STILL_WRITING)
    if edit and text and edit != await conversation.last_question(h.store, h.owner):
        raise ClientError("only the last question can be edited; Cancel the edit to ask this as a new question")
    await answers.seal_unfinished(h)
    await h.store.put_record(TURN_KIND, h.owner, {"turn": await turn(h) + 1})
    model = (await answers.llm_status(h).choose(data.get("model")))[0]
    if isinstance(data.get("model"), str) and data["model"] == model:  # kept with the conversation
        await conversation.set_settings(h.store, h.owner, await conversation.current(h.store, h.owner), model=model)
    await h.publish("chat.sent", model=model)
    if edit and text and await conversation.supersede_from(h.store, h.owner, edit) is not None:
        await h.publish(SWITCHED)  # every tab redraws the conversation: the old turn is a previous version
    if text:
        await ask_in_conversation(h, await drafts.take(h, text))
    else:
        await h.post_event("You pressed Poke.")
    await answers.start_answer(h, model)


async def ask_in_conversation(h: Handle, question) -> None:
    cid = await conversation.current(h.store, h.owner)
    await conversation.add_entry(h.store, h.owner, {"type": "q", "message_id": question.id})
    await conversation.touch(h.store, h.owner, cid, question.content)
    await h.publish("chat.message", message_id=question.id, state="final")
    await h.publish(CONVERSATIONS)


async def ask(h: Handle, question, model: str | None, setup=None) -> str:
    """The HTTP API's /answer: the question joins the owner's conversation and is answered there (API
    clients may ask several at once; the page's Send waits for the answer being written)."""
    if not question.immutable:
        await QuandaWriter(QuandaMessage(h.store, question)).make_immutable()
    await answers.seal_unfinished(h)
    await ask_in_conversation(h, question)
    if not model:  # the conversation's, if the server has it; a model asked for is asked for as it is
        wanted = (await conversation.settings_of(h.store, h.owner)).get("model")
        model = (await answers.llm_status(h).choose(wanted))[0]
    return await answers.start_answer(h, model, setup)


@near(ids.CHAT_NOTICE)
async def on_stop(h: Handle, data: dict) -> None:
    await answers.stop(h, data.get("message_id"))


@near(ids.CHAT_NOTICE)
async def on_retry(h: Handle, data: dict) -> None:
    await answers.retry(h, data.get("message_id"))


@near(ids.CHAT_NOTICE)
async def on_edit(h: Handle, data: dict) -> None:
    """Put the last question back in the input; Send asks it again (see `on_send`)."""
    question_id = data.get("message_id")
    if await answering(h):
        raise ClientError("wait for the answer, or press Stop, before editing the question")
    if not isinstance(question_id, str) or question_id != await conversation.last_question(h.store, h.owner):
        raise ClientError("only the last question can be edited")
    text = (await h.owned(question_id, roles=("q",))).content
    await drafts.discard(h)
    message_id = await drafts.write(h, text, edit=question_id)
    await h.send(await chat_input(h, oob=True, text=text, editing=question_id))
    if message_id is not None:
        await h.publish("chat.draft", message_id=message_id)


@near(ids.CHAT_NOTICE)
async def on_cancel_edit(h: Handle, data: dict) -> None:
    await drafts.discard(h)
    await h.send(await chat_input(h, oob=True))
    await h.publish(drafts.GONE)


async def switch(h: Handle, cid: str | None) -> None:
    """Show another conversation in the sidebar (a new one when `cid` is None); the one left is kept, its
    stopped or failed answer sealed as it is."""
    if await answering(h):
        raise ClientError(STILL_WRITING + ", then switch conversations")
    if cid is not None and await conversation.conversation(h.store, h.owner, cid) is None:
        raise ClientError("there is no such conversation")
    await answers.seal_unfinished(h)
    if cid is None:
        await conversation.start_new(h.store, h.owner)
    else:
        await conversation.switch_to(h.store, h.owner, cid)
    draft = await h.store.get_record(drafts.KIND, h.owner)
    if draft is not None and draft.get("edit"):  # the question being edited is in the conversation left
        await drafts.discard(h)
        await h.publish(drafts.GONE)
    await h.publish(SWITCHED)
    await h.publish(CONVERSATIONS)


@near(ids.CHAT_NOTICE)
async def on_new(h: Handle, data: dict) -> None:
    await switch(h, None)


@near(ids.CHAT_NOTICE)
async def on_continue(h: Handle, data: dict) -> None:
    cid = data.get("cid")
    await switch(h, cid if isinstance(cid, str) else "")


@near(ids.CHAT_NOTICE)
async def on_open(h: Handle, data: dict) -> None:
    """The Chat page's viewer shows a conversation, read-only."""
    found = await conversation.conversation(h.store, h.owner, data.get("cid"))
    if found is None:
        raise ClientError("there is no such conversation")
    current = await conversation.current(h.store, h.owner)
    await h.send(ConversationView(found, await history(h, found["cid"], archived=True),
                                  is_current=found["cid"] == current, oob=True))


async def on_status(h: Handle, data: dict) -> None:
    """A tab asks for the badge (every QUANDA_LLM_CHECK_S seconds, see static/chat.js), and the model picker
    with it: a server that came up (or lost its models) changes what can be picked."""
    status = await answers.llm_status(h).check()
    wanted = (await conversation.settings_of(h.store, h.owner)).get("model")
    models = status.models or ([status.model] if status.model else [])
    model = wanted if isinstance(wanted, str) and wanted in models else status.model
    await h.send(StatusBadge(status.ok, status.text, oob=True, check_s=h.settings.llm_check_s, model=status.model,
                             busy=status.busy), ModelPicker(model, models, oob=True))


async def answer_info(h: Handle, message_id: str):
    """What the views show under an answer of the current conversation (None when it is not there)."""
    live = await conversation.entries(h.store, h.owner, limit=50)
    answers_here = [(key, entry) for key, entry in live if entry["type"] == answers.ROLE]
    for i, (_key, entry) in enumerate(answers_here):
        if entry.get("message_id") == message_id:
            try:
                record = await h.store.get_message(message_id)
            except QuandaError:
                record = None
            return outcome.info(entry, record, last=i == len(answers_here) - 1)
    return None


@near(ids.CHAT_NOTICE)
async def on_regenerate(h: Handle, data: dict) -> None:
    await versions.regenerate(h, data.get("message_id"))


@near(ids.CHAT_NOTICE)
async def on_version(h: Handle, data: dict) -> None:
    await versions.switch(h, data.get("message_id"), data.get("to"))
