"""The prompt fitted to the model's window (app/chat/window.py), on the real stores: whatever the
conversation's length and the plugins' live state, the system prompt, the bounded state, the latest question
and room for the answer fit; older turns go first; the window comes from the conversation, the server or
QUANDA_LLM_CONTEXT; reading the last N entries reads N."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quanda.config import Settings
from quanda.context import AppContext
from quanda.core import QuandaMessage, QuandaWriter
from quanda.api import Plugin
from quanda.plugin import load_plugins
from quanda.chat import conversation, window

OWNER = "w1"


class FakeLLM:
    """What window.py asks of a driver: a window and maybe token counts (none: estimates)."""

    def __init__(self, told: int | None = None, by_request: bool = False, tokenizer: bool = False):
        self.told, self.window_by_request, self.tokenizer = told, by_request, tokenizer
        self.counted = 0

    async def context_window(self, model):
        return self.told

    async def count_tokens(self, texts, model):
        if not self.tokenizer:
            return None
        self.counted += len(texts)
        return [len(t.split()) for t in texts]


def ctx_for(store, llm, state_items: int = 0, **settings) -> AppContext:
    extra = []
    if state_items:
        async def state(h):
            return "Big state:\n" + "\n".join(f"- item {i} with some words in it" for i in range(state_items))
        extra.append(Plugin(name="bulky", label="Bulky", prompt_context=state))
    ctx = AppContext(Settings(**settings), store, load_plugins(entry_point_group=None, extra=extra), llm=llm)
    return ctx


async def say(h, role: str, text: str) -> str:
    message = await QuandaMessage.create(h.store, role=role, content=text)
    await QuandaWriter(message).make_immutable()
    await conversation.add_entry(h.store, h.owner, {"type": "q" if role == "q" else "assistant",
                                                    "message_id": message.id, "status": "done"})
    return message.id


async def answer_slot(h) -> str:
    message = await QuandaMessage.create(h.store, role="assistant")
    await conversation.add_entry(h.store, h.owner, {"type": "assistant", "message_id": message.id,
                                                    "status": "generating"})
    return message.id


def tokens(fitted: window.Fitted) -> int:
    return sum(window.estimate(m["content"]) for m in fitted.messages)


async def test_a_long_conversation_keeps_the_latest_turns_and_room_for_the_answer(store):
    h = ctx_for(store, FakeLLM(), llm_context=4096).handle(OWNER)
    for n in range(40):
        await say(h, "q", f"Question {n}: " + "blah " * 200)
        await say(h, "assistant", f"Answer {n}: " + "yes " * 200)
    await say(h, "q", "The latest question?")
    fitted = await window.fit(h, await answer_slot(h), "m", tools_offered=False)
    assert fitted.window == 4096 and fitted.counted_by == "estimate"
    assert fitted.messages[0]["role"] == "system" and fitted.messages[-1]["content"] == "The latest question?"
    assert tokens(fitted) <= fitted.window - window.ANSWER_MIN and fitted.max_tokens >= window.ANSWER_MIN
    assert fitted.prompt_tokens + fitted.max_tokens == fitted.window
    assert fitted.dropped > 0 and fitted.seen_from is not None
    kept = [m["content"] for m in fitted.messages[1:]]
    assert kept[0].startswith("Question")  # what the assistant sees starts at a message, never midway
    assert "Question 39" in " ".join(kept) and "Question 0:" not in " ".join(kept)


async def test_a_huge_live_state_is_cut_to_its_share_with_a_note(store):
    h = ctx_for(store, FakeLLM(), state_items=5000, llm_context=4096).handle(OWNER)
    await say(h, "q", "Hello?")
    fitted = await window.fit(h, await answer_slot(h), "m", tools_offered=False)
    system = fitted.messages[0]["content"]
    assert "left out to fit the model's context window" in system and "live state" in fitted.cut
    assert window.estimate(system) < fitted.window * (window.STATE_SHARE + 0.5)
    assert fitted.messages[-1]["content"] == "Hello?"


async def test_a_question_longer_than_the_window_keeps_both_ends(store):
    h = ctx_for(store, FakeLLM(), llm_context=1024).handle(OWNER)
    await say(h, "q", "START " + "middle " * 5000 + " END")
    fitted = await window.fit(h, await answer_slot(h), "m", tools_offered=False)
    question = fitted.messages[-1]["content"]
    assert question.startswith("START") and question.endswith("END") and "left out" in question
    assert tokens(fitted) <= fitted.window


@pytest.mark.parametrize(("told", "by_request", "own", "expected"), [
    (None, False, None, 4096),   # nothing known: QUANDA_LLM_CONTEXT
    (2048, False, None, 2048),   # llama.cpp's /props, or a refusal that named it
    (2048, False, 1024, 1024),   # the conversation asks for less
    (2048, False, 8192, 2048),   # never more than the server allows
    (131072, True, None, 4096),  # Ollama: num_ctx is QUANDA_LLM_CONTEXT, capped by the trained length
    (2048, True, None, 2048),
    (131072, True, 16384, 16384),
])
async def test_the_window(store, told, by_request, own, expected):
    h = ctx_for(store, FakeLLM(told, by_request), llm_context=4096).handle(OWNER)
    assert await window.window_for(h, "m", own) == expected


async def test_the_servers_tokenizer_is_used_and_its_counts_reused(store):
    llm = FakeLLM(tokenizer=True)
    h = ctx_for(store, llm, llm_context=2048).handle(OWNER)
    await say(h, "q", "one two three")
    fitted = await window.fit(h, await answer_slot(h), "m", tools_offered=False)
    assert fitted.counted_by == "server" and llm.counted > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=30),
       context=st.sampled_from([512, 1024, 4096]))
async def test_any_conversation_fits_any_window(store, turns, context):
    h = ctx_for(store, FakeLLM(), llm_context=context).handle(f"w{len(turns)}-{context}-{sum(turns)}")
    await conversation.start_new(store, h.owner)
    for n, size in enumerate(turns):
        await say(h, "q" if n % 2 == 0 else "assistant", f"turn {n} " + "x " * size)
    fitted = await window.fit(h, await answer_slot(h), "m", tools_offered=False)
    assert tokens(fitted) <= fitted.window, (turns, context)
    assert fitted.max_tokens >= window.ANSWER_MIN


async def test_reading_the_last_entries_reads_only_those(store):
    h = ctx_for(store, FakeLLM()).handle(OWNER)
    for n in range(100):
        await conversation.add_entry(store, OWNER, {"type": "event", "text": f"e{n}"})
    calls = []
    real_all, real_last = store.list_records, store.list_last_records

    async def spy_all(kind, prefix=""):
        calls.append(("all", kind))
        return await real_all(kind, prefix)

    async def spy_last(kind, prefix, count):
        calls.append(("last", kind, count))
        return await real_last(kind, prefix, count)

    store.list_records, store.list_last_records = spy_all, spy_last
    try:
        found = await conversation.entries(store, OWNER, limit=5)
    finally:
        store.list_records, store.list_last_records = real_all, real_last
    assert [e["text"] for _k, e in found] == [f"e{n}" for n in range(95, 100)]
    assert ("last", conversation.KIND, 5) in calls and ("all", conversation.KIND) not in calls
    assert h.owner == OWNER
