"""Ownership and the door in a real browser: local mode's one workspace across browsers, accounts mode's
login, a same-site attacker page on another port of 127.0.0.1, and no Content-Security-Policy violation
while the app streams."""

import http.server
import threading

import pytest
from playwright.async_api import expect

from tests.llm_server import Reply
from tests.servers import ACCOUNTS, PASSWORD, AppServer, add_user

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
"""


async def open_page(context, url):
    page = await context.new_page()
    await page.add_init_script(WATCH_CSP)
    errors = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.errors = errors
    await page.goto(url)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    return page


async def csp_violations(page):
    return await page.evaluate("window.__csp")


async def test_local_mode_two_browsers_share_todos_and_conversation_live(app_server, llm, browser):
    llm.script = Reply(chunks=["Hello ", "both."], delay=0.05)
    first = await open_page(await browser.new_context(), app_server.url + "/p/todo")
    second = await open_page(await browser.new_context(), app_server.url + "/p/todo")
    await first.fill("#todo-new", "shared todo")
    await first.click("#todo-add")
    await expect(second.locator("#todo-list")).to_contain_text("shared todo", timeout=EXPECT_MS)
    await second.fill("#chat-input", "a question from the second browser")
    await second.click("#chat-send")
    for page in (first, second):
        await expect(page.locator("#msg-list")).to_contain_text("a question from the second browser",
                                                                timeout=EXPECT_MS)
        await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("Hello both.", timeout=EXPECT_MS)
    await first.context.clear_cookies()
    await first.reload()
    await expect(first.locator("#todo-list")).to_contain_text("shared todo", timeout=EXPECT_MS)
    await expect(first.locator("#msg-list")).to_contain_text("Hello both.")
    for page in (first, second):
        assert await csp_violations(page) == []


async def test_no_csp_violation_while_the_simulator_runs_and_an_answer_streams(app_server, llm, browser):
    llm.script = Reply(chunks=["# Title\n\n", "Some **bold** and `code`.\n\n", "```python\nx = 1\n```\n",
                               "[a link](https://example.com) ![img](/static/favicon.svg)"], delay=0.05)
    page = await open_page(await browser.new_context(), app_server.url + "/p/simulator")
    await page.fill("#sim-chunks", "60")
    await page.click("#sim-start")
    await page.fill("#chat-input", "stream something")
    await page.click("#chat-send")
    await expect(page.locator("#sim-run progress")).to_have_attribute("value", "60", timeout=EXPECT_MS)
    await expect(page.locator("#msg-list li.msg.assistant")).to_contain_text("a link", timeout=EXPECT_MS)
    for path in ("/p/todo", "/p/chat", "/p/simulator"):
        await page.click(f"#menu a[href='{path}']")
        await expect(page.locator("#page")).to_have_attribute("data-page", path.rsplit("/", 1)[1])
    assert await csp_violations(page) == [], await csp_violations(page)


class AttackerSite:
    """A page served from another port of 127.0.0.1 (the same *site* as the app): it tries to drive the
    victim's session with a WebSocket and with text/plain POSTs, and to read what comes back."""

    def __init__(self, target: str):
        page = f"""<!doctype html><html><body><script>
window.report = {{ws: [], posts: []}};
const ws = new WebSocket("{target.replace('http', 'ws')}/ws");
ws.onopen = () => {{
  ws.send(JSON.stringify({{action: "view", page: "todo", streams: {{}}, fresh: []}}));
  ws.send(JSON.stringify({{action: "todo.add", name: "planted by the attacker"}}));
}};
ws.onmessage = e => window.report.ws.push(e.data);
ws.onerror = () => window.report.ws.push("error");
ws.onclose = e => window.report.wsClosed = e.code;
for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]) {{
  fetch("{target}/api/messages", {{method: "POST", credentials: "include", mode: "no-cors",
        headers: {{"Content-Type": type}}, body: JSON.stringify({{role: "q", content: "planted"}})}})
    .then(r => window.report.posts.push(r.type), e => window.report.posts.push("error"));
}}
</script></body></html>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def test_a_page_on_another_port_of_localhost_can_neither_drive_nor_read_the_app(app_server, browser):
    for refused in (r"status of 403", r"WebSocket handshake: Unexpected response code: 403",
                    r"404.*0123456789abcdef01234567"):
        browser.expect_error(refused)  # the refusals themselves, as the browser reports them
    context = await browser.new_context()
    victim = await open_page(context, app_server.url + "/p/todo")
    await victim.fill("#todo-new", "the victim's own todo")
    await victim.click("#todo-add")
    await expect(victim.locator("#todo-list")).to_contain_text("the victim's own todo", timeout=EXPECT_MS)
    attacker = AttackerSite(app_server.url)
    try:
        evil = await context.new_page()  # the same browser: the victim's cookies go with its requests
        await evil.goto(attacker.url)
        await evil.wait_for_function("window.report.wsClosed !== undefined && window.report.posts.length === 3",
                                     timeout=EXPECT_MS)
        report = await evil.evaluate("window.report")
        assert report["ws"] in ([], ["error"]), report  # refused at the handshake: nothing read
        await victim.reload()
        await expect(victim.locator("#todo-list")).to_contain_text("the victim's own todo", timeout=EXPECT_MS)
        assert "planted" not in await victim.content()
        messages = await victim.evaluate(
            "fetch('/api/messages/0123456789abcdef01234567').then(r => r.status)")  # the app itself still works
        assert messages == 404
    finally:
        attacker.close()
    assert "planted" not in app_server.log_text() or "refused" in app_server.log_text()


@pytest.fixture
def accounts_server(tmp_path, llm):
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test", **ACCOUNTS).start()
    add_user(server, "alice")
    yield server
    server.stop()


async def test_accounts_mode_login_wrong_password_and_logout(accounts_server, browser):
    page = await (await browser.new_context()).new_page()
    await page.add_init_script(WATCH_CSP)
    await page.goto(accounts_server.url + "/")
    await expect(page).to_have_url(accounts_server.url + "/login")
    await page.fill("#login-user", "alice")
    await page.fill("#login-password", "not the password")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await expect(page.locator("#account-name")).to_have_text("alice", timeout=EXPECT_MS)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    await page.fill("#todo-new", "alice's todo")
    await page.click("#todo-add")
    await expect(page.locator("#todo-list")).to_contain_text("alice's todo", timeout=EXPECT_MS)
    await page.click("#logout")
    await expect(page).to_have_url(accounts_server.url + "/login")
    await page.goto(accounts_server.url + "/p/todo")
    await expect(page).to_have_url(accounts_server.url + "/login")
    assert await csp_violations(page) == []


async def test_a_tab_signed_out_by_a_password_change_says_why_and_stops(accounts_server, browser):
    """`users passwd` in a shell: within a second the open tab shows why it was signed out, with a link to sign
    in again; its controls are disabled and its socket is not reopened (no reconnect as if nothing happened)."""
    import asyncio
    import subprocess
    import sys
    import time

    page = await (await browser.new_context()).new_page()
    await page.add_init_script(WATCH_CSP)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws))
    await page.goto(accounts_server.url + "/login")
    await page.fill("#login-user", "alice")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "quanda", "users", "passwd", "alice",
                                                    "--password-stdin"], input="a brand new password\n", text=True,
                                   capture_output=True, cwd=accounts_server.workdir, env=accounts_server.env)
    assert done.returncode == 0, done.stderr
    changed = time.monotonic()
    notice = page.locator("#ws-notice.signed-out")
    await expect(notice).to_contain_text("signed out: your password was changed", timeout=EXPECT_MS)
    shown_after = time.monotonic() - changed
    assert shown_after < 1.0, shown_after  # (measured from the command's end, the browser polled: an upper bound)
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "signed-out")
    await expect(page.locator("#todo-new")).to_be_disabled()
    await expect(page.locator("#chat-input")).to_be_disabled()
    opened = len(sockets)
    await page.wait_for_timeout(2500)  # a reconnect would come within ~1 s (the ws extension's first backoff)
    assert len(sockets) == opened == 1
    await notice.locator("a", has_text="Sign in again").click()
    await expect(page).to_have_url(accounts_server.url + "/login")
    assert await csp_violations(page) == []
