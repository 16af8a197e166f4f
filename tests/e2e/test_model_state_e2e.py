"""What the chat says about its model: the badge's whole hint readable; with no model, the picker says so and
Send is off with the reason (and comes on by itself once a server answers); a model named by its file path
shown by its short name, the full one in a tooltip and in what is sent."""

import re

import pytest
from playwright.async_api import expect

from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer, free_port

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
CLIPPED = "el => el.scrollHeight > el.clientHeight + 1 || el.scrollWidth > el.clientWidth + 1"


async def open_chat(browser, url, viewport=None):
    page = await (await browser.new_context(viewport=viewport or {"width": 1100, "height": 680})).new_page()
    await page.goto(url + "/p/simulator")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def test_no_model_the_whole_hint_an_empty_picker_that_says_so_and_send_off_with_the_reason(tmp_path, browser):
    port = free_port()
    server = AppServer(tmp_path, OLLAMA_HOST=f"http://127.0.0.1:{port}", QUANDA_LLM_CHECK_S="0.5").start()
    try:
        page = await open_chat(browser, server.url)
        badge = page.locator("#llm-status")
        await expect(badge).to_have_class(re.compile(r"\bbad\b"))
        await expect(badge).to_contain_text("QUANDA_LLM_URL for an OpenAI-compatible server)")
        assert not await badge.evaluate(CLIPPED), "the badge's text is cut"
        picker, send = page.locator("#model-picker"), page.locator("#chat-send")
        await expect(picker).to_be_disabled()
        await expect(picker.locator("option")).to_have_text(["No model available"])
        await expect(send).to_be_disabled()
        reason = page.locator("#send-reason")
        await expect(reason).to_be_visible()
        await expect(reason).to_contain_text("no model to answer")
        await page.keyboard.press("/")
        await page.keyboard.type("Anyone there?")
        await page.keyboard.press("Enter")  # nothing to answer: nothing is sent
        await expect(page.locator("#chat-input")).to_have_value("Anyone there?")
        await expect(page.locator("#msg-list li.msg.q")).to_have_count(0)

        with LLMTestServer(Reply(chunks=["Here."]), port=port) as llm:  # the server comes up: no reload needed
            await expect(send).to_be_enabled(timeout=EXPECT_MS)
            await expect(reason).to_be_hidden()
            await expect(picker.locator("option")).to_have_text(["quanda-test"])
            await expect(picker).to_be_enabled()
            await page.locator("#chat-input").press("Enter")
            await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("Here.", timeout=EXPECT_MS)
            assert llm.chat_requests[-1].json["model"] == "quanda-test"
        await page.close()  # before the server goes, or its reconnect attempts fail in the console
    finally:
        server.stop()


async def test_a_model_named_by_its_path_is_shown_by_its_short_name(tmp_path, browser):
    full = "/home/me/models/Llama-3.2-3B-Instruct-Q4_K_M.gguf"
    with LLMTestServer(Reply(chunks=["Hi."]), models=[full, "/srv/other/qwen3-4b.gguf"]) as llm:
        server = AppServer(tmp_path, QUANDA_LLM_URL=llm.openai_url).start()
        try:
            page = await open_chat(browser, server.url)
            badge = page.locator("#llm-status")
            await expect(badge.locator(".llm-text")).to_have_text("LLM ready: Llama-3.2-3B-Instruct-Q4_K_M")
            await expect(badge).to_have_attribute("title", f"LLM ready: {full}")
            options = page.locator("#model-picker option")
            await expect(options).to_have_text(["Llama-3.2-3B-Instruct-Q4_K_M", "qwen3-4b"])
            await expect(options.first).to_have_attribute("title", full)
            assert not await page.locator("#model-picker").evaluate(CLIPPED)
            await page.fill("#chat-input", "Hello?")
            await page.keyboard.press("Enter")
            await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("Hi.", timeout=EXPECT_MS)
            assert llm.chat_requests[-1].json["model"] == full  # the full name is what is sent
            await page.close()
        finally:
            server.stop()
