"""What an answer's bubble shows and offers, in a real browser: how it ended after a reload (a failed answer
sealed by the next question keeps its reason, offers no Retry), its usage line, Regenerate and the version
switcher (‹ 2/3 ›); the conversation's settings from the sidebar; rename, delete and search on the Chat page;
the marker of what the assistant no longer sees."""

import re

import pytest
from playwright.async_api import expect

from tests.e2e.test_conversations_e2e import EXPECT_MS, ask_and_wait, open_tab
from tests.llm_server import Reply
from tests.servers import AppServer

pytestmark = pytest.mark.e2e


async def test_outcome_usage_regenerate_and_versions(app_server, llm, browser):
    llm.script = [Reply(status=500, error="model crashed"), Reply(chunks=["Second answer."]),
                  Reply(chunks=["Another take."])]
    page = await open_tab(await browser.new_context(), app_server.url)
    await page.fill("#chat-input", "First")
    await page.click("#chat-send")
    failed = page.locator("#msg-list li.msg.assistant").first
    await expect(failed.locator(".msg-warning")).to_contain_text("model crashed", timeout=EXPECT_MS)
    await expect(failed.locator("[data-testid=retry]")).to_be_visible()
    await ask_and_wait(page, "Second", "Second answer.")
    await page.reload()
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    failed = page.locator("#msg-list li.msg.assistant").first
    await expect(failed.locator(".msg-outcome")).to_contain_text(re.compile("Failed.*model crashed"))
    await expect(failed.locator("[data-testid=retry]")).to_have_count(0)  # sealed: Retry would not work
    await expect(failed.locator("[data-testid=regenerate]")).to_have_count(0)  # not the last answer
    last = page.locator("#msg-list li.msg.assistant").last
    await expect(last.locator("[data-testid=usage]")).to_contain_text(re.compile(r"tokens in · .* out"))
    await page.click("#menu >> text=Chat")
    await page.locator("#chat-conversations [data-testid=open]").first.click()
    archived = page.locator("#chat-viewer li.msg.assistant").first
    await expect(archived.locator(".msg-outcome")).to_contain_text(re.compile("Failed.*model crashed"))
    await expect(page.locator("#chat-viewer [data-testid=usage]")).to_have_count(1)

    await last.locator("[data-testid=regenerate]").click()
    last = page.locator("#msg-list li.msg.assistant").last
    await expect(last).to_contain_text("Another take.", timeout=EXPECT_MS)
    await expect(last.locator("[data-testid=version-no]")).to_have_text("2/2", timeout=EXPECT_MS)
    await last.locator("[data-testid=version-prev]").click()
    last = page.locator("#msg-list li.msg.assistant").last
    await expect(last).to_contain_text("Second answer.", timeout=EXPECT_MS)
    await expect(last.locator("[data-testid=version-no]")).to_have_text("1/2")
    await expect(last.locator("[data-testid=version-prev]")).to_be_disabled()


async def test_conversation_settings_rename_delete_search(app_server, llm, browser):
    llm.script = [Reply(chunks=["About apples."]), Reply(chunks=["About pears."])]
    page = await open_tab(await browser.new_context(), app_server.url)
    await ask_and_wait(page, "Tell me about apples", "About apples.")
    await page.click("#chat-settings summary")
    await page.fill("#chat-settings textarea[name=system_prompt]", "Answer like a pirate.")
    await page.fill("#chat-settings input[name=temperature]", "0.4")
    await page.click("#chat-settings [data-testid=save-settings]")
    await page.click("#chat-new")
    await expect(page.locator("#chat-settings textarea[name=system_prompt]")).to_have_value("")  # its own
    await ask_and_wait(page, "Tell me about pears", "About pears.")
    assert "pirate" not in llm.chat_requests[-1].json["messages"][0]["content"]

    await page.click("#menu >> text=Chat")
    rows = page.locator("#chat-conversations > li")
    await expect(rows).to_have_count(2)
    apples = rows.filter(has_text="Tell me about apples")
    await apples.locator("[data-testid=rename]").click()
    await apples.locator(".rename-form input[name=title]").fill("Fruit notes")
    await apples.locator("[data-testid=rename-save]").click()
    await expect(rows.filter(has_text="Fruit notes")).to_have_count(1, timeout=EXPECT_MS)

    await page.fill("#chat-search", "apples")
    await page.click("[data-testid=search]")
    hits = page.locator("#chat-search-results [data-testid=search-hit]")
    await expect(hits).to_have_count(1, timeout=EXPECT_MS)
    await expect(hits.first).to_have_text("Fruit notes")
    await hits.first.click()
    await expect(page.locator("#chat-viewer h3")).to_have_text("Fruit notes")

    fruit = rows.filter(has_text="Fruit notes")
    await fruit.locator("[data-testid=continue]").click()
    await expect(page.locator("#msg-list")).to_contain_text("About apples.", timeout=EXPECT_MS)
    await expect(page.locator("#chat-settings textarea[name=system_prompt]")).to_have_value("Answer like a pirate.")
    await fruit.locator("[data-testid=delete]").click()
    await fruit.locator("[data-testid=delete-confirm]").click()
    await expect(rows).to_have_count(1, timeout=EXPECT_MS)
    await expect(page.locator("#msg-list")).to_contain_text("About pears.", timeout=EXPECT_MS)  # the other one


async def test_the_horizon_marker_shows_what_the_assistant_no_longer_sees(tmp_path, llm, browser):
    llm.script = Reply(chunks=["Short answer."])
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", QUANDA_LLM_CONTEXT="600").start()
    context = await browser.new_context()
    try:
        page = await open_tab(context, server.url)
        for n in range(4):
            await ask_and_wait(page, f"Question {n} " + "word " * 150, "Short answer.")
        marker = page.locator("#msg-list [data-testid=horizon]")
        await expect(marker).to_have_count(1, timeout=EXPECT_MS)
        await expect(marker).to_contain_text("no longer seen by the assistant")
        assert llm.dropped_tokens == 0 and llm.chat_requests[-1].json["options"]["num_ctx"] == 600
        await page.reload()
        await expect(page.locator("#msg-list [data-testid=horizon]")).to_have_count(1, timeout=EXPECT_MS)
    finally:
        await context.close()  # before its server goes: a tab would report its lost socket
        server.stop()
