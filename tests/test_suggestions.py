"""Suggested prompts (in-process, against the scripted LLM server): at most three, from the plugins' state,
following it; none while the LLM is unreachable; a plugin whose hook fails takes only its own away."""

from fasthtml.common import to_xml

from quanda.api import Plugin, apply_change
from quanda.chat import ChatState
from quanda.chat.suggest import suggestions, view
from quanda.config import Settings
from quanda.context import AppContext
from quanda.jobs import Jobs
from quanda.llm import OllamaDriver
from quanda.plugin import load_plugins
from quanda.plugins.todo import plan_add, plan_toggle
from tests.servers import free_port
from tests.test_tool_rounds import make_handle, srv, wire  # noqa: F401


async def test_at_most_three_following_the_todo_list(make_handle, srv):
    async def many(h):
        return [f"extra {i}" for i in range(5)]

    h = make_handle()
    assert await suggestions(h) == ["Add three things I need to do this week to my todos"]
    for name in ("buy milk", "call mum"):
        await apply_change(h, await plan_add(h, name))
    assert await suggestions(h) == ["2 todos are open: which should I do first?", "Mark 'buy milk' done"]
    await apply_change(h, await plan_toggle(h, 1))
    assert await suggestions(h) == ["1 todo is open: which should I do first?", "Delete the 1 done todo",
                                    "Mark 'call mum' done"]
    crowded = make_handle(extra=[Plugin(name="many", label="Many", suggest=many)])
    assert len(await suggestions(crowded)) == 3
    html = to_xml(await view(h))
    assert html.count('data-testid="suggestion"') == 3 and '"action": "chat.send"' in html.replace("&quot;", '"')


async def test_none_while_the_llm_is_unreachable(store):
    ctx = AppContext(Settings(), store, load_plugins(entry_point_group=None))
    ctx.llm = OllamaDriver(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    ctx.jobs = Jobs(store, 10.0, {})
    ctx.state["chat"] = ChatState(ctx)
    try:
        h = ctx.handle("owner-1")
        await apply_change(h, await plan_add(h, "buy milk"))
        assert await suggestions(h) == []
        assert 'data-testid="suggestion"' not in to_xml(await view(h))
    finally:
        await ctx.jobs.close()
        await ctx.llm.aclose()


async def test_a_failing_hook_takes_only_its_own_away(make_handle, srv):
    async def broken(h):
        raise RuntimeError("bug")

    h = make_handle(extra=[Plugin(name="broken", label="Broken", suggest=broken)])
    assert await suggestions(h) == ["Add three things I need to do this week to my todos"]
