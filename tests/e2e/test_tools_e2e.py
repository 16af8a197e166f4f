"""Native tool calls in a real browser (the scripted LLM server on the Ollama wire, a model with tools): the
result line shows in the answer's bubble before the model's continuation, in every tab, once."""

import pytest
from playwright.async_api import expect

from tests.llm_server import Chunk, Reply, Rounds, ToolCall

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
ADDED = "✓ Added the todo 'buy milk' (id 1)."
CALL = Reply(chunks=["Adding it. ", Chunk(tool_calls=[ToolCall("todo_insert", {"name": "buy milk"})])], delay=0.02)


async def tabs(browser, url, count):
    context = await browser.new_context()
    opened = []
    for _ in range(count):
        tab = await context.new_page()
        await tab.goto(url + "/p/todo")
        await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        opened.append(tab)
    return opened


def bubble(tab):
    return tab.locator("#msg-list li.msg.assistant")


async def bubble_text(tab) -> str:
    return "".join(await bubble(tab).locator(".md").all_text_contents())


async def ask(tab, text):
    await tab.fill("#chat-input", text)
    await tab.click("#chat-send")


async def test_the_result_line_comes_before_the_continuation_in_the_same_bubble_in_every_tab(app_server, llm,
                                                                                             browser):
    llm.script = Rounds(CALL, Reply(chunks=["It is ", "on your list."], delay=0.05))
    tab1, tab2 = await tabs(browser, app_server.url, 2)
    await ask(tab1, "add buy milk")
    for tab in (tab1, tab2):
        await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"], timeout=EXPECT_MS)
        await expect(bubble(tab)).to_contain_text("It is on your list.", timeout=EXPECT_MS)
        await expect(bubble(tab).locator("[data-testid=stop]")).to_have_count(0, timeout=EXPECT_MS)
        await expect(bubble(tab)).to_have_count(1)
        text = await bubble_text(tab)
        assert text.count(ADDED) == 1, text
        assert text.index("Adding it.") < text.index(ADDED) < text.index("It is on your list."), text
        # the line is the answer's, not an ambient event line after it
        await expect(tab.locator("#msg-list .event-line").filter(has_text="Added the todo")).to_have_count(0)
    assert llm.chat_requests[0].json["tools"] and llm.chat_requests[-1].json["messages"][-1]["content"] == ADDED


async def test_a_reload_mid_round_shows_the_answer_and_its_result_line_once(app_server, llm, browser):
    words = [f"w{i} " for i in range(60)]
    llm.script = Rounds(CALL, Reply(chunks=words, delay=0.05))
    [tab] = await tabs(browser, app_server.url, 1)
    await ask(tab, "add buy milk, then count")
    await expect(bubble(tab)).to_contain_text("w3 ", timeout=EXPECT_MS)
    await tab.reload()
    await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(bubble(tab)).to_contain_text("w59", timeout=EXPECT_MS)
    await expect(bubble(tab).locator("[data-testid=stop]")).to_have_count(0, timeout=EXPECT_MS)
    text = await bubble_text(tab)
    assert text.count(ADDED) == 1, text
    assert text.split(ADDED)[1].split() == [w.strip() for w in words]
    await expect(tab.locator("#todo-list .todo-name")).to_have_text(["buy milk"])
    await expect(bubble(tab)).to_have_count(1)
