"""Approvals in the terminal client (Textual's headless pilot, the real app server, the scripted LLM): the
answer shows the action that waits, ^Y approves it (it runs once, the answer goes on), ^X rejects the next one
(the answer says so); with nothing waiting, the keys say so."""

from textual.widgets import Static

from quanda.tui.app import QuandaTUI
from tests.llm_server import Chunk, Reply, ToolCall
from tests.test_tui import SIZE, TOKEN, WAIT_S, connected, llm, server, type_text  # noqa: F401


def call(name: str, args: dict) -> Reply:
    return Reply(chunks=[Chunk(tool_calls=[ToolCall(name, args)])])


async def ask(app, pilot, text: str):
    before = app.conv.last_answer()
    await type_text(pilot, text)
    await pilot.press("ctrl+s")
    await app.until(lambda: (a := app.conv.last_answer()) is not None and a is not before, WAIT_S, "the answer")
    return app.conv.last_answer()


async def settled(app, entry, text: str) -> None:
    await app.until(lambda: entry.status in ("done", "final") and text in entry.message.content, WAIT_S,
                    f"the answer to end saying {text!r}")


def approvals_shown(app, entry) -> str:
    return str(app.entry_view(entry).query_one(".approvals", Static).render())


async def test_ctrl_y_approves_and_ctrl_x_rejects_the_waiting_action(server, llm):
    llm.script = [call("todo_insert", {"name": "buy milk"}), Reply(chunks=["Added."]),
                  call("todo_delete", {"id": 1}), Reply(chunks=["Gone."]),
                  call("todo_insert", {"name": "buy eggs"}), Reply(chunks=["Added."]),
                  call("todo_delete", {"id": 2}), Reply(chunks=["Kept."])]
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        await pilot.press("ctrl+y")
        await app.until(lambda: True, WAIT_S, "a frame")
        assert "No action waits for your approval." in [n.message for n in app._notifications]
        await settled(app, await ask(app, pilot, "add milk"), "Added.")

        deleting = await ask(app, pilot, "delete milk")
        await app.until(lambda: deleting.status == "waiting" and app.conv.pending_approval() is not None, WAIT_S,
                        "the delete to wait for approval")
        await app.until(lambda: "Approve?" in approvals_shown(app, deleting), WAIT_S, "the approval shown")
        assert "Deleted the todo 'buy milk' (id 1)" in approvals_shown(app, deleting)
        await pilot.press("ctrl+y")
        await settled(app, deleting, "Gone.")
        assert deleting.message.content.count("✓ Deleted the todo 'buy milk' (id 1).") == 1
        await app.until(lambda: "Approved:" in approvals_shown(app, deleting), WAIT_S, "the decision shown")

        await settled(app, await ask(app, pilot, "add eggs"), "Added.")
        kept = await ask(app, pilot, "delete eggs")
        await app.until(lambda: app.conv.pending_approval() is not None, WAIT_S, "the second delete to wait")
        await pilot.press("ctrl+x")
        await settled(app, kept, "Kept.")
        assert "✗ todo_delete not run: the user rejected it" in kept.message.content
        await app.until(lambda: "Rejected:" in approvals_shown(app, kept), WAIT_S, "the rejection shown")

        adding_eggs = app.conv.entries[-3]  # the answer that added the eggs (before the question "delete eggs")
        assert "Added the todo 'buy eggs'" in adding_eggs.message.content
        await app.until(lambda: "^Z undo" in approvals_shown(app, adding_eggs), WAIT_S, "Undo offered")
        await pilot.press("ctrl+z")  # the newest action that can be undone: the eggs added
        await app.until(lambda: "Undone:" in approvals_shown(app, adding_eggs), WAIT_S, "the add undone")
        await pilot.press("ctrl+z")  # then the delete of the milk: it comes back
        await app.until(lambda: "Undone:" in approvals_shown(app, deleting), WAIT_S, "the delete undone")
        await app.until(lambda: any(e.type == "event" and "The user undid: Deleted the todo 'buy milk'" in e.text
                                    for e in app.conv.entries), WAIT_S, "the model told")


async def test_ctrl_z_after_the_todo_changed_shows_why_it_was_refused(server, llm):
    from quanda.core import open_store

    llm.script = [call("todo_insert", {"name": "call mum"}), Reply(chunks=["Added."])]
    app = QuandaTUI(server.url, TOKEN)
    async with app.run_test(size=SIZE) as pilot:
        await connected(app)
        adding = await ask(app, pilot, "add call mum")
        await settled(app, adding, "Added.")
        await app.until(lambda: "^Z undo" in approvals_shown(app, adding), WAIT_S, "Undo offered")
        store = await open_store(f"sqlite:///{server.workdir}/data/quanda.db")  # another writer: a second server
        try:
            [(key, todo)] = [(k, t) for k, t in await store.list_records("todo") if t["name"] == "call mum"]
            await store.put_record("todo", key, {**todo, "name": "call dad"})
        finally:
            await store.close()
        await pilot.press("ctrl+z")
        await app.until(lambda: any("changed since" in n.message for n in app._notifications), WAIT_S,
                        "the refusal's reason")
        assert "Undone:" not in approvals_shown(app, adding)
