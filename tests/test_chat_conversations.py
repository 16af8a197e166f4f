"""The chat's records on every backend: conversations (and the history written before they had ids), edited
questions kept as previous versions, drafts sealed once left untouched, the LLM status, the export."""

import time

import pytest

from quanda.config import Settings
from quanda.llm import LLMUnavailable
from quanda.api import AppContext
from quanda.plugin import load_plugins
from quanda.chat import conversation, drafts, export
from quanda.chat.status import LLMStatus
from quanda.core import QuandaMessage, QuandaWriter

OWNER = "a" * 32


def context(store, **settings):
    return AppContext(Settings(**settings), store, load_plugins(entry_point_group=None))


async def question(store, text):
    message = await QuandaMessage.create(store, role="q")
    writer = QuandaWriter(message)
    await writer.override(text)
    await writer.make_immutable()
    return message.id


async def test_history_written_before_conversations_had_ids_is_the_first_conversation(store):
    """A database of the previous version keyed entries `<owner>:<time_ns>`: they are read as they are."""
    first = await question(store, "What was asked\nbefore the upgrade?")
    await store.put_record("chat", f"{OWNER}:{10**18:020d}", {"type": "event", "text": "You opened Todos.", "at": 1.0})
    await store.put_record("chat", f"{OWNER}:{10**18 + 1:020d}", {"type": "q", "message_id": first, "at": 2.0})
    assert await conversation.current(store, OWNER) == OWNER
    assert [e["type"] for _k, e in await conversation.entries(store, OWNER)] == ["event", "q"]
    [legacy] = await conversation.conversations(store, OWNER)
    assert legacy["title"] == "What was asked" and legacy["created"] == 1.0
    await conversation.add_entry(store, OWNER, {"type": "event", "text": "later"})
    assert len(await conversation.entries(store, OWNER)) == 3  # new entries of it keep the old key layout


async def test_a_new_conversation_starts_empty_and_the_old_one_is_kept(store):
    cid = await conversation.current(store, OWNER)
    assert cid.startswith("c-")
    assert await conversation.start_new(store, OWNER) == cid  # an empty conversation is not left behind
    await conversation.add_entry(store, OWNER, {"type": "q", "message_id": await question(store, "one")})
    await conversation.touch(store, OWNER, cid, "one")
    fresh = await conversation.start_new(store, OWNER)
    assert fresh != cid and await conversation.current(store, OWNER) == fresh
    assert await conversation.entries(store, OWNER) == []
    assert {c["cid"] for c in await conversation.conversations(store, OWNER)} == {cid, fresh}
    assert await conversation.switch_to(store, OWNER, cid)
    assert [e["type"] for _k, e in await conversation.entries(store, OWNER)] == ["q"]
    assert not await conversation.switch_to(store, OWNER, "c-" + "0" * 24)
    assert await conversation.conversation(store, "b" * 32, cid) is None  # another owner's: unknown


async def test_editing_the_last_question_keeps_the_old_turn_as_a_previous_version(store):
    q1, a1, q2, a2 = [await question(store, t) for t in ("first", "answer one", "second", "answer two")]
    for kind, mid in (("q", q1), ("assistant", a1), ("q", q2)):
        await conversation.add_entry(store, OWNER, {"type": kind, "message_id": mid})
    await conversation.add_entry(store, OWNER, {"type": "event", "text": "You added a todo."})
    await conversation.add_entry(store, OWNER, {"type": "assistant", "message_id": a2})
    assert await conversation.last_question(store, OWNER) == q2
    assert await conversation.supersede_from(store, OWNER, q1) is None  # only the last question
    assert await conversation.supersede_from(store, OWNER, q2) == [q2, a2]
    live = [e.get("message_id", e.get("text")) for _k, e in await conversation.entries(store, OWNER)]
    assert live == [q1, a1, "You added a todo."]  # what the LLM is sent from now on
    every = await conversation.entries(store, OWNER, superseded=True)
    assert [e.get("superseded", False) for _k, e in every] == [False, False, True, False, True]
    assert await conversation.find_answer(store, OWNER, a2) is not None


async def test_a_draft_left_untouched_is_sealed_and_typing_again_keeps_every_word(store):
    ctx = context(store, draft_ttl_s=60)
    published = []

    async def publish(owner, topic, **fact):
        published.append((owner, topic))
    ctx.publish = publish
    h = ctx.handle(OWNER)
    first = await drafts.write(h, "half a thought")
    assert (await drafts.live(h))[1].content == "half a thought"
    assert await drafts.seal_expired(ctx) == 0  # still fresh
    assert await drafts.seal_expired(ctx, now=time.time() + 61) == 1
    assert (await store.get_message(first)).immutable and published == [(OWNER, drafts.GONE)]
    assert await drafts.live(h) is None
    second = await drafts.write(h, "half a thought, and the rest")  # the tab still held the text
    assert second != first and (await drafts.live(h))[1].content == "half a thought, and the rest"
    sealed = await drafts.take(h, "half a thought, and the rest")
    assert sealed.id == second and sealed.immutable
    assert await store.get_record(drafts.KIND, OWNER) is None


class FakeLLM:
    def __init__(self, models):
        self.models = models

    async def list_models(self):
        if isinstance(self.models, Exception):
            raise self.models
        return self.models

    def model_status(self, model, models):
        return (True, f"LLM ready: {model}") if model in models else (False, f"model {model!r} is not available")

    def missing_model_hint(self, model):
        return "Pick another."

    def unreachable_hint(self, model=""):
        return "start it"


async def test_the_status_is_green_once_the_model_answers_and_red_when_unreachable():
    llm = FakeLLM(["only-model"])
    status = LLMStatus(llm, "", check_s=0.01)
    assert (await status.check(fresh=True)).text == "LLM ready: only-model"  # none configured: the only one
    llm.models = ["listed-otherwise"]
    status = LLMStatus(llm, "served-as", check_s=0.01)
    assert not (await status.check(fresh=True)).ok
    status.answered("served-as")
    assert (await status.check(fresh=True)).ok
    llm.models = LLMUnavailable("the LLM server is not reachable")
    assert not (await status.check(fresh=True)).ok
    llm.models = ["listed-otherwise"]
    assert not (await status.check(fresh=True)).ok  # answered before it went away: no longer proof


async def test_a_model_is_chosen_from_a_server_that_came_up_since_the_last_check():
    """Found by hand: Ollama started after the page had loaded; the next question went out with model '' (the
    cached status still said "not reachable") and failed with "model '' not found"."""
    llm = FakeLLM(LLMUnavailable("the LLM server is not reachable"))
    status = LLMStatus(llm, "", check_s=60)  # a status that stays cached for 30 s
    assert not (await status.check()).ok
    llm.models = ["only-model"]
    assert await status.choose() == ("only-model", ["only-model"])


async def test_export_has_every_message_with_role_timestamps_and_tokens(store):
    ctx = context(store)
    h = ctx.handle(OWNER)
    cid = await conversation.current(store, OWNER)
    q = await question(store, "Why?")
    answer = await QuandaMessage.create(store, role="assistant")
    writer = QuandaWriter(answer)
    for piece in ("Because ", "of ", "reasons."):
        await writer.chunk(piece)
    await writer.make_immutable()
    await conversation.add_entry(store, OWNER, {"type": "q", "message_id": q})
    await conversation.add_entry(store, OWNER, {"type": "event", "text": "You pressed Poke."})
    await conversation.add_entry(store, OWNER, {"type": "assistant", "message_id": answer.id, "status": "done",
                                                "model": "m1"})
    await conversation.touch(store, OWNER, cid, "Why?")
    data = await export.conversation_data(h, await conversation.conversation(store, OWNER, cid))
    assert data["title"] == "Why?" and data["format"] == export.FORMAT
    user, event, reply = data["messages"]
    assert (user["role"], user["content"], event["role"], reply["role"]) == ("user", "Why?", "event", "assistant")
    assert reply["content"] == "Because of reasons." and reply["tokens"] == 4 and reply["model"] == "m1"
    assert reply["created_at"].endswith("+00:00") and reply["final"]
    markdown = export.as_markdown(data)
    assert markdown.startswith("# Why?") and "## Assistant" in markdown and "4 tokens" in markdown


@pytest.mark.parametrize("text, title", [("  \n# Plan a trip\nto Rome", "Plan a trip"), ("x" * 200, "x" * 79 + "…")])
def test_titles_come_from_the_first_line(text, title):
    assert conversation.title_of(text) == title


async def test_a_tab_following_a_sealed_answer_again_gets_nothing(store):
    """A tab that navigates tells the server every stream it shows, finished ones included: following a sealed
    answer again from the seq the page holds must not append its last block a second time."""
    from quanda.chat.stream_view import ChatView
    from quanda.core import QuandaReader

    answer = await QuandaMessage.create(store, role="assistant")
    writer = QuandaWriter(answer)
    for piece in ("Some text.\n\n", "```python\n", "x = 1\n", "```\n"):
        await writer.chunk(piece)
    await writer.make_immutable()
    record = await store.get_message(answer.id)
    view = ChatView(answer.id, page_seq=record.last_seq)
    async for token in QuandaReader(answer):
        view.feed(token)
    assert view.flush() == []
    behind = ChatView(answer.id, page_seq=record.last_seq - 1)  # a page that missed the seal gets it
    async for token in QuandaReader(answer):
        behind.feed(token)
    assert behind.flush()
