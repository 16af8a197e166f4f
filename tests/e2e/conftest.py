import shutil

import pytest
from playwright.async_api import async_playwright

from tests.llm_server import LLMTestServer, Reply
from tests.servers import AppServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


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


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        await browser.close()
