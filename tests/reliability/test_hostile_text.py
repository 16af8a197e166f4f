"""Hostile text in real Chromium: every vector of tests/reliability/vectors.py (OWASP filter-evasion families,
Markdown and htmx tricks, HTML split across stream chunks) goes in as a user draft (the live preview, then the
question), as an LLM answer streamed in small pieces, as todo names (and the ambient event lines echoing
them), as the arguments of JSON commands (their ✓/✗ result lines), and as simulator input and unknown
actions (the notices echoing them). The page must run none of it — no dialog, no global named *xss*, no
request to an address the page never uses, no Content-Security-Policy violation, no popup — and show none of
it as a live element: in the document no event-handler attribute, no dangerous URL, no script, frame, object,
base, meta, style, SVG or MathML element the app did not put there; inside the text areas only the elements
and attributes the Markdown renderer makes. Each place is checked as it streams in, after a reload (the first
render) and on the full chat page.

Short variant: vectors in batches. Long (QUANDA_RELIABILITY_LONG=1): every vector alone in every place."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from tests.e2e.conftest import CHROMIUM
from tests.llm_server import LLMTestServer, RecordedRequest, Reply
from tests.reliability.harness import LONG, Tab, browser_cookie
from tests.reliability.vectors import SPLIT, VECTORS, marked, markers
from tests.servers import AppServer

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]
EXPECT_MS = 30_000
BATCH = 1 if LONG else 30
CHUNK = 4  # characters per streamed token: every tag and URL is cut across tokens
MAX_TODO_NAME = 200

WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
    e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + (e.sample || '')));
"""

# Elements and attributes the Markdown renderer makes (app/render): nothing else may appear in shown text.
ALLOWED_TAGS = {"P", "EM", "STRONG", "CODE", "PRE", "A", "IMG", "UL", "OL", "LI", "H1", "H2", "H3", "H4", "H5",
                "H6", "BLOCKQUOTE", "HR", "BR", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "DEL", "SPAN", "DIV",
                "BUTTON"}
CHECK_DOM = """
([allowedTags, allowedAttrs]) => {
  const problems = [];
  const origin = location.origin;
  const squash = v => v.replace(/[\\x00-\\x20\\x7f-\\x9f\\u00ad\\u200b-\\u200f\\ufeff]/g, '');
  const badUrl = v => /^(javascript|data|vbscript|livescript|mocha|file|blob|jar):/i.test(squash(v));
  const offOrigin = v => { try { return new URL(v, location.href).origin !== origin; } catch (e) { return true; } };
  const show = el => el.outerHTML.slice(0, 160);
  const URL_ATTRS = ['href', 'src', 'action', 'formaction', 'xlink:href', 'data', 'poster', 'background',
                     'srcdoc', 'ping', 'srcset', 'dynsrc', 'lowsrc', 'codebase', 'cite', 'longdesc', 'to'];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const n = a.name.toLowerCase();
      if (n.startsWith('on')) problems.push('event handler ' + n + ': ' + show(el));
      if (URL_ATTRS.includes(n) && badUrl(a.value)) problems.push('dangerous URL ' + n + ': ' + show(el));
      if (n === 'style' && /expression|url\\s*\\(|behavior|binding|@import/i.test(a.value))
        problems.push('style: ' + show(el));
    }
  }
  const live = 'iframe, frame, frameset, object, embed, applet, base, body meta, body link, body style, svg, ' +
               'math, portal, isindex, marquee, video, audio, source, track, xss, template, noscript, ' +
               'input[type=image], form[action]';
  for (const el of document.querySelectorAll(live)) problems.push('live element: ' + show(el));
  for (const el of document.querySelectorAll('script'))
    if (!el.src || !el.src.startsWith(origin + '/static/')) problems.push('script: ' + show(el));
  for (const el of document.querySelectorAll('img, [srcset]'))
    if (el.hasAttribute('srcset') || offOrigin(el.getAttribute('src') || '')) problems.push('image: ' + show(el));
  const shown = '.md, .todo-name, .event-line, .stream-content, #ws-notice .notice-text, .msg-warning, .field-notice';
  for (const root of document.querySelectorAll(shown)) {
    for (const el of root.querySelectorAll('*')) {
      if (!allowedTags.includes(el.tagName)) { problems.push('element in text: ' + show(el)); continue; }
      if (el.tagName === 'BUTTON' && !el.classList.contains('md-copy')) problems.push('button in text: ' + show(el));
      for (const a of el.attributes)
        if (!allowedAttrs.includes(a.name.toLowerCase()))
          problems.push('attribute in text: ' + a.name + ': ' + show(el));
    }
  }
  const id = document.querySelectorAll('#msg-list').length;
  if (id !== 1) problems.push(id + ' elements #msg-list');
  const xss = Object.keys(window).filter(k => /xss/i.test(k));
  if (xss.length) problems.push('globals set: ' + xss.join(', '));
  if (window.__csp.length) problems.push('CSP violations: ' + window.__csp.join(' | '));
  return problems;
}
"""
ALLOWED_ATTRS = ["class", "href", "src", "alt", "title", "rel", "target", "start", "type", "align"]


class Watched:
    """A page with everything it does recorded: dialogs, requests, popups, errors."""

    def __init__(self, page, origin: str):
        self.page, self.origin = page, origin
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.popups: list[str] = []
        page.on("dialog", self._dialog)
        page.on("request", self._request)
        page.on("popup", lambda p: self.popups.append(p.url))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        asyncio.ensure_future(dialog.dismiss())

    def _request(self, request) -> None:
        url = request.url
        allowed = url.startswith(self.origin + "/") or url.startswith(self.origin.replace("http", "ws") + "/ws")
        path = url[len(self.origin):] if url.startswith(self.origin) else url
        if not allowed or not re.match(r"(/|/p/\w+|/static/(plugins/\w+/)?[\w.-]+|/ws)(\?.*)?$", path) or "xss" in url.lower():
            self.requests.append(f"{request.method} {url}")

    async def check(self, where: str) -> None:
        problems = await self.page.evaluate(CHECK_DOM, [sorted(ALLOWED_TAGS), ALLOWED_ATTRS])
        problems += [f"dialog {d}" for d in self.dialogs] + [f"request {r}" for r in self.requests]
        problems += [f"popup {p}" for p in self.popups]
        assert not problems, f"{where}: {len(problems)} problem(s):\n" + "\n".join(problems[:30])

    async def shown(self, texts: list[str], *selectors: str) -> None:
        """Until each text is in one element of each selector (as text, wherever it came from)."""
        try:
            await self.page.wait_for_function(
                "([texts, selectors]) => selectors.every(sel => { const shown = [...document.querySelectorAll(sel)]"
                ".map(e => e.textContent); return texts.every(t => shown.some(s => s.includes(t))); })",
                arg=[texts, list(selectors)], timeout=EXPECT_MS)
        except Exception:
            missing = await self.page.evaluate(
                "([texts, selectors]) => selectors.flatMap(sel => texts.filter(t => ![...document.querySelectorAll("
                "sel)].some(e => e.textContent.includes(t))).map(t => sel + ' ' + t))", [texts, list(selectors)])
            last = await self.page.evaluate(
                "selectors => selectors.map(sel => { const all = document.querySelectorAll(sel); "
                "return sel + ': ' + (all.length ? all[all.length - 1].textContent.slice(0, 300) : '(none)'); })",
                list(selectors))
            raise AssertionError(f"not shown within {EXPECT_MS} ms: {missing[:10]}; the last of each: {last}") from None

    async def reload_and_check(self, where: str) -> None:
        await self.page.reload()
        await expect(self.page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        await self.check(f"{where}, after a reload")


def batches(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def pieces(text: str, size: int = CHUNK) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


class Script:
    """The LLM's replies, chosen by the question: "Q<n> …" gets reply n."""

    def __init__(self):
        self.replies: dict[int, Reply] = {}

    def __call__(self, request: RecordedRequest) -> Reply:
        for message in reversed(request.json.get("messages", [])):
            m = re.match(r"Q(\d+)\b", message.get("content") or "") if message.get("role") == "user" else None
            if m:
                return self.replies[int(m.group(1))]
        return Reply(chunks=["(no scripted reply)"])


@pytest.fixture
def script():
    return Script()


@pytest.fixture
def llm(script):
    with LLMTestServer(script) as server:
        yield server


@pytest.fixture
def server(tmp_path, llm):
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", QUANDA_LLM_TOOLS="off").start()
    yield server
    server.stop()
    assert "Traceback" not in server.log_text(), server.log_text()[-4000:]


@pytest.fixture
async def watched(server):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = await (await browser.new_context()).new_page()
        await page.add_init_script(WATCH)
        w = Watched(page, server.url)
        await page.goto(server.url + "/p/todo")
        await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
        yield w
        await browser.close()


def numbered() -> list[tuple[int, str]]:
    return list(enumerate((v for _family, v in VECTORS), start=1))


async def ask(w: Watched, script: Script, n: int, question: str, reply: Reply, shows: str | None = None):
    """Type `question` (the draft streams into the preview until it `shows` its last marker), check, Send, let
    `reply` stream in; the answer."""
    page = w.page
    script.replies[n] = reply
    answers = page.locator("#msg-list li.msg.assistant")
    before = await answers.count()
    await page.fill("#chat-input", question)
    await expect(page.locator("#draft-preview")).to_contain_text(shows or f"Q{n}", timeout=EXPECT_MS)
    await w.check(f"draft preview of Q{n}")
    await page.click("#chat-send")
    await expect(page.locator("#msg-list li.msg.q").last).to_contain_text(f"Q{n}", timeout=EXPECT_MS)
    await expect(answers).to_have_count(before + 1, timeout=EXPECT_MS)
    answer = answers.nth(before)
    await expect(answer.locator("[data-testid=stop]")).to_have_count(0, timeout=EXPECT_MS)  # written to its end
    return answer


async def test_vectors_as_drafts_questions_and_streamed_answers(server, watched, script):
    w = watched
    for k, group in enumerate(batches(numbered(), BATCH), start=1):
        text = "\n\n".join(marked(i, v) for i, v in group)
        answer = await ask(w, script, k, f"Q{k}\n\n{text}",
                           Reply(chunks=pieces(f"A{k}\n\n{text}"), delay=0.001), shows=markers([group[-1][0]])[0])
        await w.shown(markers(i for i, _v in group), "#msg-list li.msg.assistant", "#msg-list li.msg.q")
        await w.check(f"question and answer {k}")
    # the dangerous part arrives in a later token (each split alone in the long variant, all in one answer else)
    for j, splits in enumerate(batches(list(enumerate(SPLIT, start=1)), 1 if LONG else len(SPLIT)), start=1000):
        chunks = [piece for n, split in splits for piece in (f"\n\nS{n:02d} ", *split)]
        answer = await ask(w, script, j, f"Q{j} split", Reply(chunks=chunks, delay=0.03))
        for n, _split in splits:
            await expect(answer).to_contain_text(f"S{n:02d}")
        await w.check(f"split answer {splits!r}")
    await w.reload_and_check("questions and answers")
    await w.page.click("#menu a[href='/p/chat']")
    await expect(w.page.locator("#page")).to_have_attribute("data-page", "chat", timeout=EXPECT_MS)
    await w.check("the chat page's history")


async def test_vectors_as_todo_names_and_the_event_lines_echoing_them(server, watched):
    """The names are added from another tab while this one shows the chat page (each event line arrives
    live), then shown by the todo page's first render, then all redrawn live by "mark all as done" (which
    sends every row again: every name goes through the live path too), then one more added live."""
    w = watched
    await w.page.click("#menu a[href='/p/chat']")
    await expect(w.page.locator("#page")).to_have_attribute("data-page", "chat", timeout=EXPECT_MS)
    names = [(i, marked(i, v)[:MAX_TODO_NAME]) for i, v in numbered()]
    async with Tab(server.url, await browser_cookie(server.url), page=None) as tab:
        for group in batches(names, BATCH):
            for _i, name in group:
                await tab.send("todo.add", name=name)
            await w.shown(markers(i for i, _n in group), "#msg-list .event-line")
            await w.check("event lines")
        await w.page.click("#menu a[href='/p/todo']")
        await w.shown(markers(i for i, _n in names), "#todo-list .todo-name")
        await w.check("todo names, first render")
        rows = w.page.locator("#todo-list li.todo")
        await rows.evaluate_all("els => els.forEach(e => e.setAttribute('data-old', '1'))")
        await tab.send("todo.toggle_all")
        await expect(w.page.locator("#todo-list li.todo[data-old]")).to_have_count(0, timeout=EXPECT_MS)
        await expect(w.page.locator("#todo-list li.todo[data-done='0']")).to_have_count(0, timeout=EXPECT_MS)
        await w.shown(markers(i for i, _n in names), "#todo-list .todo-name")
        await w.check("todo names, redrawn live")
        await tab.send("todo.add", name="one more")
        await expect(rows).to_have_count(len(names) + 1, timeout=EXPECT_MS)
        await w.check("todo names, one added live")
    await w.reload_and_check("todo names and event lines")
    # the names come back into the edit boxes as values, never as markup (as HTML parses text: a text input
    # drops line breaks, NUL reads as U+FFFD)
    values = await w.page.locator("#todo-list input.edit").evaluate_all("els => els.map(e => e.value)")
    expected = [re.sub(r"[\r\n]", "", name).replace("\x00", "\ufffd") for _i, name in names] + ["one more"]
    assert sorted(values) == sorted(expected)


async def test_vectors_as_command_arguments_and_their_result_lines(server, watched, script):
    """Questions asked through the HTTP API (the page's own asking is the first test's): the answers carry JSON
    commands whose arguments are the vectors; the ✓/✗ result lines echo them in the page."""
    w = watched
    commands = []
    for i, v in numbered():
        name = marked(i, v)[:MAX_TODO_NAME]
        shape = i % 3
        if shape == 0:
            commands.append((i, {"action": "insert", "target": "todo", "args": {"name": name}}))
        elif shape == 1:
            commands.append((i, {"action": name, "target": "todo", "args": {}}))
        else:
            commands.append((i, {"action": "insert", "target": name, "args": {"name": "x"}}))
    cookies = {c["name"]: c["value"] for c in await w.page.context.cookies()}  # the page's own session
    async with httpx.AsyncClient(base_url=server.url, cookies=cookies, headers={"Origin": server.url},
                                 timeout=EXPECT_MS / 1000) as client:
        for k, group in enumerate(batches(commands, min(BATCH, 20)), start=2000):
            script.replies[k] = Reply(chunks=pieces("\n\n".join("```json\n" + json.dumps(c) + "\n```"
                                                               for _i, c in group), 16))
            q = (await client.post("/api/messages", json={"role": "q", "content": f"Q{k} commands"})).json()["id"]
            assert (await client.post(f"/api/messages/{q}/answer", json={})).status_code == 202
            await w.shown(markers(i for i, _c in group), "#msg-list .event-line")
            await w.check(f"command result lines {k}")
    await w.reload_and_check("command result lines")


async def test_vectors_as_simulator_input_and_unknown_actions(server, watched):
    """A page whose forms were edited (dev tools, an extension): the values go to the server as they are and
    come back, where echoed, in the notice."""
    w = watched
    page = w.page
    await page.click("#menu a[href='/p/simulator']")
    await expect(page.locator("#page")).to_have_attribute("data-page", "simulator", timeout=EXPECT_MS)
    for i, v in numbered()[:: 1 if LONG else 5]:
        payload = marked(i, v)
        for field in ("#sim-chunks", "#sim-delay-min"):
            await page.evaluate("([sel, value]) => { const el = document.querySelector(sel); el.type = 'text'; "
                                "el.removeAttribute('min'); el.removeAttribute('max'); el.value = value; }",
                                [field, payload])
            await page.click("#sim-start")  # the simulator's refusals show by its form
            await expect(page.locator("#sim-error")).to_contain_text("whole numbers", timeout=EXPECT_MS)
            await page.evaluate("() => { document.getElementById('sim-error').textContent = ''; }")
        await page.evaluate("([value]) => { document.querySelector('#sim-start-form input[name=action]').value = "
                            "value; }", [payload])
        await page.click("#sim-start")
        await expect(page.locator("#ws-notice")).to_contain_text(
            re.compile(f"unknown action ['\"]{markers([i])[0]}"), timeout=EXPECT_MS)
        if LONG:
            await w.check(f"simulator input {i}")
        await page.evaluate("() => { document.querySelector('#sim-start-form input[name=action]').value = "
                            "'sim.start'; }")
    await w.check("simulator input")
    await w.reload_and_check("simulator input")
