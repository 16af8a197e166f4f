"""Screenshots of the app as it is: the chat (light and dark), the todos, the stream simulator, and a phone
(the todos, and the chat's drawer in the dark theme). Written to
tests/artifacts/ on every run for a reviewer; `QUANDA_UPDATE_SCREENSHOTS=1` also rewrites the README's
(docs/screenshots/)."""

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import screenshot
from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
VIEWPORT = {"width": 1100, "height": 680}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
ANSWER = ("Here is a plan for the week:\n\n1. **Monday**: buy milk and bread\n2. **Wednesday**: call mum\n"
          "3. **Friday**: write the report\n\nAnd a helper to count what is left:\n\n```python\n"
          "def left(todos):\n    return sum(1 for t in todos if not t[\"done\"])\n```\n")


async def open_page(context, url, path):
    page = await context.new_page()
    await page.goto(url + path)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def test_screenshots(app_server, llm, browser):
    llm.script = [Reply(chunks=["Paris is the capital of France."]),
                  Reply(chunks=[ANSWER[i:i + 12] for i in range(0, len(ANSWER), 12)], delay=0.005)]
    light = await browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = await open_page(light, app_server.url, "/p/todo")
    for name in ["buy milk and bread", "call mum", "write the report", "book the train to Lyon"]:
        await page.fill("#todo-new", name)
        await page.click("#todo-add")
        await expect(page.locator("#todo-list .todo-name").last).to_have_text(name)
    await page.locator("#todo-2 [data-testid=toggle]").click()
    await expect(page.locator("#todo-2")).to_have_attribute("data-done", "1")

    await page.fill("#chat-input", "What is the capital of France?")
    await page.click("#chat-send")
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("Paris", timeout=EXPECT_MS)
    await page.click("#chat-new")
    await expect(page.locator("#msg-list > li")).to_have_count(0)
    await page.fill("#chat-input", "Plan my week from my todos")
    await page.click("#chat-send")
    await expect(page.locator("#msg-list .md-code")).to_be_visible(timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    await page.locator("#todo-3 .todo-name").dblclick()
    await page.locator("#todo-3-edit").press_sequentially(" (draft)")
    await screenshot(page, "todos", readme=True)

    await page.locator("#todo-3-edit").press("Escape")
    await page.click("#menu >> text=Chat")
    old = page.locator("#chat-conversations > li").filter(has_text="capital of France")
    await old.locator("[data-testid=open]").click()
    await expect(page.locator("#chat-viewer h3")).to_have_text("What is the capital of France?")
    await screenshot(page, "chat-light", readme=True)

    dark = await browser.new_context(viewport=VIEWPORT, color_scheme="dark",
                                     storage_state=await light.storage_state())
    dark_page = await open_page(dark, app_server.url, "/p/chat")
    await dark_page.locator("#chat-conversations > li").filter(has_text="capital of France") \
        .locator("[data-testid=open]").click()
    await expect(dark_page.locator("#chat-viewer h3")).to_be_visible()
    background = "getComputedStyle(document.body).backgroundColor"
    assert await dark_page.evaluate(background) == "rgb(14, 17, 22)"  # the dark theme, from prefers-color-scheme
    assert await page.evaluate(background) == "rgb(245, 246, 248)"
    await screenshot(dark_page, "chat-dark", readme=True)

    await page.click("#menu >> text=Stream simulator")
    await page.fill("#sim-chunks", "400")
    await page.fill("#sim-delay-min", "5")
    await page.fill("#sim-delay-max", "10")
    await page.click("#sim-start")
    bar = page.locator("#sim-run progress")
    await expect(bar).to_have_attribute("value", "400", timeout=EXPECT_MS)
    await screenshot(page, "simulator", readme=True)

    phone = await browser.new_context(**PHONE, color_scheme="light", storage_state=await light.storage_state())
    phone_page = await open_page(phone, app_server.url, "/p/todo")
    await expect(phone_page.locator("#todo-list .todo-name")).to_have_count(4)
    await screenshot(phone_page, "phone-todos", readme=True, caret="initial")  # (hiding the caret injects a style)
    dark_phone = await browser.new_context(**PHONE, color_scheme="dark", storage_state=await light.storage_state())
    chat_page = await open_page(dark_phone, app_server.url, "/p/todo")
    await chat_page.locator(".chat-toggle").tap()
    await expect(chat_page.locator("#msg-list .md-code")).to_be_visible()
    await expect(chat_page.locator("#chat-input")).to_be_in_viewport()
    await screenshot(chat_page, "phone-chat-dark", readme=True, caret="initial")
