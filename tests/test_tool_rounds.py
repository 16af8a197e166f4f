"""The round loop of an answer with native tool calls, in-process on every store backend, against the scripted
LLM server: when tools are offered, Stop while a call runs, Retry after a crash, limits, hostile arguments,
thinking across rounds, JSON in the text ignored once native calls were made."""

import asyncio
import html
import json
import re

import pytest

from quanda.commands import CommandResult, CommandSpec, Change, tool_definitions, tool_specs
from quanda.config import Settings
from quanda.context import AppContext
from quanda.jobs import Jobs
from quanda.llm import OllamaDriver, OpenAIDriver
from quanda.api import Plugin
from quanda.plugin import load_plugins
from quanda.chat import ChatState, answers, conversation
from quanda.chat.tools import MAX_TOOL_ROUNDS, ROUND_KIND, markdown_line, offered_tools, round_key
from quanda.plugins.todo import todos
from quanda.render import render_markdown
from tests.llm_server import Chunk, LLMTestServer, Reply, Rounds, ToolCall

MODEL = "quanda-test"
MILK = {"name": "buy milk"}
ADDED = "✓ Added the todo 'buy milk' (id 1)."
TIMEOUT = 10


class Slow:
    """A plugin whose one command waits for the test to let it finish."""

    def __init__(self) -> None:
        self.started, self.release, self.runs = asyncio.Event(), asyncio.Event(), 0

    async def run(self, h, args) -> Change:
        self.started.set()
        await self.release.wait()
        self.runs += 1
        return Change(CommandResult(True, "Waited."))

    def plugin(self) -> Plugin:
        return Plugin(name="slow", label="Slow", commands=[CommandSpec("slow", "wait", {}, run=self.run,
                                                                       description="Wait.")])


@pytest.fixture
async def srv():
    async with LLMTestServer() as server:
        yield server


@pytest.fixture(params=["ollama", "openai"])
def wire(request):
    return request.param


@pytest.fixture
async def make_handle(store, srv, wire):
    """A Handle on an app context over `store` and the scripted LLM server (built once per test)."""
    contexts = []

    def make(settings: Settings | None = None, extra=()):
        ctx = AppContext(settings or Settings(), store, load_plugins(entry_point_group=None, extra=extra))
        ctx.llm = OllamaDriver(srv.url) if wire == "ollama" else OpenAIDriver(srv.openai_url)
        ctx.jobs = Jobs(store, 10.0, {})
        ctx.state["chat"] = ChatState(ctx)
        contexts.append(ctx)
        return ctx.handle("owner-1")

    yield make
    for ctx in contexts:
        await ctx.jobs.close()
        await ctx.llm.aclose()


async def answer(h, resume_of: str | None = None) -> tuple[str, asyncio.Task]:
    """Start an answer (or a Retry of one); returns its id and its job's task."""
    if resume_of is None:
        answer_id = await answers.start_answer(h, MODEL)
    else:
        await answers.retry(h, resume_of)
        answer_id = resume_of
    return answer_id, h.ctx.jobs.tasks[answer_id]


async def finished(task: asyncio.Task) -> None:
    try:
        await asyncio.wait_for(asyncio.shield(task), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"the answer's job did not end within {TIMEOUT} s") from None


async def content(h, message_id: str):
    return await h.store.get_message(message_id)


async def entry(h, answer_id: str) -> dict:
    return (await conversation.find_answer(h.store, h.owner, answer_id))[1]


def tool_results(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "tool"]


# -- which requests carry tools --------------------------------------------------------------------------------

@pytest.mark.parametrize("wire", ["ollama"])
@pytest.mark.parametrize("mode, capabilities, offered", [
    ("auto", ["completion", "tools"], True),
    ("auto", ["completion"], False),
    ("auto", None, True),  # an Ollama too old to say: tools are tried
    ("on", ["completion"], True),
    ("off", ["completion", "tools"], False),
])
async def test_when_tools_are_offered_to_an_ollama_model(make_handle, srv, mode, capabilities, offered):
    srv.capabilities[MODEL] = capabilities
    h = make_handle(Settings(llm_tools=mode))
    assert (await offered_tools(h, MODEL) is not None) is offered


@pytest.mark.parametrize("wire", ["openai"])
@pytest.mark.parametrize("refusal, remembered", [("tools param requires --jinja flag", True),
                                                 ("the conversation is too long for the context", False)])
async def test_an_openai_compatible_model_gets_tools_until_its_server_refuses_them(make_handle, srv, refusal,
                                                                                     remembered):
    h = make_handle()
    assert await offered_tools(h, MODEL) is not None
    srv.reject_tools, srv.reject_tools_message = 400, refusal
    srv.script = Reply(chunks=["Plain."])
    answer_id, job = await answer(h)
    await finished(job)
    assert (await content(h, answer_id)).content == "Plain."
    assert [bool(r.json.get("tools")) for r in srv.chat_requests] == [True, False]
    assert (await offered_tools(h, MODEL) is None) is remembered


def test_tools_are_made_from_every_plugins_command_specs():
    slow = Slow().plugin()
    specs = tool_specs(load_plugins(entry_point_group=None, extra=[slow]))
    assert sorted(specs) == ["slow_wait", "todo_delete", "todo_insert", "todo_list", "todo_toggle", "todo_update"]
    delete = next(t for t in tool_definitions(specs) if t["function"]["name"] == "todo_delete")["function"]
    assert delete["description"] == "Delete a todo."
    assert delete["parameters"]["properties"] == {"id": {"type": "integer", "minimum": 1}}
    assert delete["parameters"]["required"] == ["id"]
    clash = Plugin(name="clash", label="Clash", commands=[CommandSpec("todo", "insert", {}, run=Slow().run)])
    with pytest.raises(ValueError, match="plugin 'clash': two commands make the tool name 'todo_insert'"):
        tool_specs(load_plugins(entry_point_group=None, extra=[clash]))
    spaced = Plugin(name="spaced", label="Spaced", commands=[CommandSpec("todo", "add item", {}, run=Slow().run)])
    with pytest.raises(ValueError, match="plugin 'spaced': command add item todo: tool name 'todo_add item'"):
        tool_specs(load_plugins(entry_point_group=None, extra=[spaced]))


def test_result_lines_are_literal_markdown():
    for text in ["✓ Added the todo '*not bold* _nor_ `code` [a](javascript:x) <b> &amp; ~~s~~ a\\b x_y' (id 1).",
                 "✗ todo_insert not run: (201 > 200 characters) & <http://example.org>", "✓ two\nlines"]:
        shown = html.unescape(re.sub(r"<[^>]+>", "", render_markdown(markdown_line(text)))).strip()
        assert shown == " ".join(text.split())


# -- Stop, Retry, crash ----------------------------------------------------------------------------------------

async def test_stop_while_a_call_runs_finishes_it_runs_no_other_and_retry_runs_nothing_again(make_handle, srv):
    slow = Slow()
    h = make_handle(extra=[slow.plugin()])
    srv.script = [Reply(chunks=["Waiting. ", Chunk(tool_calls=[ToolCall("slow_wait"), ToolCall("todo_insert", MILK)])]),
                  Reply(chunks=["Finished."])]
    answer_id, job = await answer(h)
    await asyncio.wait_for(slow.started.wait(), TIMEOUT)
    assert await h.stop_job(answer_id)
    slow.release.set()  # the call under way finishes after Stop...
    with pytest.raises(asyncio.CancelledError):
        await finished(job)
    stopped = await content(h, answer_id)
    not_run = "✗ todo_insert not run: the answer was stopped before this call ran"
    assert stopped.content == f"Waiting. \n\n✓ Waited.\n\n{not_run}\n\n"  # ...and the next one does not run
    assert stopped.warning == "stopped" and slow.runs == 1 and await todos(h) == []
    assert len(srv.chat_requests) == 1  # no further round
    answer_id, job = await answer(h, resume_of=answer_id)
    await finished(job)
    final = await content(h, answer_id)
    assert final.immutable and final.content == f"Waiting. \n\n✓ Waited.\n\n{not_run}\n\nFinished."
    assert slow.runs == 1 and await todos(h) == []  # Retry ran nothing again
    assert len(srv.chat_requests) == 2 and tool_results(srv.chat_requests[-1]) == ["✓ Waited.", not_run]


async def test_retry_after_a_crash_between_recording_a_round_and_running_its_calls(make_handle, srv):
    h = make_handle()
    srv.script = Reply(chunks=["Adding. "], end="error")
    answer_id, job = await answer(h)
    await finished(job)
    # what a server killed after recording the round, before its call ran, leaves behind
    call = {"position": 0, "id": "call_0", "name": "todo_insert", "arguments": MILK}
    await h.store.insert_record(ROUND_KIND, round_key(answer_id, 0),
                                {"round": 0, "text": "Adding. ", "thinking": "", "calls": [call]})
    srv.script = Reply(chunks=["Let me try again."])
    answer_id, job = await answer(h, resume_of=answer_id)
    await finished(job)
    not_run = "✗ todo_insert not run: the server stopped before this call ran"
    assert (await content(h, answer_id)).content == f"Adding. \n\n{not_run}\n\nLet me try again."
    assert await todos(h) == []
    claim = await h.store.get_record("command", f"{answer_id}:tool:0:0")
    assert claim["ok"] is False and claim["result"] == not_run[2:]
    assert tool_results(srv.chat_requests[-1]) == [not_run]


# -- limits and hostile calls ----------------------------------------------------------------------------------

async def test_the_last_round_offers_no_tools(make_handle, srv):
    h = make_handle()
    srv.script = Reply(chunks=["Again. ", Chunk(tool_calls=[ToolCall("todo_insert", {"name": "again"})])])
    answer_id, job = await answer(h)
    await finished(job)
    requests = srv.chat_requests
    assert len(requests) == MAX_TOOL_ROUNDS + 1 and "tools" not in requests[-1].json
    assert all(r.json.get("tools") for r in requests[:-1])
    assert [t["name"] for t in await todos(h)] == ["again"] * MAX_TOOL_ROUNDS
    final = await content(h, answer_id)
    assert final.immutable and final.content.count("✓ Added") == MAX_TOOL_ROUNDS
    assert final.content.endswith("✗ todo_insert not run: unknown tool 'todo_insert': no tools were offered\n\n")


async def test_at_most_twenty_calls_run_per_answer(make_handle, srv):
    h = make_handle()
    calls = [ToolCall("todo_insert", {"name": f"t{i}"}) for i in range(21)]
    srv.script = Rounds(Reply(chunks=[Chunk(tool_calls=calls)]), Reply(chunks=["Many."]))
    answer_id, job = await answer(h)
    await finished(job)
    assert len(await todos(h)) == 20
    assert tool_results(srv.chat_requests[-1])[-1] == (
        "✗ todo_insert not run: at most 20 tool calls run per answer")


async def test_arguments_with_a_lone_surrogate_are_refused(make_handle, srv):
    h = make_handle()
    srv.script = Rounds(Reply(chunks=[Chunk(tool_calls=[ToolCall("todo_insert", '{"name": "bad \\ud800"}')])]),
                        Reply(chunks=["Sorry."]))
    answer_id, job = await answer(h)
    await finished(job)
    final = await content(h, answer_id)
    assert final.immutable and "not valid Unicode" in final.content and await todos(h) == []


# -- thinking, and JSON in the text ----------------------------------------------------------------------------

async def test_thinking_goes_on_across_rounds_and_back_to_the_model(make_handle, srv, wire):
    h = make_handle()
    srv.script = Rounds(Reply(chunks=[Chunk(thinking="Plan A."), Chunk(tool_calls=[ToolCall("todo_list")])]),
                        Reply(chunks=[Chunk(thinking="Plan B."), "Nothing to do."]))
    answer_id, job = await answer(h)
    await finished(job)
    thinking = await content(h, (await entry(h, answer_id))["thinking_id"])
    assert thinking.immutable and thinking.content == "Plan A.\n\nPlan B."
    assert (await content(h, answer_id)).content == "✓ Listed the todos: no todos\n\nNothing to do."
    if wire == "ollama":  # Ollama takes the thinking back with the calls
        assistant = next(m for m in srv.chat_requests[-1].json["messages"] if m.get("tool_calls"))
        assert assistant["thinking"] == "Plan A."


async def test_json_in_the_text_is_not_run_when_the_answer_made_native_calls(make_handle, srv):
    h = make_handle()
    text = 'Adding: {"action": "insert", "target": "todo", "args": {"name": "from the text"}} '
    srv.script = Rounds(Reply(chunks=[text, Chunk(tool_calls=[ToolCall("todo_insert", {"name": "native"})])]),
                        Reply(chunks=['Also {"action": "insert", "target": "todo", "args": {"name": "later"}}']))
    answer_id, job = await answer(h)
    await finished(job)  # the job ends after the answer's JSON commands would have run
    assert [t["name"] for t in await todos(h)] == ["native"]
    assert (await entry(h, answer_id))["commands"] == "done"


async def test_json_in_the_text_runs_when_tools_were_offered_but_not_called(make_handle, srv):
    h = make_handle()
    srv.script = Reply(chunks=[json.dumps({"action": "insert", "target": "todo", "args": MILK})])
    answer_id, job = await answer(h)
    await finished(job)
    assert srv.chat_requests[0].json.get("tools")
    assert [t["name"] for t in await todos(h)] == ["buy milk"]
