"""The terminal client and a Chromium tab on the same workspace (local mode): the terminal's question and its
answer appear live in the tab, token-exact; Stop in the tab stops the terminal's answer, and Stop in the
terminal stops an answer asked in the tab."""

import pytest
from playwright.async_api import expect

from quanda.tui.app import QuandaTUI
from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
WAIT_S = 20


async def open_tab(browser, url):
    page = await browser.new_page()
    await page.goto(url + "/")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def ask_in_terminal(app, pilot, text):
    for ch in text:
        await pilot.press("space" if ch == " " else ch)
    await pilot.press("ctrl+s")


def answers(page):
    return page.locator("#msg-list li.msg.assistant")


async def tab_text(page):
    return "".join(await answers(page).last.locator(".md").all_text_contents())


async def test_the_terminals_question_and_answer_show_in_the_tab_token_exact(app_server, llm, browser):
    script = [f"alpha{i} " for i in range(60)]
    llm.script = Reply(chunks=script, delay=0.04)
    page = await open_tab(browser, app_server.url)
    app = QuandaTUI(app_server.url)  # no token: local mode's one workspace, the tab's too
    async with app.run_test(size=(100, 40)) as pilot:
        await app.until(lambda: app.connected, WAIT_S, "the terminal to connect")
        await ask_in_terminal(app, pilot, "From the terminal")
        await expect(page.locator("#msg-list li.msg.q").last).to_contain_text("From the terminal", timeout=EXPECT_MS)
        await expect(answers(page).last).to_contain_text("alpha5 ", timeout=EXPECT_MS)
        entry = app.conv.last_answer()
        assert entry is not None and entry.status == "generating"  # both live while it is written
        await app.until(lambda: entry.status == "done" and entry.message.immutable, WAIT_S, "the whole answer")
        marker = answers(page).last.locator(".stream-marker")
        await expect(marker).to_have_attribute("data-seq", str(entry.message.last_seq), timeout=EXPECT_MS)
        assert entry.message.content == "".join(script)
        assert (await tab_text(page)).split() == entry.message.content.split()  # the same tokens, once each
        await pilot.press("ctrl+q")


async def test_stop_in_the_tab_stops_the_terminals_answer(app_server, llm, browser):
    llm.script = Reply(chunks=[f"w{i} " for i in range(400)], delay=0.03)
    page = await open_tab(browser, app_server.url)
    app = QuandaTUI(app_server.url)
    async with app.run_test(size=(100, 40)) as pilot:
        await app.until(lambda: app.connected, WAIT_S, "the terminal to connect")
        await ask_in_terminal(app, pilot, "Count slowly")
        answer = answers(page).last
        await expect(answer).to_contain_text("w5 ", timeout=EXPECT_MS)
        await page.locator("#chat-stop").click()  # Send turned Stop in every tab, whoever asked
        assert await llm.wait_disconnect(timeout=10)  # the LLM stopped generating
        entry = app.conv.last_answer()
        await app.until(lambda: entry.status == "stopped" and entry.message.warning == "stopped" and not app.followers,
                        WAIT_S, "the terminal to see its answer stopped")
        await expect(answer.locator(".msg-warning")).to_have_text("stopped", timeout=EXPECT_MS)
        marker = answer.locator(".stream-marker")
        await expect(marker).to_have_attribute("data-seq", str(entry.message.last_seq), timeout=EXPECT_MS)
        assert (await tab_text(page)).split() == entry.message.content.split()
        assert "w399" not in entry.message.content
        await pilot.press("ctrl+q")


async def test_stop_in_the_terminal_stops_an_answer_asked_in_the_tab(app_server, llm, browser):
    llm.script = Reply(chunks=[f"v{i} " for i in range(400)], delay=0.03)
    page = await open_tab(browser, app_server.url)
    app = QuandaTUI(app_server.url)
    async with app.run_test(size=(100, 40)) as pilot:
        await app.until(lambda: app.connected, WAIT_S, "the terminal to connect")
        await page.fill("#chat-input", "Asked in the browser")
        await page.click("#chat-send")
        await app.until(lambda: (a := app.conv.answering()) is not None and "v5 " in a.message.content, WAIT_S,
                        "the terminal to show the tab's answer")
        question = app.conv.entries[-2]
        assert question.message.content == "Asked in the browser"
        await pilot.press("ctrl+t")
        assert await llm.wait_disconnect(timeout=10)
        await expect(answers(page).last.locator(".msg-warning")).to_have_text("stopped", timeout=EXPECT_MS)
        await expect(answers(page).last.locator("[data-testid=retry]")).to_be_visible(timeout=EXPECT_MS)
        entry = app.conv.last_answer()
        await app.until(lambda: entry.status == "stopped" and not app.followers, WAIT_S, "the stop in the terminal")
        await pilot.press("ctrl+q")
