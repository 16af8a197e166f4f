"""The host API (app/host.py) in-process: an action's schema from its signature, a FastHTML app of the host's own
with Quanda mounted in it, who the user is, exactly-once runs of actions, readable state in the prompt, ambient
events. The browser tests (tests/e2e/test_host_e2e.py) run the example hosts from the installed wheel."""

from __future__ import annotations

import time
from typing import Annotated

import pytest
from fasthtml.common import FastHTML, Li, Main, Ul, fast_app
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from quanda.api import ClientError, Field, Quanda, action
from quanda.chat import conversation
from quanda.chat.prompt import system_prompt
from quanda.commands import (CLAIM_KIND, claimed_result, plan_tool_call, run_answer_commands, run_once,
                             tool_definitions, tool_specs)
from quanda.config import Settings

ORIGIN = "http://127.0.0.1"


def settings(tmp_path, **kw) -> Settings:
    return Settings(db_url=f"sqlite:///{tmp_path / 'q.db'}", ollama_host="http://127.0.0.1:9", **kw)


class Contacts:
    """A host: its own list, two actions, a readable state, a page of its own with the sidebar."""

    def __init__(self, tmp_path, workspace=None, idempotent=False):
        self.rows: dict[str, list[str]] = {}
        self.calls: list[tuple] = []
        self.q = q = Quanda(workspace=workspace, settings=settings(tmp_path), name="contacts", label="Contacts")

        @q.action(idempotent=idempotent)
        async def add_contact(workspace: str, name: str, email: Annotated[str, "their address"] = "",
                              key: str = "") -> str:
            """Add a contact.

            More text that is not the description."""
            self.calls.append((workspace, name, email, key))
            self.rows.setdefault(workspace, []).append(name)
            return f"Added {name}."

        @q.action
        def delete_contact(workspace: str, id: int) -> str:
            """Delete a contact by id."""
            if id > len(self.rows.get(workspace, [])):
                raise ClientError(f"there is no contact {id}")
            return f"Deleted {self.rows[workspace].pop(id - 1)}."

        @q.readable(limit=60)
        def address_book(workspace: str) -> str:
            """The user's contacts"""
            return ", ".join(self.rows.get(workspace, [])) or "(none)"

        self.app = FastHTML(default_hdrs=False)
        q.mount(self.app)

        @self.app.get("/")
        def home():
            return Main(Ul(Li("host page"), id="contacts"), q.sidebar())

        @self.app.get("/own")
        def own():
            return "the host's own route"

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=ORIGIN)


def test_an_actions_schema_comes_from_its_signature_its_type_hints_and_its_docstring(tmp_path):
    host = Contacts(tmp_path)
    tools = {t["function"]["name"]: t["function"] for t in tool_definitions(tool_specs([host.q.plugin()]))}
    assert tools["add_contact"] == {
        "name": "add_contact", "description": "Add a contact.",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 2000},
            "email": {"type": "string", "minLength": 1, "maxLength": 2000, "description": "their address"}}}}
    assert tools["delete_contact"]["parameters"]["properties"] == {"id": {"type": "integer", "minimum": 1}}
    assert tools["delete_contact"]["parameters"]["required"] == ["id"]


def test_an_action_states_its_limits_with_annotated_fields():
    @action
    def rate(score: Annotated[int, Field(int, min_value=0)], note: str | None = None) -> str:
        """Rate."""
        return "ok"
    assert rate.fields["score"].min_value == 0 and rate.fields["score"].required
    assert rate.fields["note"].type is str and not rate.fields["note"].required
    assert rate(3) == "ok"  # still the host's own function


@pytest.mark.parametrize("source, message", [
    ("def f(items: list) -> str: ...", "str, int, float or bool"),
    ("def f(x) -> str: ...", "needs a type hint"),
    ("def f(*names: str) -> str: ...", "ordinary named"),
])
def test_an_action_with_a_parameter_the_model_cannot_fill_is_refused_at_once(source, message):
    scope: dict = {}
    exec(source, scope)
    with pytest.raises(TypeError, match=message):
        action(scope["f"])


def test_a_host_with_its_own_routes_mounts_quanda_and_places_the_sidebar(tmp_path):
    host = Contacts(tmp_path)
    with host.client() as client:
        page = client.get("/").text
        assert "host page" in page and 'ws-connect="/ws"' in page and 'hx-get="/-/quanda/sidebar"' in page
        for asset in ("/static/htmx.min.js", "/static/quanda.js", "/static/plugins/chat/chat.js"):
            assert f'src="{asset}"' in page
            assert client.get(asset).status_code == 200, asset
        assert client.get("/static/plugins/chat/nope.js").status_code == 404
        assert client.get("/own").text == "the host's own route"
        sidebar = client.get("/-/quanda/sidebar", headers={"HX-Request": "true"}).text
        assert 'id="msg-list"' in sidebar and 'id="chat-input"' in sidebar
        listed = {p["name"]: p for p in client.get("/-/plugins").json()}
        assert set(listed) == {"contacts", "chat", "api"}  # the reference app's todo and simulator are not a host's
        assert listed["contacts"]["commands"] == 2 and listed["contacts"]["menu"] is False
        assert client.get("/-/health").json() == {"ok": True}


def test_the_hosts_workspace_function_decides_who_the_user_is(tmp_path):
    host = Contacts(tmp_path, workspace=lambda conn: conn.headers.get("x-user"))
    with host.client() as client:
        assert client.get("/-/quanda/sidebar").status_code == 401
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("ws://127.0.0.1/ws", headers={"Origin": ORIGIN}) as ws:
                ws.receive_text()
                ws.receive_text()
        assert closed.value.code == 1008
        with client.websocket_connect("ws://127.0.0.1/ws", headers={"Origin": ORIGIN, "x-user": "alice"}):
            assert list(client.app.state.hub.owners) == ["alice"]
        client.portal.call(host.q.tell, "alice", "You opened the contacts")
        store = client.app.state.ctx.store
        alice = client.portal.call(conversation.entries, store, "alice")
        bob = client.portal.call(conversation.entries, store, "bob")
        assert [e["text"] for _, e in alice if e["type"] == "event"] == ["You opened the contacts"] and bob == []


def run_call(client, owner: str, key: str, name: str, arguments: dict):
    ctx = client.app.state.ctx

    async def run():
        h = ctx.handle(owner)
        command, plan = await plan_tool_call(h, {"name": name, "arguments": arguments}, tool_specs(ctx.plugins))
        result = await run_once(h, key, "answer-1", command, plan, post_line=False)
        return result, await claimed_result(h, key)
    return client.portal.call(run)


def test_an_action_runs_exactly_once_per_call_with_the_workspace_it_acts_for(tmp_path):
    host = Contacts(tmp_path)
    with host.client() as client:
        first, recorded = run_call(client, "alice", "a:tool:0:0", "add_contact", {"name": "Ada"})
        again, recorded_again = run_call(client, "alice", "a:tool:0:0", "add_contact", {"name": "Ada"})
        assert first.ok and first.text == "Added Ada." and again is None
        assert recorded == recorded_again == first
        assert host.calls == [("alice", "Ada", "", "a:tool:0:0")] and host.rows == {"alice": ["Ada"]}
        refused, _ = run_call(client, "alice", "a:tool:0:1", "delete_contact", {"id": 7})
        assert not refused.ok and refused.text == "delete_contact: there is no contact 7"
        bad, _ = run_call(client, "alice", "a:tool:0:2", "add_contact", {"name": "Ada", "age": 3})
        assert not bad.ok and "takes no age" in bad.text and len(host.calls) == 1


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_crash_between_claim_and_completion_is_reported_and_rerun_only_when_idempotent(tmp_path, idempotent):
    host = Contacts(tmp_path, idempotent=idempotent)
    with host.client() as client:
        store = client.app.state.ctx.store
        lease = client.app.state.ctx.settings.job_lease_s
        claim = {"message_id": "answer-1", "command": {"action": "add_contact", "target": "contacts",
                                                       "args": {"name": "Ada"}},
                 "state": "applying", "effect": True, "ok": False, "result": "", "before": None, "after": None,
                 "ops": [], "facts": [], "line_at": 1, "claimed_at": time.time() - lease - 1, "lease": None,
                 "fence": None}
        client.portal.call(store.insert_record, CLAIM_KIND, "a:tool:0:0", claim)  # its server died here
        result, recorded = run_call(client, "alice", "a:tool:0:0", "add_contact", {"name": "Ada"})
        if idempotent:
            assert result.ok and host.calls == [("alice", "Ada", "", "a:tool:0:0")]
        else:
            assert not result.ok and host.calls == []
            assert result.text.startswith("add_contact was interrupted") and "not run again" in result.text
        assert recorded == result
        assert run_call(client, "alice", "a:tool:0:0", "add_contact", {"name": "Ada"})[0] is None
        assert len(host.calls) == int(idempotent)


def test_readable_state_goes_into_the_prompt_bounded(tmp_path):
    host = Contacts(tmp_path)
    with host.client() as client:
        h = client.app.state.ctx.handle("alice")
        assert "The user's contacts:\n(none)" in client.portal.call(system_prompt, h)
        host.rows["alice"] = [f"person {i}" for i in range(40)]
        prompt = client.portal.call(system_prompt, h)
        assert "person 0, person 1" in prompt and "person 39" not in prompt and "(cut at 60 characters)" in prompt


def test_a_model_without_tools_is_taught_the_actions_as_json_commands_which_run_once_too(tmp_path):
    host = Contacts(tmp_path)
    with host.client() as client:
        h = client.app.state.ctx.handle("alice")
        taught = client.portal.call(system_prompt, h)
        assert '{"action": "add_contact", "target": "contacts", "args": {"name": str, "email": str?}}' in taught
        text = 'Sure.\n```json\n{"action": "add_contact", "target": "contacts", "args": {"name": "Ada"}}\n```'
        first = client.portal.call(run_answer_commands, h, "answer-9", text)
        again = client.portal.call(run_answer_commands, h, "answer-9", text)
        assert [r.text for r in first] == ["Added Ada."] and again == []
        assert host.calls == [("alice", "Ada", "", "answer-9:0")]


def test_quandas_routes_come_before_a_hosts_catch_all(tmp_path, monkeypatch):
    """fast_app() serves any /<path>.<ext> from the working directory: mounted later, Quanda's files must win."""
    monkeypatch.chdir(tmp_path)  # no static/ folder here
    app, _ = fast_app(default_hdrs=False)
    Quanda(settings=settings(tmp_path)).mount(app)
    with TestClient(app, base_url=ORIGIN) as client:
        for asset in ("/static/quanda.js", "/static/plugins/chat/chat.js", "/static/app.css"):
            assert client.get(asset).status_code == 200, asset
