"""Keyboard only (page.keyboard, no clicks): focus stays on the todo list after a toggle or a delete, moves to
Send after Stop; "/" focuses the chat's box from anywhere and Escape leaves it; "Skip to chat" is the first Tab."""

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def open_page(browser, url, path="/p/todo"):
    page = await browser.new_page()
    await page.goto(url + path)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def active(page):
    return await page.evaluate("""() => { const a = document.activeElement;
        return a === document.body ? "body" : (a.id || a.closest("[id]").id) + (a.dataset.testid ? " " + a.dataset.testid : ""); }""")


async def tab_to(page, selector, limit=60, key="Tab"):
    """Press Tab (or `key`) until `selector` has the focus (fails after `limit` presses)."""
    for _ in range(limit):
        if await page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
        await page.keyboard.press(key)
    raise AssertionError(f"{selector} never got the focus by Tab; it ended on {await active(page)}")


async def add_by_keyboard(page, names):
    await expect(page.locator("#todo-new")).to_be_focused()
    for name in names:
        await page.keyboard.type(name)
        await page.keyboard.press("Enter")
        await expect(page.locator("#todo-list .todo-name").last).to_have_text(name)


async def test_focus_stays_on_the_list_after_a_toggle_or_a_delete(app_server, browser):
    page = await open_page(browser, app_server.url)
    await add_by_keyboard(page, ["buy milk", "call mum", "write report", "book train"])
    await tab_to(page, "#todo-2 [data-testid=toggle]")
    await page.keyboard.press("Space")
    await expect(page.locator("#todo-2")).to_have_attribute("data-done", "1")
    await expect(page.locator("#todo-2 [data-testid=toggle]")).to_be_focused()  # the row was redrawn: kept
    await page.keyboard.press("Space")
    await expect(page.locator("#todo-2")).to_have_attribute("data-done", "0")
    await expect(page.locator("#todo-2 [data-testid=toggle]")).to_be_focused()

    await tab_to(page, "#todo-2 [data-testid=delete]")
    await page.keyboard.press("Enter")
    await expect(page.locator("#todo-2")).to_have_count(0)
    await expect(page.locator("#todo-3")).to_be_focused()  # the next row
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#todo-4")).to_be_focused()
    await tab_to(page, "#todo-4 [data-testid=delete]")
    await page.keyboard.press("Enter")
    await expect(page.locator("#todo-4")).to_have_count(0)
    await expect(page.locator("#todo-3")).to_be_focused()  # the last row went: the one before it
    await page.keyboard.press("ArrowUp")
    await expect(page.locator("#todo-1")).to_be_focused()
    await page.keyboard.press("Enter")  # and Enter on a row edits it, as before
    await expect(page.locator("#todo-1-edit")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#todo-1")).to_be_focused()


async def test_slash_focuses_the_chat_escape_leaves_and_skip_to_chat_is_the_first_tab(app_server, browser):
    page = await open_page(browser, app_server.url)
    await add_by_keyboard(page, ["buy milk"])
    await page.keyboard.press("/")  # typed in a field: a character like any other
    await expect(page.locator("#todo-new")).to_have_value("/")
    await page.keyboard.press("Backspace")
    await tab_to(page, "#todo-1")
    await page.keyboard.press("/")
    await expect(page.locator("#chat-input")).to_be_focused()
    await expect(page.locator("#chat-input")).to_have_value("")  # the key itself is not typed
    await page.keyboard.type("hello")
    await page.keyboard.press("Escape")
    assert await active(page) == "body"
    await expect(page.locator("#chat-input")).to_have_value("hello")  # left, not lost

    page = await open_page(browser, app_server.url, "/p/simulator")  # a page with no field focused at first
    await page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    await expect(skip).to_be_focused()
    box = await skip.bounding_box()
    assert box and box["y"] >= 0, "the skip link shows when it has the focus"
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat-input")).to_be_focused()

    page = await open_page(browser, app_server.url, "/p/todo#/active")
    await expect(page.locator("#todo-new")).to_be_focused()
    await tab_to(page, "a.skip-link", limit=10, key="Shift+Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat-input")).to_be_focused()
    assert await page.evaluate("location.hash") == "#/active"  # the todo filter is left as it was


async def test_after_stop_the_focus_is_on_send(app_server, llm, browser):
    llm.script = Reply(chunks=[f"w{i} " for i in range(2000)], delay=0.02)
    page = await open_page(browser, app_server.url, "/p/simulator")
    await page.keyboard.press("/")
    await page.keyboard.type("Count slowly")
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat-stop")).to_be_visible(timeout=EXPECT_MS)
    await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("w3", timeout=EXPECT_MS)
    await tab_to(page, "#chat-stop", limit=5)
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_focused()
