"""Edit keeps the view where it was: the question being edited and its answer's label stay where the person
saw them, while the input grows with the question and the edit bar, and nothing jumps."""

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
POSITIONS = """() => {
    const list = document.getElementById("msg-list"), top = list.getBoundingClientRect().top;
    const q = [...list.querySelectorAll("li.msg.q")].pop(), label = [...list.querySelectorAll("li.msg.assistant .msg-role")].pop();
    const l = label.getBoundingClientRect(), box = list.getBoundingClientRect();
    return {q: Math.round(q.getBoundingClientRect().top - top), labelInView: l.top >= box.top && l.bottom <= box.bottom + 1,
            labelAtBottom: Math.abs(l.bottom - box.bottom) <= 2,
            jump: !document.getElementById("chat-jump").hidden};
}"""


@pytest.mark.parametrize("paragraphs", [3, 30])
async def test_edit_keeps_the_view(app_server, llm, browser, paragraphs):
    answer = "\n\n".join(f"Paragraph {i} with a few words to fill its line." for i in range(paragraphs))
    page = await (await browser.new_context(viewport={"width": 1100, "height": 560})).new_page()
    await page.goto(app_server.url + "/p/simulator")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    for question in ("first question", "What is in\nthe second one?"):
        llm.script = Reply(chunks=[answer])
        await page.fill("#chat-input", question)
        await page.keyboard.press("Enter")
        await expect(page.locator("#msg-list li.msg.assistant").last).to_contain_text(f"Paragraph {paragraphs - 1}",
                                                                                      timeout=EXPECT_MS)
        await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
        await expect(page.locator("#msg-list li.msg.assistant").last.locator(".msg-usage")).to_be_visible(
            timeout=EXPECT_MS)
        await expect(page.locator("#msg-list [data-stream]")).to_have_count(0, timeout=EXPECT_MS)  # sealed: its last frame
    edit = page.locator("#msg-list li.msg.q").last.locator("[data-testid=edit]")
    for _ in range(3):  # (a keyboard user's Tab: the link is scrolled into view; a late frame may take the focus)
        await edit.focus()
        await page.evaluate(FRAMES)
        if await edit.evaluate("el => el === document.activeElement"):
            break
    await expect(edit).to_be_focused()
    before = await page.evaluate(POSITIONS)
    assert before["labelInView"], before
    await page.keyboard.press("Enter")
    await expect(page.locator("#chat-editing")).to_be_visible(timeout=EXPECT_MS)
    await expect(page.locator("#chat-input")).to_have_value("What is in\nthe second one?")
    await page.evaluate(FRAMES)
    after = await page.evaluate(POSITIONS)
    # the question stays where it was, or moves up only as much as keeps its answer's label in view
    assert after["labelInView"] and (abs(after["q"] - before["q"]) <= 2 or after["labelAtBottom"]), (before, after)
    at_end = await page.evaluate("() => { const l = document.getElementById('msg-list');"
                                 " return l.scrollHeight - l.scrollTop - l.clientHeight < 24; }")
    assert after["jump"] == (not at_end), after  # "Jump to latest" only when the latest is out of view
