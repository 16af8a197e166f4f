"""A host's action with its own undo (`@q.action(undo=…)`), in-process: Undo calls it once with the call's
arguments; a refusal (the data changed since) says why and leaves Undo possible; an action without one offers
no Undo; approval and a result component are declared the same way."""

from fasthtml.common import FastHTML, Span, to_xml
from starlette.testclient import TestClient

from quanda import undo
from quanda.api import ClientError, Quanda
from quanda.commands import plan_tool_call, run_once, tool_specs
from quanda.components.answer import ResultCard
from quanda.core import QuandaMessage
from tests.test_host import ORIGIN, settings


def notes_host(tmp_path):
    rows: dict[str, list[str]] = {}
    undone: list[tuple] = []
    q = Quanda(settings=settings(tmp_path), name="notes", label="Notes")

    def forget(title: str, workspace: str, result: str) -> str:
        if title not in rows.get(workspace, []):
            raise ClientError(f"the note {title!r} was changed since")
        rows[workspace].remove(title)
        undone.append((workspace, title, result))
        return f"removed {title}"

    @q.action(undo=forget, result=lambda r: Span(f"note: {r['args']['title']}", cls="note-card"),
              approval=lambda args: args["title"].startswith("!"))
    def add_note(workspace: str, title: str) -> str:
        """Add a note."""
        rows.setdefault(workspace, []).append(title)
        return f"Added the note {title}."

    @q.action
    def ping(workspace: str) -> str:
        """Ping."""
        return "Pong."

    app = FastHTML(default_hdrs=False)
    q.mount(app)
    return q, app, rows, undone


def test_a_hosts_undo_runs_once_and_a_refusal_says_why(tmp_path):
    q, app, rows, undone = notes_host(tmp_path)
    with TestClient(app, base_url=ORIGIN) as client:
        ctx = client.app.state.ctx

        async def scenario():
            h = ctx.handle("alice")
            answer = await QuandaMessage.create(ctx.store, role="assistant")
            await h.own(answer.id, "assistant")
            specs = tool_specs(ctx.plugins)
            assert specs["add_note"].approval({"title": "!x"}) and not specs["add_note"].approval({"title": "x"})
            for position, (name, args) in enumerate([("add_note", {"title": "milk"}), ("ping", {})]):
                command, plan = await plan_tool_call(h, {"name": name, "arguments": args}, specs)
                await run_once(h, f"{answer.id}:tool:0:{position}", answer.id, command, plan, post_line=False)
            added, pinged = await undo.results_of(h, answer.id)
            assert added["undoable"] and not pinged["undoable"]  # a host's action without undo offers none
            assert "note: milk" in to_xml(ResultCard(added))
            rows["alice"].remove("milk")  # changed since, by the host's own page
            try:
                await undo.undo(h, added["key"])
            except ClientError as exc:
                assert "Undo refused: the note 'milk' was changed since" in str(exc)
            else:
                raise AssertionError("the undo was not refused")
            rows["alice"].append("milk")
            assert (await undo.results_of(h, answer.id))[0]["undoable"]  # a refusal leaves Undo possible
            said = await undo.undo(h, added["key"])
            assert said == "The user undid: Added the note milk. (removed milk)"
            try:
                await undo.undo(h, added["key"])
            except ClientError as exc:
                assert "undone already" in str(exc)
            else:
                raise AssertionError("a second undo ran")
            assert (await undo.results_of(h, answer.id))[0]["undone"]
        client.portal.call(scenario)
    assert rows == {"alice": []} and undone == [("alice", "milk", "Added the note milk.")]
