"""Conversations in a real browser: a new one starts empty and the old one is kept, listed, readable, exportable
and can be continued; the last question can be edited and asked again (the old answer kept); drafts survive a
reload, and one left too long is sealed without losing what a tab still holds."""

import asyncio
import json
import re

import pytest
from playwright.async_api import expect

from quanda.core import open_store
from tests.llm_server import Reply
from tests.servers import AppServer

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def open_tab(context, url, path="/"):
    page = await context.new_page()
    await page.goto(url + path)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def ask_and_wait(page, text, reply_text):
    """Ask, then wait for the new answer's bubble (not the last one before it, which may hold the same text and
    sits beside a Send button still visible until the new answer starts) to end with `reply_text`."""
    answers = page.locator("#msg-list li.msg.assistant")
    before = await answers.count()
    await page.fill("#chat-input", text)
    await page.click("#chat-send")
    await expect(answers).to_have_count(before + 1, timeout=EXPECT_MS)
    await expect(answers.last).to_contain_text(reply_text, timeout=EXPECT_MS)
    await expect(page.locator("#chat-send")).to_be_visible(timeout=EXPECT_MS)


def user_turns(request):
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"]


async def test_a_new_conversation_starts_empty_and_the_old_one_is_listed_readable_exportable(app_server, llm,
                                                                                           browser):
    llm.script = [Reply(chunks=["Apples are ", "red."]), Reply(chunks=["Pears are green."]),
                  Reply(chunks=["Still apples."])]
    context = await browser.new_context()
    page = await open_tab(context, app_server.url)
    await ask_and_wait(page, "First question about apples", "Apples are red.")
    await page.click("#chat-new")
    await expect(page.locator("#msg-list > li")).to_have_count(0)  # a fresh context
    await ask_and_wait(page, "Second question, on pears", "Pears are green.")
    assert user_turns(llm.chat_requests[-1]) == ["Second question, on pears"]  # nothing of the old one

    await page.click("#menu >> text=Chat")
    rows = page.locator("#chat-conversations > li")
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0).locator(".conv-title")).to_have_text("Second question, on pears")
    await expect(rows.nth(0)).to_contain_text("in the sidebar")
    old = rows.filter(has_text="First question about apples")
    await expect(old).to_contain_text(re.compile(r"started \d{4}-\d\d-\d\d \d\d:\d\d"))
    await old.locator("[data-testid=open]").click()
    viewer = page.locator("#chat-viewer")
    await expect(viewer.locator("h3")).to_have_text("First question about apples")
    await expect(viewer.locator("li.msg.assistant")).to_have_text(re.compile("Apples are red."))
    assert await viewer.locator("[ws-send]:not([data-testid=viewer-continue])").count() == 0  # read-only
    await expect(page.locator("#msg-list li.msg.q")).to_have_text([re.compile("Second question")])

    exported = await page.request.get(app_server.url + await old.locator("[data-testid=export-json]")
                                      .get_attribute("href"))
    assert exported.ok and "attachment" in exported.headers["content-disposition"]
    data = json.loads(await exported.text())
    turns = [m for m in data["messages"] if m["role"] != "event"]
    assert data["title"] == "First question about apples"
    assert [(m["role"], m["content"]) for m in turns] == [("user", "First question about apples"),
                                                          ("assistant", "Apples are red.")]
    for m in turns:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", m["created_at"]) and m["tokens"] >= 1
        assert m["final"] is True
    markdown = await (await page.request.get(app_server.url + await old.locator("[data-testid=export-md]")
                                             .get_attribute("href"))).text()
    assert markdown.startswith("# First question about apples") and "Apples are red." in markdown
    other = await (await browser.new_context()).request.get(
        app_server.url + await old.locator("[data-testid=export-json]").get_attribute("href"))
    assert other.status in (401, 404)  # another browser cannot read it

    await old.locator("[data-testid=continue]").click()  # back to the apples, in the sidebar
    await expect(page.locator("#msg-list li.msg.q")).to_have_text([re.compile("First question about apples")])
    await expect(rows.filter(has_text="First question about apples")).to_contain_text("in the sidebar")
    await ask_and_wait(page, "And again?", "Still apples.")
    assert user_turns(llm.chat_requests[-1])[-2:] == ["First question about apples", "And again?"]
    await page.reload()
    await expect(page.locator("#msg-list li.msg.q")).to_have_count(2)


async def test_edit_the_last_question_and_ask_again_keeping_the_old_answer(app_server, llm, browser):
    llm.script = [Reply(chunks=["2 + 2 is ", "5."]), Reply(chunks=["2 + 3 is 5."])]
    context = await browser.new_context()
    page, other = await open_tab(context, app_server.url), await open_tab(context, app_server.url)
    await ask_and_wait(page, "What is 2+2?", "2 + 2 is 5.")
    edit = page.locator("#msg-list li.msg.q [data-testid=edit]")
    await expect(edit).to_be_visible()
    await edit.click()
    box = page.locator("#chat-input")
    await expect(box).to_have_value("What is 2+2?")
    await expect(page.locator("#chat-editing")).to_contain_text("Editing your last question")
    await box.press("Escape")  # cancel: the question stays as it was
    await expect(page.locator("#chat-editing")).to_be_hidden()
    await expect(box).to_have_value("")
    await edit.click()
    await expect(box).to_have_value("What is 2+2?")
    await box.fill("What is 2+3?")
    await box.press("Enter")
    for tab in (page, other):
        await expect(tab.locator("#msg-list li.msg.assistant").last).to_contain_text("2 + 3 is 5.",
                                                                                     timeout=EXPECT_MS)
        previous = tab.locator("#msg-list .prev-version")
        await expect(previous).to_have_count(1)
        await expect(previous.locator("summary")).to_have_text("Previous version")
        await expect(previous).to_contain_text("2 + 2 is 5.")  # kept, collapsed where it was
        await expect(tab.locator("#msg-list > li.msg.q")).to_have_text([re.compile(r"What is 2\+3\?")])
    assert user_turns(llm.chat_requests[-1]) == ["What is 2+3?"]  # the old turn is not sent again
    await page.reload()
    await expect(page.locator("#msg-list .prev-version")).to_have_count(1)
    await expect(page.locator("#msg-list > li.msg.q")).to_have_count(1)


async def test_a_draft_survives_a_reload(app_server, browser):
    page = await open_tab(await browser.new_context(), app_server.url)
    await page.locator("#chat-input").press_sequentially("not sent yet")
    await expect(page.locator("#draft-preview")).to_have_text("not sent yet", timeout=EXPECT_MS)
    await page.reload()
    await expect(page.locator("#chat-input")).to_have_value("not sent yet")
    await expect(page.locator("#draft-preview")).to_have_text("not sent yet")


async def test_a_draft_left_untouched_is_sealed_and_its_text_kept_by_the_tab_still_typing(tmp_path, llm, browser):
    llm.script = Reply(chunks=["Got it."])
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, QUANDA_DRAFT_TTL_S="1").start()
    try:
        context = await browser.new_context()
        typing, watching = await open_tab(context, server.url), await open_tab(context, server.url)
        box = typing.locator("#chat-input")
        await box.press_sequentially("half a thought")
        await expect(watching.locator("#draft-preview")).to_have_text("half a thought", timeout=EXPECT_MS)
        await expect(watching.locator("#draft-preview")).to_be_empty(timeout=EXPECT_MS)  # sealed, out of view
        await expect(typing.locator("#draft-preview")).to_be_empty()
        async with await open_store(f"sqlite:///{tmp_path}/data/quanda.db") as store:
            [(_owner, draft)] = await store.list_records("draft")
            sealed = await store.get_message(draft["message_id"])
        assert sealed.immutable and sealed.content == "half a thought"
        await expect(box).to_have_value("half a thought")  # the tab still holds it
        await box.press_sequentially(", and the rest")
        await expect(watching.locator("#draft-preview")).to_have_text("half a thought, and the rest",
                                                                      timeout=EXPECT_MS)
        await box.press("Enter")
        await expect(typing.locator("#msg-list li.msg.q .md").first).to_have_text("half a thought, and the rest",
                                                                                 timeout=EXPECT_MS)
        await expect(typing.locator("#msg-list li.msg.assistant")).to_contain_text("Got it.", timeout=EXPECT_MS)
        await asyncio.gather(typing.close(), watching.close())
    finally:
        server.stop()
