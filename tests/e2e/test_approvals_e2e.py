"""Approvals in a real browser (the scripted LLM asks to delete a todo with a native tool call): the answer
shows a card with Approve and Reject and nothing runs before; Reject leaves the todo and the answer says so;
Approve pressed in two tabs at once deletes once; a reload while pending shows the card again."""

import asyncio

import pytest
from playwright.async_api import expect

from tests.e2e.test_tools_e2e import ask, bubble, tabs
from tests.llm_server import Chunk, Reply, Rounds, ToolCall

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
DELETE = Rounds(Reply(chunks=["Deleting it. ", Chunk(tool_calls=[ToolCall("todo_delete", {"id": 1})])]),
                Reply(chunks=["That is done."]))


async def with_milk(tab) -> None:
    await tab.fill("#todo-new", "buy milk")
    await tab.click("#todo-add")
    await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"], timeout=EXPECT_MS)


def card(tab):
    return bubble(tab).get_by_role("group", name="Approval")


async def asked(tab) -> None:
    await with_milk(tab)
    await ask(tab, "delete buy milk")
    await expect(card(tab).get_by_role("button", name="Approve")).to_be_visible(timeout=EXPECT_MS)
    await expect(card(tab)).to_contain_text("Deleted the todo 'buy milk' (id 1)")


async def test_a_delete_asked_by_the_llm_waits_for_approve(app_server, llm, browser):
    llm.script = DELETE
    [tab] = await tabs(browser, app_server.url, 1)
    await asked(tab)
    await expect(bubble(tab)).to_contain_text("waits for your approval")
    await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"])  # nothing ran yet
    await card(tab).get_by_role("button", name="Approve").click()
    await expect(tab.locator("#todo-list .todo-name")).to_have_count(0, timeout=EXPECT_MS)
    await expect(bubble(tab)).to_contain_text("That is done.", timeout=EXPECT_MS)
    await expect(bubble(tab)).to_contain_text("✓ Deleted the todo 'buy milk' (id 1).")
    await expect(bubble(tab)).not_to_contain_text("waits for your approval")
    await expect(card(tab)).to_contain_text("Approved")
    await expect(card(tab).get_by_role("button")).to_have_count(0)


async def test_reject_leaves_the_todo_and_the_answer_says_so(app_server, llm, browser):
    llm.script = DELETE
    [tab] = await tabs(browser, app_server.url, 1)
    await asked(tab)
    await card(tab).get_by_role("button", name="Reject").click()
    await expect(bubble(tab)).to_contain_text("That is done.", timeout=EXPECT_MS)
    await expect(bubble(tab)).to_contain_text("✗ todo_delete not run: the user rejected it")
    await expect(card(tab)).to_contain_text("Rejected")
    await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"])


async def test_approve_pressed_in_two_tabs_at_once_deletes_once(app_server, llm, browser):
    llm.script = DELETE
    tab1, tab2 = await tabs(browser, app_server.url, 2)
    await asked(tab1)
    await expect(card(tab2).get_by_role("button", name="Approve")).to_be_visible(timeout=EXPECT_MS)
    press = "document.querySelector('#msg-list [data-testid=approve]').click()"
    await asyncio.gather(tab1.evaluate(press), tab2.evaluate(press))  # both before either hears back
    for tab in (tab1, tab2):
        await expect(bubble(tab)).to_contain_text("That is done.", timeout=EXPECT_MS)
        await expect(tab.locator("#todo-list .todo-name")).to_have_count(0)
        text = "".join(await bubble(tab).locator(".md").all_text_contents())
        assert text.count("✓ Deleted the todo 'buy milk' (id 1).") == 1, text
        await expect(card(tab)).to_contain_text("Approved")
    assert len([r for r in llm.chat_requests]) == 2  # the model was asked once more, not twice


async def test_a_reload_while_pending_shows_the_card_again(app_server, llm, browser):
    llm.script = DELETE
    [tab] = await tabs(browser, app_server.url, 1)
    await asked(tab)
    await tab.reload()
    await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(card(tab).get_by_role("button", name="Approve")).to_be_visible(timeout=EXPECT_MS)
    await card(tab).get_by_role("button", name="Approve").click()
    await expect(tab.locator("#todo-list .todo-name")).to_have_count(0, timeout=EXPECT_MS)
    await expect(bubble(tab)).to_contain_text("That is done.", timeout=EXPECT_MS)
