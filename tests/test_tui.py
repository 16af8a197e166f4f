"""The terminal client, driven by Textual's headless pilot against the real app server (a subprocess) and the
scripted LLM server: type, send, watch the answer stream, stop, retry, quit; history then live; connections
cut mid-answer and a server restart mid-answer, resumed with nothing missed or repeated; every problem shown
with what to do; nothing left running after quit."""

import asyncio

import httpx
import pytest

from quanda.tui.app import TASK_PREFIX, QuandaTUI
from quanda.tui.widgets import AnswerView, MessageMarkdown
from tests.llm_server import Chunk, LLMTestServer, Reply
from tests.servers import ACCOUNTS, AppServer, CuttableProxy, free_port

TOKEN = "tui-token"
WAIT_S = 20
SIZE = (100, 40)


@pytest.fixture(scope="module")
def llm():
    with LLMTestServer(Reply(chunks=["ok"])) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory, llm):
    server = AppServer(tmp_path_factory.mktemp("tui"), QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url,
                       OLLAMA_MODEL="quanda-test").start()
    yield server
    server.stop()


def words(n, prefix="w"):
    return [f"{prefix}{i} " for i in range(n)]


def our_tasks():
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIX) and not t.done()]


def answer_markdown(app, entry):
    view = app.entry_view(entry)
    assert isinstance(view, AnswerView)
    return next(md for md in view.query(MessageMarkdown) if md.state is entry.message)


async def shown(app, entry):
    """The answer's text as its widget holds it, once the markdown stream has caught up."""
    md = answer_markdown(app, entry)
    await app.until(lambda: md.source == entry.message.content, WAIT_S, "the widget to show the text")
    return md.source


async def server_state(server, message_id):
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        return (await api.get(f"/api/messages/{message_id}")).json()


async def connected(app):
    await app.until(lambda: app.connected and app.conv.status, WAIT_S, "the client to connect")


async def type_text(pilot, text):
    for ch in text:
        await pilot.press("ctrl+j" if ch == "\n" else "space" if ch == " " else ch)  # ^J adds a line


async def test_type_send_stream_stop_retry_quit(server, llm):
    script = words(300)
    llm.script = [Reply(chunks=script, delay=0.03), Reply(chunks=["Fresh ", "**answer**."])]
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await type_text(pilot, "Count\nslowly")
        await pilot.press("enter")  # Enter sends, as in the browser
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.message.content.count(" ") > 5,
                        WAIT_S, "the answer to start streaming")
        question = app.conv.entries[-2]
        assert question.type == "q" and question.message.content == "Count\nslowly"
        assert app.query_one("#input").text == ""  # sent: the input is ready for the next question
        entry = app.conv.last_answer()
        md = answer_markdown(app, entry)
        await app.until(lambda: "w10 " in md.source, WAIT_S, "the widget to show words as they stream")
        assert entry.status == "generating" and "w299" not in md.source  # shown while being written
        await pilot.press("ctrl+t")
        assert await llm.wait_disconnect(timeout=10)  # Stop reached the LLM: generation stopped
        await app.until(lambda: entry.status == "stopped" and entry.message.warning == "stopped", WAIT_S,
                        "the answer to be stopped")
        await app.until(lambda: not app.followers, WAIT_S, "its reader to end")
        state = await server_state(server, entry.message.id)
        assert entry.message.content == state["content"] and await shown(app, entry) == state["content"]
        assert "".join(script).startswith(state["content"]) and "w299" not in state["content"]
        assert str(app.entry_view(entry).query_one(".warning").render()) == "stopped"
        await pilot.press("ctrl+r")
        await app.until(lambda: entry.status == "done" and entry.message.immutable, WAIT_S, "the retried answer")
        assert await shown(app, entry) == "Fresh **answer**." and entry.message.warning == ""
        await app.until(lambda: not app.followers, WAIT_S, "its reader to end")
        await pilot.press("ctrl+q")
    assert our_tasks() == [] and app.client.http.is_closed


async def test_ctrl_n_starts_a_new_conversation_and_the_screen_follows(server, llm):
    llm.script = Reply(chunks=["Before ", "the new one."])
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await type_text(pilot, "First")
        await pilot.press("ctrl+s")
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.status == "done", WAIT_S,
                        "the first answer")
        await pilot.press("ctrl+n")
        await app.until(lambda: app.conv.entries == [], WAIT_S, "the screen to show the new, empty conversation")
        llm.script = Reply(chunks=["In ", "the new one."])
        await type_text(pilot, "Second")
        await pilot.press("ctrl+s")
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.status == "done", WAIT_S,
                        "the answer in the new conversation")
        assert [e.message.content for e in app.conv.entries] == ["Second", "In the new one."]
        await pilot.press("ctrl+q")
    assert our_tasks() == []


async def test_history_then_live_without_a_token(server, llm):
    """No token: the client takes local mode's workspace as a browser tab does."""
    llm.script = Reply(chunks=["Earlier ", "answer."])
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        before = (await api.post("/api/chat/ask", json={"text": "an earlier question"})).json()
        async with api.stream("GET", f"/api/messages/{before['answer_id']}/events") as stream:
            async for line in stream.aiter_lines():
                if line == "event: thread.run.completed":
                    break
    llm.script = Reply(chunks=words(30, "live"), delay=0.01)
    app = QuandaTUI(server.url, None)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        held = {e.message.id: e for e in app.conv.entries if e.message is not None}
        assert held[before["question_id"]].message.content == "an earlier question"
        assert await shown(app, held[before["answer_id"]]) == "Earlier answer."
        for entry in held.values():  # every message of the history drawn whole (none wiped as it mounted)
            md = next(md for md in app.query(MessageMarkdown) if md.state is entry.message)
            await app.until(lambda: md.source == entry.message.content, WAIT_S, f"{entry.message.id} drawn")
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            asked = (await api.post("/api/chat/ask", json={"text": "from elsewhere"})).json()
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.message.id == asked["answer_id"]
                        and a.status == "done", WAIT_S, "the answer asked elsewhere")
        assert await shown(app, app.conv.last_answer()) == "".join(words(30, "live"))
        await pilot.press("ctrl+c")  # ^C quits too
    assert our_tasks() == [] and app.client.http.is_closed


async def test_thinking_streams_into_a_collapsed_section(server, llm):
    llm.script = Reply(chunks=[Chunk(thinking="Let me "), Chunk(thinking="think."), "The ", "answer."], delay=0.02)
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await type_text(pilot, "think")
        await pilot.press("ctrl+s")
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.status == "done"
                        and a.thinking is not None and a.thinking.immutable, WAIT_S, "the answer and its thinking")
        entry = app.conv.last_answer()
        view = app.entry_view(entry)
        section = view.query_one(".thinking")
        thinking_md = view.query_one(".thinking-text", MessageMarkdown)
        await app.until(lambda: thinking_md.source == "Let me think.", WAIT_S, "the thinking shown")
        assert section.collapsed and section.title == "Thinking (3 words)"
        await pilot.press("ctrl+o")
        assert not section.collapsed
        assert await shown(app, entry) == "The answer."
        await pilot.press("ctrl+q")
    assert our_tasks() == []


async def test_cut_connections_mid_answer_resume_with_no_gap_and_no_duplicate(server, llm):
    script = words(300)
    llm.script = Reply(chunks=script, delay=0.02)
    async with CuttableProxy(server.port) as proxy:
        app = QuandaTUI(proxy.url, TOKEN)
        async with app.run_test(size=SIZE) as pilot:
            await connected(app)
            await type_text(pilot, "go")
            await pilot.press("ctrl+s")
            for mark in ("w20 ", "w60 "):
                await app.until(lambda: (a := app.conv.last_answer()) is not None and mark in a.message.content,
                                WAIT_S, f"{mark!r} to arrive")
                # both streams back (the conversation's and the answer's: each reconnects after its own
                # backoff), so the cut below has connections to cut
                await app.until(lambda: app.connected and not app.problems
                                and app.conv.last_answer().message.id in app.followers,
                                WAIT_S, "the conversation and the answer to be followed again")
                assert app.conv.last_answer().status == "generating", "the answer ended before the cut"
                logged = app.problems_shown
                proxy.cut()  # every connection reset, as when a network drops
                await app.until(lambda: app.problems_shown > logged, WAIT_S, "the cut to be shown")
                assert any("cut" in p.text or "reach" in p.text
                           for p in list(app.problem_log)[-(app.problems_shown - logged):])
            entry = app.conv.last_answer()
            await app.until(lambda: entry.status == "done" and entry.message.immutable, WAIT_S, "the whole answer")
            assert entry.message.content == "".join(script)  # every token once: no gap, no duplicate
            assert await shown(app, entry) == "".join(script)
            await app.until(lambda: not app.problems, WAIT_S, "the problems to clear")
            await pilot.press("ctrl+q")
        assert our_tasks() == []
        await until_closed(proxy)  # no connection left behind


async def until_closed(proxy):
    """The proxy has no open connection (it notices each as it closes: there is no event to wait on)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while proxy.writers:
        assert asyncio.get_running_loop().time() < deadline, f"{len(proxy.writers)} connections still open"
        await asyncio.sleep(0.02)


async def test_a_server_restart_mid_answer_reconnects_and_resumes(tmp_path, llm):
    script = words(400)
    llm.script = [Reply(chunks=script, delay=0.02), Reply(chunks=["After ", "the ", "restart."])]
    server = AppServer(tmp_path, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url, OLLAMA_MODEL="quanda-test").start()
    try:
        app = QuandaTUI(server.url, TOKEN)
        async with app.run_test(size=SIZE) as pilot:
            await connected(app)
            await type_text(pilot, "long one")
            await pilot.press("ctrl+s")
            await app.until(lambda: (a := app.conv.last_answer()) is not None and "w20 " in a.message.content,
                            WAIT_S, "the answer to stream")
            await asyncio.to_thread(server.stop)  # the answer is stopped and marked as the server goes
            await app.until(lambda: "conversation" in app.problems, WAIT_S, "the lost server to be shown")
            assert "is the server running" in str(app.problems["conversation"]) or \
                "cut" in str(app.problems["conversation"])  # (it stays until the server is back)
            await asyncio.to_thread(server.start)
            entry = app.conv.last_answer()
            await app.until(lambda: app.connected and entry.status in ("stopped", "interrupted")
                            and not app.followers, WAIT_S, "the client to resume after the restart")
            state = await server_state(server, entry.message.id)
            assert entry.message.content == state["content"] and entry.message.last_seq == state["last_seq"]
            assert "".join(script).startswith(state["content"])  # nothing repeated
            assert await shown(app, entry) == state["content"]
            await pilot.press("ctrl+r")
            await app.until(lambda: entry.status == "done", WAIT_S, "the answer retried after the restart")
            assert await shown(app, entry) == "After the restart."
            await pilot.press("ctrl+q")
        assert our_tasks() == []
    finally:
        server.stop()


def record_notices(app):
    notices = []
    shown = app.notify

    def notify(message, **kwargs):
        notices.append(message)
        shown(message, **kwargs)
    app.notify = notify
    return notices


async def test_refusals_are_shown(server, llm):
    llm.script = Reply(chunks=words(1000), delay=0.03)  # written for as long as the test needs
    app = QuandaTUI(server.url, TOKEN)
    notices = record_notices(app)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("ctrl+s")  # nothing typed
        await pilot.press("ctrl+t")  # nothing being written
        await app.until(lambda: len(notices) >= 2, WAIT_S, "two notices")
        said = " | ".join(notices)
        assert "Type a question first" in said and "No answer is being written" in said
        await type_text(pilot, "first")
        await pilot.press("ctrl+s")
        await app.until(lambda: app.conv.answering() is not None, WAIT_S, "the answer")
        await type_text(pilot, "second")
        await pilot.press("ctrl+s")
        await app.until(lambda: any("still being written" in n for n in notices), WAIT_S,
                        "the refusal of a second question")
        assert app.query_one("#input").text == "second"  # kept, to send once the answer is done
        await pilot.press("ctrl+t")
        await app.until(lambda: app.conv.last_answer().status == "stopped", WAIT_S, "the stop")
        await pilot.press("ctrl+q")
    assert our_tasks() == []


@pytest.mark.parametrize("case", ["no server", "accounts without a token", "a wrong token"])
async def test_problems_say_what_to_do(tmp_path, case):
    server = None
    if case == "no server":
        url, token, says = f"http://127.0.0.1:{free_port()}", None, "Start it with `python main.py`"
    else:
        server = AppServer(tmp_path, **ACCOUNTS).start()
        url = server.url
        token, says = (None, "python -m quanda tokens create NAME") if case == "accounts without a token" \
            else ("qk_wrong", "--token")
    try:
        app = QuandaTUI(url, token)
        async with app.run_test(size=SIZE) as pilot:
            await app.until(lambda: "conversation" in app.problems, WAIT_S, "the problem")
            problem = app.problems["conversation"]
            assert says in str(problem), str(problem)
            assert says.split("`")[0] in str(app.query_one("#problem").render())
            await pilot.press("ctrl+q")
        assert our_tasks() == [] and app.client.http.is_closed
    finally:
        if server:
            server.stop()


async def test_enter_sends_and_ctrl_j_or_alt_enter_adds_a_line(server, llm):
    llm.script = Reply(chunks=["Two ", "lines."])
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("ctrl+n")
        await app.until(lambda: app.conv.entries == [], WAIT_S, "a new, empty conversation")
        await type_text(pilot, "one")
        await pilot.press("ctrl+j")
        await type_text(pilot, "two")
        await pilot.press("alt+enter")
        await type_text(pilot, "three")
        assert app.query_one("#input").text == "one\ntwo\nthree" and app.conv.last_answer() is None
        await pilot.press("enter")
        await app.until(lambda: (a := app.conv.last_answer()) is not None and a.status == "done", WAIT_S,
                        "the answer to the question Enter sent")
        assert app.conv.entries[-2].message.content == "one\ntwo\nthree"
        assert app.query_one("#input").text == ""
        await pilot.press("ctrl+q")


async def test_the_footer_shows_every_key_within_80_columns(server):
    from textual.widgets._footer import FooterKey

    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=(80, 24)) as pilot:
        await connected(app)
        await pilot.pause()
        keys = sorted(app.query(FooterKey), key=lambda k: k.region.x)
        shown = {k.description: k.key_display for k in keys}
        assert shown == {"Send": "⏎", "New line": "^j", "Stop": "^t", "Retry": "^r", "New": "^n",
                         "Thinking": "^o", "Quit": "^q"}, shown
        for left, right in zip(keys, keys[1:]):
            assert left.region.right <= right.region.x, f"{left.description!r} overlaps {right.description!r}"
        assert keys[-1].region.right <= 80, f"{keys[-1].description!r} is cut at 80 columns"
        await pilot.press("ctrl+q")


def test_the_readme_session_names_what_the_command_line_has():
    import re
    import subprocess
    import sys
    from pathlib import Path

    section = (Path(__file__).resolve().parent.parent / "docs" / "terminal.md").read_text()
    shown = subprocess.run([sys.executable, "-m", "quanda.tui", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for flag in set(re.findall(r"`(--[a-z]+)", section)):
        assert flag in shown.stdout, f"docs/terminal.md names {flag}; `python -m quanda.tui --help` does not"
    assert "pip install -e '.[tui]'" in section and "python -m quanda.tui" in section and "python main.py" in section
    for key, action in (("^S", "send"), ("^T", "stop"), ("^R", "retry"), ("^N", "new_conversation"),
                        ("^Q", "quit"), ("^O", "toggle_thinking")):
        assert key in section and any(b.key == "ctrl+" + key[1].lower() and b.action == action
                                      for b in QuandaTUI.BINDINGS), key
