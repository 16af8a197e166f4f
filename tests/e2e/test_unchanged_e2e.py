"""An answer that ran no command, to a question that asked for a change, says so: "Nothing was changed." —
not after a question, nor after an answer whose command ran; in every tab and after a reload. An answer
without a word says that instead."""

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def ask(page, text):
    await page.fill("#chat-input", text)
    await page.keyboard.press("Enter")
    answer = page.locator("#msg-list li.msg.assistant").last
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    await expect(answer.locator(".msg-usage")).to_be_visible(timeout=EXPECT_MS)  # its footer drawn as it ended
    return answer


async def test_nothing_was_changed_is_said_after_a_request_that_ran_no_command(app_server, llm, browser):
    context = await browser.new_context()
    page, other = await context.new_page(), await context.new_page()
    for tab in (page, other):
        await tab.goto(app_server.url + "/p/todo")
        await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    llm.script = Reply(chunks=["Sure, ", "buy milk is noted."])  # prose only: no command
    prose = await ask(page, "add buy milk")
    await expect(prose.locator("[data-testid=unchanged]")).to_have_text("Nothing was changed.", timeout=EXPECT_MS)
    await expect(other.locator("#msg-list li.msg.assistant").last.locator("[data-testid=unchanged]")).to_be_visible(
        timeout=EXPECT_MS)
    await expect(page.locator("#todo-list li")).to_have_count(0)

    llm.script = Reply(chunks=[])  # the model finishes without a word: said so, not an empty bubble
    silent = await ask(page, "add buy bread")
    await expect(silent.locator("[data-testid=empty]")).to_have_text("The model sent no answer.", timeout=EXPECT_MS)
    await expect(silent.locator("[data-testid=unchanged]")).to_have_count(0)

    llm.script = Reply(chunks=["Paris."])
    question = await ask(page, "What is the capital of France?")
    await expect(question).to_contain_text("Paris.")
    await expect(question.locator("[data-testid=unchanged]")).to_have_count(0)

    llm.script = Reply(chunks=['Adding it.\n\n```json\n{"action": "insert", "target": "todo", '
                               '"args": {"name": "buy milk"}}\n```\n'])
    acted = await ask(page, "add buy milk")
    await expect(page.locator("#todo-list .todo-name")).to_have_text(["buy milk"], timeout=EXPECT_MS)
    await expect(acted.locator("[data-testid=unchanged]")).to_have_count(0)

    await page.reload()
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(page.locator("#msg-list [data-testid=unchanged]")).to_have_count(1)  # the first answer's, kept
    await expect(page.locator("#msg-list [data-testid=empty]")).to_have_count(1)
