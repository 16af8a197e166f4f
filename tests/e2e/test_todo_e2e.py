"""Todos in a real browser: by hand in two tabs, and by the LLM's JSON commands."""

import json

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def two_tabs(browser, url):
    context = await browser.new_context()
    tabs = []
    for _ in range(2):
        tab = await context.new_page()
        await tab.goto(url + "/p/todo")
        await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        tabs.append(tab)
    return tabs


def names(tab):
    return tab.locator("#todo-list .todo-name")


async def add(tab, name):
    await tab.fill("#todo-new", name)
    await tab.click("#todo-add")


async def test_manage_todos_by_hand_in_two_tabs(app_server, browser):
    tab1, tab2 = await two_tabs(browser, app_server.url)
    for name in ["buy milk", "call mum", "write report"]:
        await add(tab1, name)
        await expect(names(tab1).last).to_have_text(name)
    await expect(names(tab2)).to_have_text(["buy milk", "call mum", "write report"])
    await tab2.locator("#todo-1 [data-testid=toggle]").click()
    await expect(tab1.locator("#todo-1")).to_have_attribute("data-done", "1")
    await tab1.locator("#todo-3 [data-testid=up]").click()
    for tab in (tab1, tab2):  # the list is redrawn in both before the next edit starts
        await expect(names(tab)).to_have_text(["buy milk", "write report", "call mum"])
    await tab1.locator("#todo-2 input[name=name]").fill("call dad")
    await tab1.locator("#todo-2 [data-testid=edit-form] button").click()
    await expect(names(tab2)).to_have_text(["buy milk", "write report", "call dad"])
    await tab2.locator("#todo-1 [data-testid=delete]").click()
    await expect(names(tab1)).to_have_text(["write report", "call dad"])
    events = tab1.locator("#msg-list .event-line")
    await expect(events.filter(has_text="You added the todo 'buy milk' (id 1).")).to_have_count(1)
    await expect(events.filter(has_text="You deleted the todo 'buy milk' (id 1).")).to_have_count(1)
    await tab1.reload()
    await expect(names(tab1)).to_have_text(["write report", "call dad"])


async def test_the_llm_adds_a_todo_seen_in_both_tabs_with_a_result_line(app_server, llm, browser):
    llm.capabilities["quanda-test"] = ["completion"]  # a model without tools: JSON commands in the text
    command = {"action": "insert", "target": "todo", "args": {"name": "buy milk"}}
    llm.script = Reply(chunks=["Sure, adding it.\n\n```json\n", json.dumps(command), "\n```\n"], delay=0.02)
    tab1, tab2 = await two_tabs(browser, app_server.url)
    await tab1.fill("#chat-input", "add buy milk")
    await tab1.click("#chat-send")
    for tab in (tab1, tab2):
        await expect(names(tab)).to_have_text(["buy milk"], timeout=EXPECT_MS)
        await expect(tab.locator("#msg-list")).to_contain_text("✓ Added the todo 'buy milk' (id 1).")
    prompt = llm.chat_requests[-1].json["messages"][0]["content"]
    assert '"action": "insert", "target": "todo"' in prompt and "todo list is empty" in prompt
    await tab1.reload()  # a reload never runs the command again
    await expect(tab1.locator("#msg-list")).to_contain_text("✓ Added the todo 'buy milk' (id 1).")
    await expect(names(tab1)).to_have_text(["buy milk"])
    llm.script = Reply(chunks=["Okay."])
    await tab1.fill("#chat-input", "thanks")
    await tab1.click("#chat-send")
    await expect(tab1.locator("#msg-list li.msg.assistant").last).to_contain_text("Okay.", timeout=EXPECT_MS)
    sent = llm.chat_requests[-1].json
    assert any("Added the todo 'buy milk' (id 1)" in m["content"] for m in sent["messages"])  # fed back
    assert "id 1: buy milk" in sent["messages"][0]["content"]  # and in the current todo list
    assert len(await names(tab1).all()) == 1


async def test_delete_without_id_deletes_nothing_and_says_why(app_server, llm, browser):
    tab1, _ = await two_tabs(browser, app_server.url)
    await add(tab1, "keep me")
    await expect(names(tab1)).to_have_text(["keep me"])
    llm.script = Reply(chunks=['Deleting: {"action":"delete"', ', "target": "todo"}'])
    await tab1.fill("#chat-input", "delete everything")
    await tab1.click("#chat-send")
    await expect(tab1.locator("#msg-list")).to_contain_text("✗ command not run: delete todo needs 'id'",
                                                            timeout=EXPECT_MS)
    await expect(names(tab1)).to_have_text(["keep me"])


async def test_poke_asks_the_llm_to_react_to_what_the_user_just_did(app_server, llm, browser):
    llm.script = Reply(chunks=["Nice, milk is important."])
    tab1, _ = await two_tabs(browser, app_server.url)
    await add(tab1, "buy milk")
    await expect(names(tab1)).to_have_text(["buy milk"])
    await tab1.click("#chat-poke")
    await expect(tab1.locator("#msg-list li.msg.assistant")).to_contain_text("Nice, milk is important.",
                                                                              timeout=EXPECT_MS)
    await expect(tab1.locator("#msg-list li.msg.q")).to_have_count(0)  # a poke is not a question
    messages = llm.chat_requests[-1].json["messages"]
    assert {"role": "user", "content": "[UI event] You added the todo 'buy milk' (id 1)."} in messages
    assert messages[-1] == {"role": "user", "content": "[UI event] You pressed Poke."}
