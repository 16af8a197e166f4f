"""How an answer reads: bare URLs are links (http/https only, opened in a new tab, nothing else linked),
tables have borders — streamed and after a reload alike."""

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
ANSWER = ("See https://example.org/docs?page=2. or http://localhost:8080/x, not javascript:alert(1) nor "
          "ftp://files.example.org/a.\n\n| Todo | Done |\n|---|---|\n| buy milk | no |\n| call mum | yes |\n")


async def test_bare_urls_are_links_and_tables_have_borders(app_server, llm, browser):
    llm.script = Reply(chunks=[ANSWER[i:i + 5] for i in range(0, len(ANSWER), 5)], delay=0.01)
    page = await browser.new_page()
    await page.goto(app_server.url + "/p/simulator")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await page.fill("#chat-input", "links and a table")
    await page.keyboard.press("Enter")
    answer = page.locator("#msg-list li.msg.assistant")
    await expect(answer.locator("table td")).to_have_count(4, timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    for reloaded in (False, True):
        if reloaded:
            await page.reload()
            await expect(answer.locator("table td")).to_have_count(4, timeout=EXPECT_MS)
        links = answer.locator(".md a")
        await expect(links).to_have_count(2)
        assert [await a.get_attribute("href") for a in await links.all()] == [
            "https://example.org/docs?page=2", "http://localhost:8080/x"]
        await expect(links.first).to_have_attribute("target", "_blank")
        await expect(links.first).to_have_attribute("rel", "noopener noreferrer")
        await expect(answer).to_contain_text("not javascript:alert(1) nor ftp://files.example.org/a.")
        border = await answer.locator("table td").first.evaluate(
            "td => [getComputedStyle(td).borderTopWidth, getComputedStyle(td).borderTopStyle]")
        assert border == ["1px", "solid"], border
