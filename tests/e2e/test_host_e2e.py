"""Host applications outside the app, run as a user would: the wheel installed in a fresh venv, the host's one
file copied into an empty folder and started with `python <file>`, driven in Chromium with the scripted LLM.
The model's native tool call adds a row to the host's own SQLite table exactly once, and every open tab shows
it at once. Run for examples/contacts.py and for the README's "Add it to your own app" file, verbatim."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.llm_server import Chunk, LLMTestServer, Reply, Rounds, ToolCall
from tests.servers import ROOT
from tests.wheel import installed_wheel, served_by

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXPECT_MS = 30_000
README = ROOT / "README.md"


def readme_host_file() -> str:
    """The one ```python block of the README's "Add it to your own app" section."""
    section = README.read_text().split("## Add it to your own app", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds exactly one python block: the whole host file"
    return blocks[0]


async def open_tabs(context, url: str, count: int) -> list:
    tabs = []
    for _ in range(count):
        tab = await context.new_page()
        await tab.goto(url + "/")
        await expect(tab.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        await expect(tab.locator("#chat-input")).to_be_visible(timeout=EXPECT_MS)
        tabs.append(tab)
    return tabs


async def drive(browser, folder: Path, command: list, list_id: str, item: str, tool: str, arguments: dict,
                table_db: Path, table: str, column: str, added: str, then=None):
    """Start the host, ask in one tab, see the row in both; the host's table holds it once. `then(tab1, tab2)`:
    more to do with both tabs before the server stops."""
    call = Reply(chunks=["On it. ", Chunk(tool_calls=[ToolCall(tool, arguments)])], delay=0.02)
    with LLMTestServer(Rounds(call, Reply(chunks=["Done."], delay=0.02))) as llm:
        with served_by(command, folder, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test") as (url, _client):
            context = await browser.new_context()
            tab1, tab2 = await open_tabs(context, url, 2)
            await tab1.fill("#chat-input", "please add it")
            await tab1.click("#chat-send")
            for tab in (tab1, tab2):
                await expect(tab.locator(f"#{list_id}")).to_contain_text(item, timeout=EXPECT_MS)
                answer = tab.locator("#msg-list li.msg.assistant")
                await expect(answer).to_contain_text("Done.", timeout=EXPECT_MS)
                await expect(answer).to_contain_text(added)
                await expect(answer.locator("[data-testid=stop]")).to_have_count(0, timeout=EXPECT_MS)
            await tab2.reload()
            await expect(tab2.locator(f"#{list_id}")).to_contain_text(item, timeout=EXPECT_MS)
            assert (await tab2.locator(f"#{list_id}").inner_text()).count(item) == 1
            sent = llm.chat_requests[0].json
            with sqlite3.connect(table_db) as db:
                rows = db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (item,)).fetchone()[0]
            assert rows == 1, f"the host's table holds {rows} rows for {item!r}"
            if then is not None:
                await then(tab1, tab2)
            await context.close()  # before the server stops: a socket cut is not what is tested
            assert {t["function"]["name"] for t in sent["tools"]} >= {tool}
    return sent


async def by_hand(tab1, tab2):
    """The host's own form and buttons (its routes, through Quanda's door): every tab redraws, the chat is told."""
    await expect(tab2.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await expect(tab2.locator("#chat-input")).to_be_visible(timeout=EXPECT_MS)
    await tab2.fill("input[name=name]", "Grace Hopper")
    await tab2.click("#add")
    for tab in (tab1, tab2):
        await expect(tab.locator("#contacts .contact-name")).to_have_text(["Ada Lovelace", "Grace Hopper"],
                                                                          timeout=EXPECT_MS)
        await expect(tab.locator("#msg-list .event-line").filter(has_text="You added the contact Grace Hopper")
                     ).to_have_count(1, timeout=EXPECT_MS)
    await tab1.locator("#contacts li").filter(has_text="Ada Lovelace").get_by_role("button").click()
    for tab in (tab1, tab2):
        await expect(tab.locator("#contacts .contact-name")).to_have_text(["Grace Hopper"], timeout=EXPECT_MS)


async def test_the_contacts_example_from_the_wheel_adds_a_row_once_and_every_tab_shows_it(tmp_path, browser):
    venv = installed_wheel()
    shutil.copy(ROOT / "examples" / "contacts.py", tmp_path / "contacts.py")
    sent = await drive(browser, tmp_path, [venv / "bin" / "python", "contacts.py"], "contacts", "Ada Lovelace",
                       "add_contact", {"name": "Ada Lovelace", "email": "ada@example.com"},
                       tmp_path / "contacts.db", "contacts", "name", "Added the contact Ada Lovelace (id 1).",
                       then=by_hand)
    tools = {t["function"]["name"] for t in sent["tools"]}
    assert tools == {"add_contact", "delete_contact"}
    system = sent["messages"][0]["content"]
    assert "The user's contacts now:\n(no contacts)" in system  # the readable state


async def test_the_readmes_host_file_runs_verbatim_from_the_wheel(tmp_path, browser):
    venv = installed_wheel()
    (tmp_path / "host.py").write_text(readme_host_file())
    sent = await drive(browser, tmp_path, [venv / "bin" / "python", "host.py"], "notes", "buy milk", "add_note",
                       {"title": "buy milk"}, tmp_path / "notes.db", "notes", "title", "buy milk")
    assert {"add_note", "delete_note"} <= {t["function"]["name"] for t in sent["tools"]}
