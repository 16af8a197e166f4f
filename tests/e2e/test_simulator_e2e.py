"""The stream simulator in a real browser: menu, streaming, reload, tabs, sessions, reconnects."""

import re

import pytest
from playwright.async_api import expect

from tests.servers import CuttableProxy

pytestmark = pytest.mark.e2e
EXPECT_MS = 20_000


async def until_all_lines(page, n):
    """The run's box holds every line once the stream caught up (the bar may be told the end sooner, by the
    run's end fact), then exactly those lines."""
    await expect(page.locator(".stream-content")).to_contain_text(f"Simulated chunk {n}/{n}", timeout=EXPECT_MS)
    assert await page.locator(".stream-content").text_content() == lines(n)


def lines(n):
    return "\n".join(f"Simulated chunk {i}/{n}" for i in range(1, n + 1)) + "\n"


async def start_run(page, chunks, low, high):
    await page.fill("#sim-chunks", str(chunks))
    await page.fill("#sim-delay-min", str(low))
    await page.fill("#sim-delay-max", str(high))
    await page.click("#sim-start")


async def ws_open(page):
    await expect(page.locator("#ws-state")).to_have_attribute("data-state", "open", timeout=EXPECT_MS)


async def test_menu_start_200_chunks_bar_reaches_100(app_server, browser):
    page = await browser.new_page()
    await page.goto(app_server.url + "/")
    await ws_open(page)
    await page.click("#menu >> text=Stream simulator")
    await expect(page.locator("#sim-card h3")).to_have_text("Stream simulator")
    await start_run(page, 200, 1, 3)
    bar = page.locator("#sim-run progress")
    await expect(bar).to_have_attribute("value", "200", timeout=EXPECT_MS)
    await expect(bar).to_have_attribute("data-percent", "100")
    content = page.locator(".stream-content")
    await expect(content).to_contain_text("Simulated chunk 200/200")
    assert await content.text_content() == lines(200)  # every chunk once, in order
    await expect(page.locator(".sim-status")).to_have_text("finished")
    await expect(page.locator("#msg-list")).to_contain_text("Stream simulator finished: 200 chunks.")


async def test_reload_mid_run_continues_where_it_was(app_server, browser):
    page = await browser.new_page()
    await page.goto(app_server.url + "/p/simulator")
    await ws_open(page)
    await start_run(page, 120, 20, 30)
    bar = page.locator("#sim-run progress")
    await expect(bar).to_have_attribute("value", re.compile(r"^(1\d|[2-9]\d)$"), timeout=EXPECT_MS)
    await page.reload()
    after_reload = int(await bar.get_attribute("value"))
    assert 10 <= after_reload < 120  # the page shows the run as it was, still going
    await expect(bar).to_have_attribute("value", "120", timeout=EXPECT_MS)
    await until_all_lines(page, 120)


async def test_two_tabs_and_another_browser_see_the_same_run(app_server, browser):
    """Local mode: one workspace for the person at this machine, whatever the browser (or its cookies)."""
    context = await browser.new_context()
    tab1, tab2 = await context.new_page(), await context.new_page()
    for tab in (tab1, tab2):
        await tab.goto(app_server.url + "/p/simulator")
        await ws_open(tab)
    other = await (await browser.new_context()).new_page()  # another browser: its own cookies
    await other.goto(app_server.url + "/p/simulator")
    await ws_open(other)
    await start_run(tab1, 80, 1, 3)
    for tab in (tab1, tab2, other):
        await expect(tab.locator("#sim-run progress")).to_have_attribute("value", "80", timeout=EXPECT_MS)
        await until_all_lines(tab, 80)
        await expect(tab.locator("#msg-list")).to_contain_text("Stream simulator started: 80 chunks.")
    await other.context.clear_cookies()
    await other.reload()
    await expect(other.locator("#sim-run progress")).to_have_attribute("value", "80", timeout=EXPECT_MS)
    await until_all_lines(other, 80)


async def test_stop_ends_the_run_and_says_so(app_server, browser):
    page = await browser.new_page()
    await page.goto(app_server.url + "/p/simulator")
    await ws_open(page)
    await start_run(page, 500, 20, 30)
    await expect(page.locator("#sim-run progress")).to_have_attribute("value", re.compile(r"^[1-9]\d*$"),
                                                                       timeout=EXPECT_MS)
    await page.click("#sim-stop")
    await expect(page.locator(".sim-status")).to_have_text("stopped", timeout=EXPECT_MS)
    await expect(page.locator("#msg-list")).to_contain_text("Stream simulator stopped at chunk")
    await page.reload()
    await expect(page.locator(".sim-status")).to_have_text("stopped")


async def test_invalid_inputs_get_a_visible_error(app_server, browser):
    page = await browser.new_page()
    await page.goto(app_server.url + "/p/simulator")
    await ws_open(page)
    await page.evaluate("document.querySelectorAll('input[type=number]').forEach(i => i.removeAttribute('max'))")
    await start_run(page, 20000, 1, 2)
    notice = page.locator("#sim-error")  # by the form that caused it, not at the top of the page
    await expect(notice).to_contain_text("chunks must be between 1 and 10,000")
    await page.fill("#sim-chunks", "20")  # editing the form: the notice is no longer true
    await expect(notice).to_be_empty()
    await start_run(page, 10, 50, 5)
    await expect(notice).to_contain_text("minimum delay must not exceed the maximum")
    await expect(page.locator("#sim-run")).to_contain_text("No run yet")
    await expect(page.locator("#ws-notice")).to_be_empty()
    await start_run(page, 3, 0, 0)  # a run that starts: the notice goes
    await expect(page.locator(".sim-status")).to_have_text("finished", timeout=EXPECT_MS)
    await expect(notice).to_be_empty()


async def test_leaving_mid_run_stops_its_frames_and_logs_no_error(app_server, browser):
    """Only what is on the page is streamed: after the tab navigates away, no frame of the run arrives (and
    none in flight when it left ends in an htmx:oobErrorNoTarget: the browser fixture fails on any error)."""
    page = await browser.new_page()
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    await page.goto(app_server.url + "/p/simulator")
    await ws_open(page)
    await start_run(page, 150, 20, 30)
    bar = page.locator("#sim-run progress")
    await expect(bar).to_have_attribute("value", re.compile(r"^[1-9]\d*$"), timeout=EXPECT_MS)
    run_id = await page.locator("#sim-run").get_attribute("data-message")
    await page.click("#menu >> text=Todos")
    await expect(page.locator("#todo-card")).to_be_visible()
    await expect(page.locator("#menu a.active")).to_have_text("Todos")
    # a round trip on the same socket, after the tab told the server it shows the todo page: frames of the
    # run sent before that are in flight; none may come after it
    await page.fill("#chat-input", "marker")
    await expect(page.locator("#draft-preview")).to_have_text("marker", timeout=EXPECT_MS)
    after = len(frames)
    await expect(page.locator("#msg-list")).to_contain_text("Stream simulator finished: 150 chunks.",
                                                            timeout=EXPECT_MS)
    late = [f for f in frames[after:] if run_id in str(f)]
    assert late == [], f"{len(late)} frame(s) of the run after leaving its page, e.g. {late[0][:200]}"
    await page.click("#menu >> text=Stream simulator")  # back: the finished run, as it ended
    await expect(bar).to_have_attribute("value", "150")
    assert await page.locator(".stream-content").text_content() == lines(150)


async def test_network_cut_mid_run_resumes_without_gap_or_duplicate(app_server, browser):
    async with CuttableProxy(app_server.port) as proxy:
        page = await browser.new_page()
        await page.goto(proxy.url + "/p/simulator")
        await ws_open(page)
        await start_run(page, 150, 10, 20)
        bar = page.locator("#sim-run progress")
        await expect(bar).to_have_attribute("value", re.compile(r"^([2-9]\d)$"), timeout=EXPECT_MS)
        proxy.cut()
        await expect(page.locator("#ws-state")).to_have_attribute("data-state", "closed", timeout=EXPECT_MS)
        await ws_open(page)  # the ws extension reconnects on 1006 by itself
        await expect(bar).to_have_attribute("value", "150", timeout=EXPECT_MS)
        await until_all_lines(page, 150)


async def test_pages_reference_no_external_url(app_server, browser):
    page = await browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(app_server.url + "/")
    await ws_open(page)
    await page.click("#menu >> text=Stream simulator")
    await expect(page.locator("#sim-card")).to_be_visible()
    html = await page.content()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert requested and all(url.startswith(app_server.url) for url in requested), requested


async def fields(page):
    return [await page.input_value(f"#sim-{name}") for name in ("chunks", "delay-min", "delay-max")]


async def expect_fields(page, values):
    """The fields once the card's redraw has settled (a tab's kept values come back on htmx's settle, a few ms
    after the card is visible)."""
    for name, value in zip(("chunks", "delay-min", "delay-max"), values):
        await expect(page.locator(f"#sim-{name}")).to_have_value(value, timeout=EXPECT_MS)


async def test_the_fields_belong_to_the_run_and_are_kept_per_tab_when_idle(app_server, browser):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(app_server.url + "/p/simulator")
    await ws_open(page)
    await start_run(page, 60, 100, 120)
    await expect(page.locator("#sim-stop")).to_be_enabled(timeout=EXPECT_MS)
    start, stop = await page.locator("#sim-start").bounding_box(), await page.locator("#sim-stop").bounding_box()
    assert abs(start["y"] - stop["y"]) < 4 and stop["x"] > start["x"], "Stop sits beside Start"
    await page.click("#menu >> text=Todos")
    await page.click("#menu >> text=Stream simulator")
    await expect(page.locator("#sim-stop")).to_be_enabled()
    assert await fields(page) == ["60", "100", "120"]  # the run's, not the defaults
    other = await context.new_page()  # another tab, and a reload: the run's values too
    await other.goto(app_server.url + "/p/simulator")
    await ws_open(other)
    assert await fields(other) == ["60", "100", "120"]
    await page.reload()
    await ws_open(page)
    assert await fields(page) == ["60", "100", "120"]
    await page.click("#sim-stop")
    await expect(page.locator(".sim-status")).to_have_text("stopped", timeout=EXPECT_MS)

    await page.fill("#sim-chunks", "30")  # idle: what this tab typed is kept through a navigation and a reload
    await page.click("#menu >> text=Todos")
    await page.click("#menu >> text=Stream simulator")
    await expect(page.locator("#sim-card")).to_be_visible()
    await expect_fields(page, ["30", "100", "120"])
    await page.reload()
    await ws_open(page)
    await expect_fields(page, ["30", "100", "120"])
    await other.reload()
    await ws_open(other)
    assert await fields(other) == ["60", "100", "120"]  # the other tab's own: the last run's values
    await page.click("#sim-start")  # Start runs with what is shown
    await expect(page.locator("#sim-run progress")).to_have_attribute("max", "30", timeout=EXPECT_MS)
    await expect(other.locator("#sim-run progress")).to_have_attribute("max", "30", timeout=EXPECT_MS)
    assert await fields(other) == ["30", "100", "120"]  # a run started elsewhere: its values everywhere
