import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots for a reviewer (git-ignored)
README_SHOTS = ROOT / "docs" / "screenshots"  # the README's, rewritten only with QUANDA_UPDATE_SCREENSHOTS=1


@pytest.fixture
def llm():
    """A scripted LLM server (Ollama wire) on a loopback port, served from a thread for the app process."""
    with LLMTestServer(Reply(chunks=["Hello!"])) as server:
        yield server


@pytest.fixture
def app_server(tmp_path, llm):
    server = AppServer(tmp_path, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test").start()
    yield server
    server.stop()


class WatchedBrowser:
    """The browser, with every page it opens watched: a console error (an `htmx:oobErrorNoTarget`, a failed
    request, a script error) anywhere fails the test, unless the test says it expects it (`expect_error`)."""

    def __init__(self, browser):
        self._browser = browser
        self.errors: list[str] = []
        self.expected: list[re.Pattern] = []

    def __getattr__(self, name):
        return getattr(self._browser, name)

    def expect_error(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def _record(self, text: str) -> None:
        if not any(p.search(text) for p in self.expected):
            self.errors.append(text)

    async def new_context(self, **kwargs):
        context = await self._browser.new_context(**kwargs)
        context.on("console", lambda m: m.type == "error" and self._record(f"console: {m.text} ({m.location})"))
        context.on("weberror", lambda e: self._record(f"page error: {e.error}"))
        return context

    async def new_page(self, **kwargs):
        context = await self.new_context(**kwargs)
        return await context.new_page()


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        watched = WatchedBrowser(browser)
        yield watched
        await browser.close()
        assert not watched.errors, "errors in the browser's console:\n" + "\n".join(watched.errors)


async def screenshot(page, name: str, readme: bool = False, **kwargs) -> Path:
    """A screenshot for the reviewer under tests/artifacts/; a README one is also written to docs/screenshots/
    when QUANDA_UPDATE_SCREENSHOTS=1 (so a test run never dirties the checkout by itself)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), **kwargs)
    if readme and os.environ.get("QUANDA_UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_SHOTS / f"{name}.png")
    return path
