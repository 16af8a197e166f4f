"""Speaking up, in-process against the scripted LLM: off until the workspace turns it on; at most one
unprompted answer per N ambient events and per interval (two servers at once: one); never while an answer is
being written, while the user types, while the LLM is unreachable, or once silenced; a plugin asks with a
reason the conversation shows."""

import asyncio

from quanda.api import speak_up
from quanda.chat import answers, conversation, drafts
from quanda.chat.speakup import SPOKE, after_event, set_enabled
from quanda.config import Settings
from tests.llm_server import Reply
from tests.test_tool_rounds import finished, make_handle, srv, wire  # noqa: F401

FAST = Settings(speak_up_events=3, speak_up_interval_s=0.0)


async def answers_of(h) -> list[str]:
    return [e["message_id"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == answers.ROLE]


async def ended(h) -> None:
    for task in list(h.ctx.jobs.tasks.values()):
        await finished(task)


async def events(h, count: int) -> list[bool]:
    spoke = []
    for i in range(count):
        await h.post_event(f"You did thing {i}.")
        spoke.append(bool(await answers_of(h)) and len(await answers_of(h)) > sum(spoke))
        await ended(h)
    return spoke


async def test_off_until_turned_on_then_once_per_n_events(make_handle, srv):
    h = make_handle(FAST)
    assert await events(h, 4) == [False] * 4  # off by default
    await set_enabled(h, True)
    assert await events(h, 6) == [False, False, True, False, False, True]  # the 3rd and the 6th since
    said = [e["text"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == "event"]
    assert sum(t.startswith(SPOKE) for t in said) == 2


async def test_its_own_result_lines_and_speaking_do_not_count(make_handle, srv):
    h = make_handle(Settings(speak_up_events=1, speak_up_interval_s=0.0))
    await set_enabled(h, True)
    for text in ("✓ Added the todo 'x' (id 1).", "✗ command not run: nope", SPOKE + "x"):
        assert not await after_event(h, text)
    assert await answers_of(h) == []


async def test_at_most_once_per_interval_even_from_two_servers_at_once(make_handle, srv):
    settings = Settings(speak_up_events=1, speak_up_interval_s=3600.0)
    h, other = make_handle(settings), make_handle(settings)
    await set_enabled(h, True)
    spoke = await asyncio.gather(after_event(h, "You did a."), after_event(other, "You did b."))
    assert sorted(spoke) == [False, True]
    await ended(h)
    await ended(other)
    assert not await after_event(h, "You did c.")  # still within the interval
    assert len(await answers_of(h)) == 1


async def test_never_while_an_answer_is_being_written(make_handle, srv):
    h = make_handle(Settings(speak_up_events=1, speak_up_interval_s=0.0))
    await set_enabled(h, True)
    srv.script = Reply(chunks=["slow "] * 40, delay=0.05)
    await answers.start_answer(h, "quanda-test")
    assert not await after_event(h, "You did a.")
    await ended(h)
    srv.script = Reply(chunks=["ok"])
    assert await after_event(h, "You did b.")
    await ended(h)


async def test_never_while_the_user_types(make_handle, srv):
    h = make_handle(Settings(speak_up_events=1, speak_up_interval_s=0.0))
    await set_enabled(h, True)
    await drafts.write(h, "I am typi")
    assert not await after_event(h, "You did a.")
    await drafts.discard(h)
    assert await after_event(h, "You did b.")
    await ended(h)


async def test_silenced_it_stays_quiet(make_handle, srv):
    h = make_handle(Settings(speak_up_events=1, speak_up_interval_s=0.0))
    await set_enabled(h, True)
    await set_enabled(h, False)
    assert not await after_event(h, "You did a.")
    assert await answers_of(h) == []


async def test_a_plugin_asks_it_to_speak_with_a_reason(make_handle, srv):
    h = make_handle()
    srv.script = Reply(chunks=["Your report is due."])
    assert await speak_up(h, "the report is due in an hour")  # not opted in: a plugin's request is its own
    await ended(h)
    said = [e["text"] for _k, e in await conversation.entries(h.store, h.owner) if e["type"] == "event"]
    assert said == [SPOKE + "the report is due in an hour"]
    [answer_id] = await answers_of(h)
    assert (await h.store.get_message(answer_id)).content == "Your report is due."
    assert srv.chat_requests[-1].json["messages"][-1]["content"].endswith("the report is due in an hour")


async def test_never_while_the_llm_is_unreachable(store):
    from quanda.chat import ChatState
    from quanda.context import AppContext
    from quanda.jobs import Jobs
    from quanda.llm import OllamaDriver
    from quanda.plugin import load_plugins
    from tests.servers import free_port

    ctx = AppContext(Settings(speak_up_events=1, speak_up_interval_s=0.0), store,
                     load_plugins(entry_point_group=None))
    ctx.llm = OllamaDriver(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    ctx.jobs = Jobs(store, 10.0, {})
    ctx.state["chat"] = ChatState(ctx)
    try:
        h = ctx.handle("owner-1")
        await set_enabled(h, True)
        assert not await after_event(h, "You did a.")
        assert not await speak_up(h, "a plugin's reason")
        assert await answers_of(h) == []
    finally:
        await ctx.jobs.close()
        await ctx.llm.aclose()
