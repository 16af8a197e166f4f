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
