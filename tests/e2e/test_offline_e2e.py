"""The server stopped and started again under an open tab: the banner says the connection is lost and when the
next try is; what is done meanwhile is listed as waiting, with Cancel; "Back online" is said once; a cancelled
action never runs."""

import asyncio
import re

import pytest
from playwright.async_api import expect

pytestmark = pytest.mark.e2e
EXPECT_MS = 30_000


async def test_offline_banner_queue_cancel_and_back_online(app_server, browser):
    browser.expect_error(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed|\[object Event\]")  # the retries
    page = await browser.new_page()
    await page.goto(app_server.url + "/p/todo")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    banner = page.locator("#connection")
    await expect(banner).to_be_hidden()
    await page.evaluate("""() => { window.backOnline = 0;
        new MutationObserver(() => { if (/Back online/.test(document.getElementById("connection").textContent))
            window.backOnline += 1; }).observe(document.getElementById("connection"), {childList: true, subtree: true}); }""")

    await asyncio.to_thread(app_server.stop)
    await expect(banner).to_be_visible(timeout=EXPECT_MS)
    await expect(banner).to_contain_text(re.compile(r"Connection lost — (retrying in \d+ s|reconnecting…)"))
    await expect(page.locator("#ws-state")).to_have_attribute("title", "Connection lost")
    await expect(page.locator("#todo-new")).to_be_focused()
    for name in ["buy milk", "call mum"]:
        await page.keyboard.type(name)
        await page.keyboard.press("Enter")
    queue = banner.locator(".connection-queue li")
    await expect(queue).to_have_text(["Add the todo “buy milk” — will be sent when back Cancel",
                                      "Add the todo “call mum” — will be sent when back Cancel"])
    await queue.filter(has_text="call mum").get_by_role("button", name="Cancel").click()
    await expect(queue).to_have_text(["Add the todo “buy milk” — will be sent when back Cancel"])
    await expect(page.locator("#todo-list .todo-name")).to_have_count(0)  # nothing applied while away

    await asyncio.to_thread(app_server.start)
    await expect(banner).to_contain_text("Back online — 1 action sent", timeout=EXPECT_MS)
    await expect(page.locator("#todo-list .todo-name")).to_have_text(["buy milk"], timeout=EXPECT_MS)
    await expect(banner).to_be_hidden(timeout=EXPECT_MS)
    assert await page.evaluate("window.backOnline") == 1  # said once
    await page.reload()
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(page.locator("#todo-list .todo-name")).to_have_text(["buy milk"])  # the cancelled one never ran
    await expect(banner).to_be_hidden()
