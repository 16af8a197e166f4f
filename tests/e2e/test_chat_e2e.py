"""The chat in a real browser against a scripted LLM server speaking the Ollama wire protocol."""

import re
from itertools import zip_longest

import pytest
from playwright.async_api import expect

from tests.llm_server import Chunk, Reply
from tests.servers import AppServer, free_port

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def open_chat(browser, url):
    page = await browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    await page.goto(url + "/")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def ask(page, text):
    await page.fill("#chat-input", text)
    await page.click("#chat-send")


def answers(page):
    return page.locator("#msg-list li.msg.assistant")


async def test_answer_streams_into_one_bubble_with_rendered_markdown(app_server, llm, browser):
    llm.script = Reply(chunks=["Here is a list:\n\n", "- one\n", "- two\n", "\n```python\n", "print('hi')\n",
                               "x = 1\n", "```\n", "\nDone."], delay=0.05)
    page = await open_chat(browser, app_server.url)
    await ask(page, "Show me **markdown**")
    await expect(page.locator("#msg-list li.msg.q")).to_contain_text("Show me markdown")
    await expect(page.locator("#msg-list li.msg.q strong")).to_have_text("markdown")
    answer = answers(page)
    await expect(answer).to_have_count(1)
    await expect(answer.locator(".md >> text=Done.")).to_be_visible(timeout=EXPECT_MS)
    await expect(answer).to_have_count(1)
    assert await answer.locator("ul li").all_text_contents() == ["one", "two"]
    assert "print('hi')\nx = 1" in await answer.locator("pre code").text_content()
    await expect(answer.locator("[data-testid=retry]")).to_have_count(0)
    await expect(page.locator("#chat-send")).to_be_visible()
    sent = llm.chat_requests[-1].json
    assert sent["model"] == "quanda-test" and sent["messages"][-1] == {"role": "user", "content": "Show me **markdown**"}
    assert sent["messages"][0]["role"] == "system"
    await page.reload()  # history survives a reload: the same two bubbles, rendered the same way
    await expect(answers(page)).to_have_count(1)
    assert await answers(page).locator("ul li").all_text_contents() == ["one", "two"]


async def test_stop_mid_answer_closes_the_upstream_stream_and_retry_regenerates(app_server, llm, browser):
    llm.script = [Reply(chunks=[f"w{i} " for i in range(400)], delay=0.03), Reply(chunks=["Fresh ", "answer."])]
    page = await open_chat(browser, app_server.url)
    await ask(page, "Count slowly")
    answer = answers(page)
    await expect(answer).to_contain_text("w5 ", timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_have_count(0)  # Send became Stop, in its place
    await page.locator("#chat-stop").click()
    assert await llm.wait_disconnect(timeout=10)  # the HTTP stream to the LLM was closed: generation stops
    await expect(answer.locator(".msg-warning")).to_have_text("stopped", timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_visible()
    partial = "".join(await answer.locator(".md").all_text_contents())
    assert "w5" in partial and "w399" not in partial
    await answer.locator("[data-testid=retry]").click()
    await expect(answer).to_contain_text("Fresh answer.", timeout=EXPECT_MS)
    await expect(answer).not_to_contain_text("w5 ")
    await expect(answer.locator(".msg-warning")).to_have_text("")
    await expect(answers(page)).to_have_count(1)


async def test_reload_mid_answer_continues_without_duplicating(app_server, llm, browser):
    words = [f"word{i} " for i in range(80)]
    llm.script = Reply(chunks=words, delay=0.04)
    page = await open_chat(browser, app_server.url)
    await ask(page, "Go")
    await expect(answers(page)).to_contain_text("word10 ", timeout=EXPECT_MS)
    await page.reload()
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(answers(page)).to_contain_text("word79", timeout=EXPECT_MS)
    answer_id = (await answers(page).get_attribute("id"))[len("msg-"):]
    await page.wait_for_function(f"fetch('/api/messages/{answer_id}').then(r => r.json()).then(m => m.immutable)",
                                 timeout=EXPECT_MS)
    sealed = await page.evaluate(f"fetch('/api/messages/{answer_id}').then(r => r.json()).then(m => m.last_seq)")
    marker = answers(page).locator(".stream-marker")
    await expect(marker).to_have_attribute("data-seq", str(sealed), timeout=EXPECT_MS)  # the final frame is in
    text = (await answers(page).locator(".md").all_text_contents())
    assert "".join(text).split() == [w.strip() for w in words]


async def test_two_tabs_stay_in_sync(app_server, llm, browser):
    llm.script = Reply(chunks=["Shared ", "answer."], delay=0.05)
    context = await browser.new_context()
    tabs = []
    for _ in range(2):
        tab = await context.new_page()
        await tab.goto(app_server.url + "/")
        await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        tabs.append(tab)
    await ask(tabs[0], "Hi both")
    for tab in tabs:
        await expect(answers(tab)).to_contain_text("Shared answer.", timeout=EXPECT_MS)
        await expect(tab.locator("#msg-list li.msg.q")).to_contain_text("Hi both")


async def test_an_answer_and_its_thinking_streamed_at_once_show_what_a_reload_shows(app_server, llm, browser):
    """Two views on one socket, each with its compact appends (app/components/compact.py) under an alias of its
    own, expanded by static/quanda.js: mid-stream (while the LLM pauses inside an open block of each) and at the
    end, the streamed page holds exactly the markup a freshly loaded page renders."""
    thinking = [f" step{i}" if i % 9 else f"\n\n**Step {i}**" for i in range(52)]
    answer = ["Intro", " with `code`", " and **bold", "** text.\n\n", "- one\n", "- two\n\n", "```python\n",
              "x = '<b>'\n", "y = 2\n", "```\n\n", *[f" w{i}" for i in range(40)], " *open", " em"]
    llm.script = Reply(chunks=[*(Chunk(thinking=t, content=a) for t, a in zip(thinking, answer)),
                               Chunk(thinking=" done.", content="* closed.\n\nThe end.", delay=4)], delay=0.02)
    page = await browser.new_page()
    frames, warnings = [], []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    await page.goto(app_server.url + "/")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await ask(page, "Think, then answer")
    bubble = answers(page)
    shown = "li => Array.from(li.querySelectorAll('.md, .md-estimate'), el => el.id + ' ' + el.innerHTML)"
    await expect(bubble).to_contain_text("step51", timeout=EXPECT_MS)
    await expect(bubble).to_contain_text("open em", timeout=EXPECT_MS)  # the LLM pauses here, for 4 s
    other = await page.context.new_page()
    await other.goto(app_server.url + "/")
    assert await bubble.evaluate(shown) == await answers(other).evaluate(shown)
    await other.close()
    await expect(bubble.locator(".stream-marker[data-ended]")).to_have_count(2, timeout=EXPECT_MS)  # both sealed
    streamed = await bubble.evaluate(shown)
    defined = re.findall(r' q="[0-9a-z]+\.(?:\d+|s)" q-def="msg-([0-9a-f]+)-tail"', "".join(map(str, frames)))
    assert len(defined) == 2 and len(set(defined)) == 2, defined  # one alias for each view
    assert not warnings, warnings
    await page.reload()
    await expect(answers(page)).to_have_count(1, timeout=EXPECT_MS)
    assert await answers(page).evaluate(shown) == streamed
    assert "The end." in "".join(streamed) and "step51 done." in "".join(streamed) and "&lt;b&gt;" in "".join(streamed)


async def test_finished_blocks_settle_from_their_pieces_as_a_reload_shows_them(app_server, llm, browser):
    """A paragraph and a list long enough to stream in several pieces each (cut mid-line, and lists of their
    own): when each finishes, the page merges its pieces into the body itself (static/quanda.js `settle`, the rule
    of app/render/settle.py) instead of receiving the block again, and ends with exactly what a reload shows."""
    words = [" ".join(f"word{i + j}" for j in range(10)) + " " for i in range(0, 300, 10)]
    items = [f"- item {i} of a *plain* list\n" for i in range(40)]
    # the LLM pauses before its final line, so the last block is on the page as a piece before the answer is
    # sealed (else it comes with the seal, never shown in pieces, and is sent whole: right, but not a settle)
    llm.script = Reply(chunks=["**Start** ", *words, "\n\n", *items, "\nThe end.", Chunk(content="", delay=0.5)],
                       delay=0.01)
    page = await browser.new_page()
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    await page.goto(app_server.url + "/")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await ask(page, "Long blocks")
    bubble = answers(page)
    await expect(bubble.locator(".stream-marker[data-ended]")).to_have_count(1, timeout=EXPECT_MS)
    shown = "li => Array.from(li.querySelectorAll('.md, .md-estimate'), el => el.id + ' ' + el.innerHTML)"
    streamed = await bubble.evaluate(shown)
    answer_id = (await bubble.get_attribute("id"))[len("msg-"):]
    sent = "".join(frames)
    assert len(re.findall(r'<div q="[0-9a-z]+\.s"', sent)) == 3 and f"beforeend:#msg-{answer_id}-body" not in sent
    assert "word299</p>" in "".join(streamed) and "<li>item 39 of a <em>plain</em> list</li>" in "".join(streamed)
    await page.reload()
    await expect(answers(page)).to_have_count(1, timeout=EXPECT_MS)
    assert await answers(page).evaluate(shown) == streamed


async def test_hostile_markdown_never_executes(app_server, llm, browser):
    hostile = ('<script>alert("a")</script>\n\n<img src=x onerror="alert(\'b\')">\n\n'
               '[click](javascript:alert("c")) [ok](https://example.org)\n\n<a href="javascript:alert(1)">x</a>\n')
    llm.script = Reply(chunks=[hostile[i:i + 7] for i in range(0, len(hostile), 7)], delay=0.01)
    page = await open_chat(browser, app_server.url)
    await ask(page, '<img src=y onerror="alert(\'q\')"> and [me](javascript:alert(2))')
    await expect(answers(page)).to_contain_text("click", timeout=EXPECT_MS)
    await expect(answers(page).locator(".stream-marker")).to_have_attribute("data-seq", re.compile(r"^[1-9]"),
                                                                          timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)
    msg_list = page.locator("#msg-list")
    assert await msg_list.locator("script, img[onerror], [onerror]").count() == 0
    hrefs = await msg_list.locator("a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert not any(h and h.strip().lower().startswith("javascript") for h in hrefs)
    await page.reload()
    assert page.dialogs == []


async def test_llm_server_down_gives_a_clear_message_and_the_app_keeps_serving(tmp_path, browser):
    # (a model configured: Send stays on and the answer says what failed; with no model at all Send is off,
    # see test_model_state_e2e.py)
    server = AppServer(tmp_path, OLLAMA_HOST=f"http://127.0.0.1:{free_port()}", OLLAMA_MODEL="quanda-test").start()
    try:
        page = await open_chat(browser, server.url)
        await expect(page.locator("#llm-status")).to_contain_text("ollama serve")
        await ask(page, "Anyone there?")
        warning = answers(page).locator(".msg-warning")
        await expect(warning).to_contain_text(re.compile("not reachable|connect", re.I), timeout=EXPECT_MS)
        await expect(warning).to_contain_text("QUANDA_LLM_URL")
        await expect(answers(page).locator("[data-testid=retry]")).to_be_visible()
        await page.click("#menu >> text=Stream simulator")
        await expect(page.locator("#sim-card")).to_be_visible()
        await page.close()  # before the server goes, or its reconnect attempts fail in the console
    finally:
        server.stop()


async def test_a_tab_open_for_many_answers_keeps_streaming_new_ones(app_server, llm, browser):
    """Found by the long hostile-text run: a sealed answer's marker still named its stream, so a tab that stayed
    open through 64 answers declared 64 streams and the next `view` was refused (at most 64): the 65th answer
    stayed empty. A sealed stream's marker now keeps only its seq."""
    llm.script = Reply(chunks=["ok"])
    page = await open_chat(browser, app_server.url)
    asked = await page.evaluate("""async n => {
        const json = {method: "POST", headers: {"Content-Type": "application/json"}};
        for (let i = 0; i < n; i++) {
          const r = await fetch("/api/chat/ask", {...json, body: JSON.stringify({text: "q" + i})});
          if (r.status !== 201) return "ask " + i + ": " + r.status;
          for (let t = 0; t < 200; t++) {  // until the answer is written (at most 10 s)
            const s = await (await fetch("/api/chat/status")).json();
            if (!s.answering) break;
            await new Promise(ok => setTimeout(ok, 50));
          }
        }
        return "ok";
    }""", 70)
    assert asked == "ok"
    await expect(page.locator("#msg-list li.msg.q").last).to_contain_text("q69", timeout=EXPECT_MS)
    await expect(answers(page).last).to_contain_text("ok", timeout=EXPECT_MS)  # the 70th streamed into this tab
    # nothing sealed is declared any more (once the tab has every answer's seal: on a loaded machine it lags)
    await expect(page.locator("#msg-list [data-stream]")).to_have_count(0, timeout=EXPECT_MS)
    llm.script = Reply(chunks=["the ", "last ", "one"], delay=0.02)
    await ask(page, "and now?")
    await expect(answers(page).last).to_contain_text("the last one", timeout=EXPECT_MS)
