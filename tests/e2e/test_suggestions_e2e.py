"""Suggested prompts in a real browser: they follow the todo list as it changes, and one click asks."""

import pytest
from playwright.async_api import expect

from tests.e2e.test_approvals_e2e import with_milk
from tests.e2e.test_tools_e2e import bubble, tabs
from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def test_suggestions_follow_the_list_and_one_click_asks(app_server, llm, browser):
    llm.script = Reply(chunks=["Start with the milk."])
    [tab] = await tabs(browser, app_server.url, 1)
    offered = tab.get_by_role("group", name="Suggestions").get_by_role("button")
    await expect(offered).to_have_text(["Add three things I need to do this week to my todos"], timeout=EXPECT_MS)
    await with_milk(tab)
    await expect(offered).to_have_text(["1 todo is open: which should I do first?", "Mark 'buy milk' done"],
                                       timeout=EXPECT_MS)
    await offered.first.click()
    await expect(bubble(tab)).to_contain_text("Start with the milk.", timeout=EXPECT_MS)
    await expect(tab.locator("#msg-list li.msg.q")).to_contain_text("1 todo is open: which should I do first?")
    assert llm.chat_requests[-1].json["messages"][-1]["content"] == "1 todo is open: which should I do first?"


async def test_speak_up_is_off_until_turned_on_then_answers_after_three_things(app_server, llm, browser):
    llm.script = Reply(chunks=["You have three todos now."])
    tab1, tab2 = await tabs(browser, app_server.url, 2)
    toggle = tab1.get_by_role("button", name="Speak up: off")
    await tab1.fill("#todo-new", "one")
    await tab1.click("#todo-add")
    await expect(tab1.locator("#todo-list .todo-name")).to_have_text(["one"], timeout=EXPECT_MS)
    await toggle.click()
    for tab in (tab1, tab2):  # every tab of the workspace shows it on
        await expect(tab.get_by_role("button", name="Speak up: on")).to_have_attribute("aria-pressed", "true",
                                                                                       timeout=EXPECT_MS)
    for name in ("two", "three"):
        await tab1.fill("#todo-new", name)
        await tab1.click("#todo-add")
        await expect(tab1.locator("#todo-list .todo-name").last).to_have_text(name, timeout=EXPECT_MS)
    await expect(bubble(tab1)).to_have_count(0)  # two events since it was turned on: not yet
    await tab1.fill("#todo-new", "four")
    await tab1.click("#todo-add")
    await expect(tab1.locator("#msg-list .event-line").filter(has_text="The assistant speaks up")).to_have_count(
        1, timeout=EXPECT_MS)
    await expect(bubble(tab1)).to_contain_text("You have three todos now.", timeout=EXPECT_MS)
    await tab1.get_by_role("button", name="Speak up: on").click()  # silenced
    await expect(tab2.get_by_role("button", name="Speak up: off")).to_be_visible(timeout=EXPECT_MS)
