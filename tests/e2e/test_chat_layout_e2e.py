"""The chat as in every chat app, in a real browser: a full-height sidebar whose list follows the answer (unless
the reader scrolled up), the input always in view, Send that becomes Stop, Enter / Shift+Enter, notices by
the chat that go when no longer true, and a status badge that tells the truth and checks again by itself."""

import re

import pytest
from playwright.async_api import expect

from tests.llm_server import Chunk, LLMTestServer, Reply
from tests.servers import AppServer, free_port

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
VIEWPORT = {"width": 1100, "height": 700}


def long_answer(words: int, per_paragraph: int = 120) -> list[str]:
    """An answer of `words` words in paragraphs, streamed a few words per chunk."""
    out = []
    for i in range(words):
        out.append(f"word{i}" + ("\n\n" if (i + 1) % per_paragraph == 0 else " "))
    return ["".join(out[i:i + 6]) for i in range(0, len(out), 6)]


async def open_chat(browser, url, **kwargs):
    page = await browser.new_page(viewport=VIEWPORT, **kwargs)
    await page.goto(url + "/")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def ask(page, text):
    await page.fill("#chat-input", text)
    await page.click("#chat-send")


def answers(page):
    return page.locator("#msg-list li.msg.assistant")


AT_BOTTOM = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 30"


async def test_a_3000_word_answer_keeps_the_input_in_view_and_follows_the_latest_line(app_server, llm, browser):
    chunks = long_answer(3000)
    # the last words wait 5 s: the checks made while it streams (Stop shown) cannot find it ended (CI, under load)
    chunks[-1] = Chunk(content=chunks[-1], delay=5.0)
    llm.script = Reply(chunks=chunks, delay=0.004)
    page = await open_chat(browser, app_server.url)
    msg_list = page.locator("#msg-list")
    await expect(msg_list).to_have_attribute("aria-live", "polite")  # screen readers hear what arrives
    await ask(page, "Tell me everything")
    answer = answers(page)
    for word in ("word600", "word1500", "word2400"):  # while it streams
        await expect(answer).to_contain_text(word, timeout=EXPECT_MS)
        await expect(page.locator("#chat-input")).to_be_in_viewport(ratio=1)
        await expect(page.locator("#chat-stop")).to_be_in_viewport(ratio=1)  # Stop where Send was
        assert await msg_list.evaluate(AT_BOTTOM), f"the list stopped following at {word}"
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)  # the answer ended
    await expect(answer).to_contain_text("word2999")
    await expect(page.locator("#chat-input")).to_be_in_viewport(ratio=1)
    await expect(page.get_by_text(re.compile(r"word2999\s*$"))).to_be_in_viewport()
    assert await msg_list.evaluate(AT_BOTTOM)
    box = await page.locator("#sidebar").bounding_box()
    assert box["y"] + box["height"] <= VIEWPORT["height"] + 1  # the sidebar fits the window, however long
    await expect(page.locator("#chat-jump")).to_be_hidden()


async def test_scrolling_up_stops_the_follow_and_the_jump_control_brings_it_back(app_server, llm, browser):
    llm.script = Reply(chunks=long_answer(2400), delay=0.02)
    page = await open_chat(browser, app_server.url)
    await ask(page, "A long one, please")
    msg_list, answer, jump = page.locator("#msg-list"), answers(page), page.locator("#chat-jump")
    await expect(answer).to_contain_text("word300", timeout=EXPECT_MS)
    box = await msg_list.bounding_box()
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.wheel(0, -1500)
    await expect(jump).to_be_visible()
    top = await msg_list.evaluate("el => el.scrollTop")
    await expect(answer).to_contain_text("word900", timeout=EXPECT_MS)  # more arrived meanwhile
    assert abs(await msg_list.evaluate("el => el.scrollTop") - top) < 5  # the reader's place is kept
    assert not await msg_list.evaluate(AT_BOTTOM)
    await jump.click()
    await expect(jump).to_be_hidden()
    assert await msg_list.evaluate(AT_BOTTOM)
    await expect(answer).to_contain_text("word1500", timeout=EXPECT_MS)
    assert await msg_list.evaluate(AT_BOTTOM)  # following again
    await page.click("#chat-stop")
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)


async def test_enter_sends_shift_enter_adds_a_line(app_server, llm, browser):
    llm.script = Reply(chunks=["Two lines received."], delay=0.01)
    page = await open_chat(browser, app_server.url)
    box = page.locator("#chat-input")
    await box.press("Enter")  # nothing typed: nothing sent
    await box.press_sequentially("line one")
    await box.press("Shift+Enter")
    await box.press_sequentially("line two")
    await expect(box).to_have_value("line one\nline two")
    await expect(page.locator("#msg-list li.msg.q")).to_have_count(0)
    await box.press("Enter")
    question = page.locator("#msg-list li.msg.q")
    await expect(question).to_contain_text("line one", timeout=EXPECT_MS)
    await expect(question).to_contain_text("line two")
    await expect(answers(page)).to_contain_text("Two lines received.", timeout=EXPECT_MS)
    await expect(box).to_have_value("")
    await expect(box).to_be_focused()  # ready for the next question
    sent = llm.chat_requests[-1].json["messages"][-1]
    assert sent == {"role": "user", "content": "line one\nline two"}


async def test_a_refusal_shows_by_the_chat_and_goes_when_no_longer_true(app_server, llm, browser):
    llm.script = Reply(chunks=[f"w{i} " for i in range(300)], delay=0.03)
    page = await open_chat(browser, app_server.url)
    await ask(page, "Count")
    await expect(answers(page)).to_contain_text("w3 ", timeout=EXPECT_MS)
    await page.fill("#chat-input", "and another thing")
    await page.locator("#chat-input").press("Enter")  # Send is Stop now: Enter sends nothing
    await page.click("#chat-poke")  # asking while an answer is written
    notice = page.locator("#chat-notice")
    await expect(notice).to_contain_text("an answer is still being written")
    await expect(page.locator("#chat-input")).to_have_value("and another thing")  # not lost
    await expect(page.locator("#msg-list li.msg.q")).to_have_count(1)
    await expect(notice).to_be_in_viewport()
    await expect(page.locator("#ws-notice")).to_be_empty()  # not at the top of the page
    await page.click("#menu >> text=Stream simulator")
    await expect(notice).not_to_be_empty()  # it is still true, wherever the tab goes
    await page.click("#chat-stop")
    await expect(notice).to_be_empty(timeout=EXPECT_MS)  # no longer true
    await expect(page.locator("#chat-send")).to_be_visible()


async def test_the_badge_is_green_with_an_openai_compatible_server_and_no_model_configured(tmp_path, browser):
    with LLMTestServer(Reply(chunks=["Hi ", "there."]), models=["only-model"]) as llm:
        server = AppServer(tmp_path, QUANDA_LLM_URL=llm.openai_url).start()
        try:
            page = await open_chat(browser, server.url)
            badge = page.locator("#llm-status")
            await expect(badge).to_have_class(re.compile(r"\bok\b"))
            await expect(badge).to_have_text(re.compile("LLM ready: only-model"))
            await expect(badge).not_to_contain_text("ollama")
            await ask(page, "Hello?")
            await expect(answers(page)).to_contain_text("Hi there.", timeout=EXPECT_MS)
            assert llm.chat_requests[-1].json["model"] == "only-model"
            await expect(badge).to_have_class(re.compile(r"\bok\b"))
            await page.close()
        finally:
            server.stop()


async def test_the_badge_checks_again_by_itself(tmp_path, browser):
    port = free_port()
    server = AppServer(tmp_path, OLLAMA_HOST=f"http://127.0.0.1:{port}", QUANDA_LLM_CHECK_S="0.5").start()
    try:
        page = await open_chat(browser, server.url)
        badge = page.locator("#llm-status")
        await expect(badge).to_have_class(re.compile(r"\bbad\b"))
        await expect(badge).to_contain_text("ollama serve")
        with LLMTestServer(Reply(chunks=["Up."]), port=port):
            await expect(badge).to_have_class(re.compile(r"\bok\b"), timeout=EXPECT_MS)  # no reload
            await expect(badge).to_have_text(re.compile("LLM ready: quanda-test"))
        await expect(badge).to_have_class(re.compile(r"\bbad\b"), timeout=EXPECT_MS)
        await page.close()
    finally:
        server.stop()


async def test_code_blocks_are_highlighted_with_a_label_and_a_working_copy_button(app_server, llm, browser):
    llm.script = Reply(chunks=["Here:\n\n```python\n", "def f(x):\n", "    return x + 1\n", "```\n", "Done."],
                       delay=0.02)
    page = await open_chat(browser, app_server.url)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=app_server.url)
    await ask(page, "Some code")
    block = answers(page).locator(".md-code")
    await expect(block.locator(".md-code-lang")).to_have_text("python", timeout=EXPECT_MS)
    await expect(block.locator("pre code .k").first).to_have_text("def")  # Pygments classes, no inline style
    assert await block.locator("[style]").count() == 0
    await block.locator("button.md-copy").click()
    await expect(block.locator("button.md-copy")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "def f(x):\n    return x + 1\n"
    for label in ("Stream simulator", "Chat", "Todos"):  # the tab re-tells its streams, the finished one too
        await page.click(f"#menu >> text={label}")
        await expect(page.locator("#menu a.active")).to_have_text(label)
    await page.fill("#chat-input", "round trip")  # every frame the navigations caused has arrived after this
    await expect(page.locator("#draft-preview")).to_have_text("round trip", timeout=EXPECT_MS)
    await expect(answers(page).locator(".md-code")).to_have_count(1)
    text = await answers(page).inner_text()
    assert text.count("return x + 1") == 1 and text.count("Done.") == 1, text


async def test_the_menu_marks_the_page_shown(app_server, browser):
    page = await open_chat(browser, app_server.url)
    active = page.locator("#menu a.active")
    await expect(active).to_have_text("Todos")
    for label, card in (("Stream simulator", "#sim-card"), ("Chat", ".chat-full"), ("Todos", "#todo-card")):
        await page.click(f"#menu >> text={label}")
        await expect(page.locator(card)).to_be_visible()
        await expect(active).to_have_text(label)
        await expect(active).to_have_count(1)
    await page.go_back()  # back: the page it was, from the server
    await expect(page.locator(".chat-full")).to_be_visible(timeout=EXPECT_MS)
    await expect(active).to_have_text("Chat")
