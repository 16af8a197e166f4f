import shutil

import pytest
from playwright.async_api import async_playwright

from tests.servers import AppServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def app_server(tmp_path):
    server = AppServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        await browser.close()
