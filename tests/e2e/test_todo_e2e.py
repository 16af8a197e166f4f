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
    await expect(tab1.locator("#todo-new")).to_be_focused()  # ready for the next one
    await expect(names(tab2)).to_have_text(["buy milk", "call mum", "write report"])
    await tab2.locator("#todo-1 [data-testid=toggle]").click()
    await expect(tab1.locator("#todo-1")).to_have_attribute("data-done", "1")
    await expect(tab1.locator("#todo-1 [data-testid=toggle]")).to_be_checked()
    await tab1.locator("#todo-3 [data-testid=up]").click()
    for tab in (tab1, tab2):
        await expect(names(tab)).to_have_text(["buy milk", "write report", "call mum"])
    await rename(tab1, 2, "call dad")
    await expect(names(tab2)).to_have_text(["buy milk", "write report", "call dad"])
    await tab2.locator("#todo-1 [data-testid=delete]").click()
    await expect(names(tab1)).to_have_text(["write report", "call dad"])
    events = tab1.locator("#msg-list .event-line")
    await expect(events.filter(has_text="You added the todo 'buy milk' (id 1).")).to_have_count(1)
    await expect(events.filter(has_text="You renamed the todo 'call mum' to 'call dad' (id 2).")).to_have_count(1)
    await expect(events.filter(has_text="You deleted the todo 'buy milk' (id 1).")).to_have_count(1)
    await tab1.reload()
    await expect(names(tab1)).to_have_text(["write report", "call dad"])


async def rename(tab, todo_id, name):
    """Double-click the name, type, Enter: as in TodoMVC."""
    await tab.locator(f"#todo-{todo_id} .todo-name").dblclick()
    editor = tab.locator(f"#todo-{todo_id}-edit")
    await expect(editor).to_be_focused()
    await editor.fill(name)
    await editor.press("Enter")
    await expect(tab.locator(f"#todo-{todo_id} .todo-name")).to_have_text(name)


async def test_an_edit_in_progress_survives_changes_made_in_another_tab(app_server, browser):
    tab1, tab2 = await two_tabs(browser, app_server.url)
    for name in ["buy milk", "call mum", "write report"]:
        await add(tab2, name)
    await expect(names(tab1)).to_have_text(["buy milk", "call mum", "write report"])
    await tab1.locator("#todo-1 .todo-name").dblclick()
    editor = tab1.locator("#todo-1-edit")
    await editor.press_sequentially(" and oat")
    frames = []
    tab1.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    await tab2.locator("#todo-2 [data-testid=toggle]").click()  # another todo changes
    await expect(tab1.locator("#todo-2")).to_have_attribute("data-done", "1")
    await rename(tab2, 3, "write the report")
    await expect(names(tab1).nth(2)).to_have_text("write the report")
    await add(tab2, "new one")
    await expect(names(tab1)).to_have_count(4)
    await tab2.locator("#todo-1 [data-testid=toggle]").click()  # the row being edited changes
    await expect(tab1.locator("#todo-1")).to_have_attribute("data-done", "1")
    await tab2.locator("#todo-1 [data-testid=down]").click()  # and moves
    await expect(names(tab2)).to_have_text(["call mum", "buy milk", "write the report", "new one"])
    await expect(tab1.locator("#todo-list > li").first).to_have_id("todo-2")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("buy milk and oat")  # the edit in progress, untouched
    await editor.press_sequentially(" milk")
    await editor.press("Enter")
    for tab in (tab1, tab2):
        await expect(names(tab)).to_have_text(["call mum", "buy milk and oat milk", "write the report", "new one"])
    # only the rows each change touched were sent: never the whole list
    assert not any('id="todo-list"' in str(f) and "hx-swap-oob" in str(f) for f in frames)


async def test_todomvc_keys_filters_count_and_clear_done(app_server, browser):
    tab, other = await two_tabs(browser, app_server.url)
    for name in ["alpha", "beta", "gamma"]:
        await add(tab, name)
    await expect(tab.locator("#todo-count")).to_have_text("3 items left")
    row = tab.locator("#todo-2")
    await row.focus()
    await row.press("Enter")  # Enter on a focused row edits it
    editor = tab.locator("#todo-2-edit")
    await expect(editor).to_be_focused()
    await editor.fill("beta changed")
    await editor.press("Escape")  # cancels: nothing sent
    await expect(tab.locator("#todo-2 .todo-name")).to_have_text("beta")
    await expect(row).to_be_focused()
    await tab.locator("#todo-3 [data-testid=edit]").click()
    await tab.locator("#todo-3-edit").press("Enter")  # unchanged: nothing sent either
    await tab.locator("#todo-1 [data-testid=toggle]").click()
    await expect(tab.locator("#todo-count")).to_have_text("2 items left")
    await expect(other.locator("#todo-count")).to_have_text("2 items left")
    await tab.click("text=Active")
    await expect(tab.locator("#todo-1")).to_be_hidden()
    await expect(tab.locator("#todo-2")).to_be_visible()
    await tab.click(".todo-filters >> text=Done")
    await expect(tab.locator("#todo-1")).to_be_visible()
    await expect(tab.locator("#todo-2")).to_be_hidden()
    await expect(other.locator("#todo-2")).to_be_visible()  # filters belong to the tab
    await tab.click(".todo-filters >> text=All")
    await tab.click("#todo-clear-done")
    await expect(names(other)).to_have_text(["beta", "gamma"])
    await expect(tab.locator("#todo-clear-done")).to_be_disabled()
    await tab.click("#todo-toggle-all")
    await expect(tab.locator("#todo-count")).to_have_text("0 items left")
    await expect(other.locator("#todo-list li.done")).to_have_count(2)
    await tab.locator("#todo-2 .todo-name").dblclick()
    await tab.locator("#todo-2-edit").fill("")
    await tab.locator("#todo-2-edit").press("Enter")  # an empty name deletes the todo
    await expect(names(other)).to_have_text(["gamma"])
    events = await tab.locator("#msg-list .event-line").all_text_contents()
    assert not any("'beta changed'" in e or "to 'gamma'" in e for e in events), events
    assert "You cleared 1 done todo: 'alpha'." in events


async def test_a_refused_todo_is_explained_by_the_form(app_server, browser):
    tab, _ = await two_tabs(browser, app_server.url)
    await tab.evaluate("document.getElementById('todo-new').removeAttribute('maxlength')")
    await add(tab, "x" * 201)
    notice = tab.locator("#todo-error")
    await expect(notice).to_contain_text("a todo needs a name of 1 to 200 characters")
    await expect(tab.locator("#todo-new")).to_have_value("x" * 201)  # the refused name is not lost
    await expect(tab.locator("#ws-notice")).to_be_empty()
    await tab.fill("#todo-new", "fine")  # no longer true once the name is edited
    await expect(notice).to_be_empty()
    await add(tab, "x" * 201)
    await expect(notice).not_to_be_empty()
    await add(tab, "fine")  # or once a todo is added
    await expect(names(tab)).to_have_text(["fine"])
    await expect(notice).to_be_empty()


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


async def test_changes_made_while_a_tab_was_disconnected_show_once_it_reconnects(app_server, browser):
    from tests.servers import CuttableProxy
    browser.expect_error(r"ERR_CONNECTION|WebSocket connection to .* failed|\[object Event\]")
    async with CuttableProxy(app_server.port) as proxy:
        away = await (await browser.new_context()).new_page()
        await away.goto(proxy.url + "/p/todo")
        await expect(away.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        here = (await two_tabs(browser, app_server.url))[0]
        proxy.cut()
        await expect(away.locator("#ws-state")).to_have_attribute("data-state", "closed", timeout=EXPECT_MS)
        await add(here, "added while the other tab was cut off")
        await expect(names(here)).to_have_text(["added while the other tab was cut off"])
        await expect(away.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        await expect(names(away)).to_have_text(["added while the other tab was cut off"], timeout=EXPECT_MS)
