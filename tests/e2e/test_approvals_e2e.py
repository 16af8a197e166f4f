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
    assert len(llm.chat_requests) == 2  # the model was asked once more, not twice
    # (the losing press's notice is cleared when the answer ends, as every chat notice; its 409 is tested over
    # HTTP in tests/test_approvals_api.py)


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


async def refused_in_one(tab1, tab2, pattern: str) -> None:
    """The tab whose press lost shows why (the notice under the chat); the other shows none."""
    found = "(t) => new RegExp(t).test(document.getElementById('chat-notice').textContent)"
    waits = [asyncio.ensure_future(tab.wait_for_function(found, arg=pattern, timeout=EXPECT_MS))
             for tab in (tab1, tab2)]
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in pending:
        wait.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    notices = [await tab.locator("#chat-notice").text_content() for tab in (tab1, tab2)]
    assert len([n for n in notices if n]) == 1, notices


def result_card(tab):
    return bubble(tab).get_by_role("group", name="Action result")


async def test_undo_restores_the_todo_once_and_a_second_undo_is_refused(app_server, llm, browser):
    llm.script = DELETE
    tab1, tab2 = await tabs(browser, app_server.url, 2)
    await asked(tab1)
    await card(tab1).get_by_role("button", name="Approve").click()
    await expect(tab1.locator("#todo-list .todo-name")).to_have_count(0, timeout=EXPECT_MS)
    for tab in (tab1, tab2):
        await expect(result_card(tab).get_by_role("button", name="Undo")).to_be_visible(timeout=EXPECT_MS)
    press = "document.querySelector('#msg-list [data-testid=undo]').click()"
    await asyncio.gather(tab1.evaluate(press), tab2.evaluate(press))  # a second Undo, at the same time
    for tab in (tab1, tab2):
        await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"], timeout=EXPECT_MS)
        await expect(result_card(tab)).to_contain_text("Undone", timeout=EXPECT_MS)
        await expect(result_card(tab).get_by_role("button", name="Undo")).to_have_count(0)
        await expect(tab.locator("#msg-list .event-line").filter(has_text="The user undid")).to_have_count(1)
    await refused_in_one(tab1, tab2, "undone already|changed since")


async def test_undo_after_the_user_renamed_the_todo_is_refused_with_a_reason(app_server, llm, browser):
    llm.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", {"name": "buy milk"})])]),
                        Reply(chunks=["Added it."]))
    [tab] = await tabs(browser, app_server.url, 1)
    await ask(tab, "add buy milk")
    await expect(result_card(tab).get_by_role("button", name="Undo")).to_be_visible(timeout=EXPECT_MS)
    await tab.locator("#todo-1 .todo-name").dblclick()
    await tab.locator("#todo-1-edit").fill("buy oat milk")
    await tab.locator("#todo-1-edit").press("Enter")
    await expect(tab.locator("#todo-1 .todo-name")).to_have_text("buy oat milk", timeout=EXPECT_MS)
    await result_card(tab).get_by_role("button", name="Undo").click()
    await expect(tab.locator("#chat-notice")).to_contain_text("changed since", timeout=EXPECT_MS)
    await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy oat milk"])


async def test_a_result_card_shows_the_row_and_leads_to_its_place(app_server, llm, browser):
    llm.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", {"name": "buy milk"})])]),
                        Reply(chunks=["Added it."]))
    [tab] = await tabs(browser, app_server.url, 1)
    await tab.goto(app_server.url + "/p/chat")
    await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await ask(tab, "add buy milk")
    link = result_card(tab).get_by_role("link", name="buy milk")
    await expect(link).to_be_visible(timeout=EXPECT_MS)
    await link.click()
    await expect(tab).to_have_url(app_server.url + "/p/todo#todo-1", timeout=EXPECT_MS)
    await expect(tab.locator("#todo-1 .todo-name")).to_have_text("buy milk", timeout=EXPECT_MS)
