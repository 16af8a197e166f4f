"""A phone (390×844, touch): the chat is one tap away — a drawer over the page with its input on screen —,
todos are edited with a tap, and the connection's dot sits in the header, off every card."""

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import screenshot
from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def overlap(a, b):
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"] or
                a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


async def inside_the_screen(locator):
    box = await locator.bounding_box()
    assert box and box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= 390 and \
        box["y"] + box["height"] <= 844, box
    return box


async def test_the_chat_is_one_tap_away_with_its_input_on_screen(app_server, llm, browser):
    llm.script = Reply(chunks=["On ", "a phone."])
    page = await (await browser.new_context(**PHONE)).new_page()
    await page.goto(app_server.url + "/p/todo")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    card = await inside_the_screen(page.locator("#todo-card"))  # the page fills the screen
    dot = await inside_the_screen(page.locator("#ws-state"))
    assert not overlap(dot, card), "the dot is off the card"
    toggle = page.locator(".chat-toggle")
    await inside_the_screen(toggle)
    await toggle.tap()
    await expect(page.locator("#sidebar")).to_be_visible()
    await inside_the_screen(page.locator("#chat-input"))
    await inside_the_screen(page.locator("#chat-send"))
    await page.locator("#chat-input").tap()
    await page.keyboard.type("Hello from a phone")
    await page.locator("#chat-send").tap()
    await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("On a phone.", timeout=EXPECT_MS)
    await inside_the_screen(page.locator("#msg-list li.msg.assistant"))
    await screenshot(page, "phone-chat-drawer", caret="initial")
    await page.locator(".chat-close").tap()
    await expect(page.locator("#sidebar")).to_be_hidden()
    await expect(page.locator("#todo-new")).to_be_in_viewport()
    await expect(page.locator(".chat-toggle")).to_be_focused()  # the focus comes back where the drawer opened
    await page.keyboard.press("/")  # a keyboard with the phone: "/" opens the drawer and its box too
    await expect(page.locator("#chat-input")).to_be_focused()
    await inside_the_screen(page.locator("#chat-input"))


async def test_todos_are_edited_with_a_tap(app_server, browser):
    page = await (await browser.new_context(**PHONE)).new_page()
    await page.goto(app_server.url + "/p/todo")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await page.locator("#todo-new").fill("buy milk")
    await page.locator("#todo-add").tap()
    await expect(page.locator("#todo-1 .todo-name")).to_have_text("buy milk")
    await expect(page.locator(".todo-help .help-touch")).to_be_visible()  # not "double-click"
    await expect(page.locator(".todo-help .help-pointer")).to_be_hidden()
    edit = page.locator("#todo-1 [data-testid=edit]")
    box = await inside_the_screen(edit)
    assert box["height"] >= 40 and box["width"] >= 40, f"a finger's target: {box}"
    await edit.tap()
    await expect(page.locator("#todo-1-edit")).to_be_focused()
    await page.keyboard.press("End")
    await page.keyboard.type(" and oats")
    await page.keyboard.press("Enter")
    await expect(page.locator("#todo-1 .todo-name")).to_have_text("buy milk and oats", timeout=EXPECT_MS)
    await screenshot(page, "phone-todos-edited", caret="initial")  # (hiding it injects a style: CSP)
