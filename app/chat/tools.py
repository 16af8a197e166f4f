"""An answer as rounds: the model's text streams into the bubble; when a round ends with native tool calls,
each call runs through the commands' exactly-once pipeline, its ✓/✗ line is written into the same bubble,
the results go back to the model as `tool` messages, and the next round streams on in the same answer.

Rounds. Tools are offered (`offered_tools`: QUANDA_LLM_TOOLS, and in `auto` what the driver knows of the
model) in the first MAX_TOOL_ROUNDS requests; the request after the last round of calls is sent without
tools, so the model has to answer in words. A model whose server refuses tools (`TOOLS_REJECTED`) is asked
again at once without them and with the JSON commands taught in the system prompt; in `auto` that model is
not offered tools again (until the app restarts).

Exactly once. Calls are acted on only after their round's `COMPLETED` (a stopped or failed round runs
nothing). The round is then recorded (kind "tool_round", key `<answer id>:<round>`: its text, thinking and
calls, as checked) before any call runs; each call is claimed under `<answer id>:tool:<round>:<position>`
(`run_once`: claim and effect as one unit; wire ids are not used, they change from one request to the
next). Every call gets exactly one recorded outcome: run, refused (unknown tool, arguments that are not
JSON or do not fit the schema, more than MAX_COMMANDS in the answer), or not run because the answer was
stopped or its server died first.

Stop. A Stop while a round streams closes the stream: nothing of that round runs. A Stop while a round's
calls run lets the call under way finish (its claim and effect are one unit) and records the rest as not
run ("stopped"); no further round is asked.

Retry (`resume`). The recorded rounds are not asked again and their calls never run again: the answer is
rebuilt from the records (text, thinking, and each call's recorded result line), the recorded calls and
results are replayed to the model as its earlier turns, and generation goes on from the first round that
was not recorded. A call recorded with no claim (its server died before it ran) is recorded then as not run.

Over 300 lines in one module: the rounds, the exactly-once runs of their calls, Stop and Retry are one
state machine over the same answer and records; they are read together.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from quanda import approvals, metrics
from quanda.commands import (MAX_COMMANDS, Change, CommandResult, claimed_result, plan_checked_call, result_line,
                          run_once, tool_call_command, tool_definitions, tool_specs)
from quanda.llm import COMPLETED, CUT_REASONS, DELTA, ERROR, REASONING, TOOL_CALL, TOOLS_REJECTED, LLMEvent, LLMUnavailable
from quanda.context import Handle
from quanda.core import ChunkStream, QuandaMessage, QuandaWriter

from . import client_tools, conversation, turns, window
from .meter import Meter
from .tool_text import _clean, _json_text, markdown_line

log = logging.getLogger("quanda.chat.tools")

MAX_TOOL_ROUNDS = 4  # rounds of calls per answer; the request after the last one offers no tools
ROUND_KIND = "tool_round"
STOPPED = "the answer was stopped before this call ran"
INTERRUPTED = "the server stopped before this call ran"
UNFINISHED = "the LLM stream ended without finishing"
REFITS = 2  # times an answer is asked again after the server refused its prompt as longer than its window
RAW_KEPT = 500  # characters of a refused call's arguments kept in its record


class ToolBox:
    """The tools every plugin's commands make, and the models seen refusing them (per app)."""

    def __init__(self, plugins: list) -> None:
        self.specs = tool_specs(plugins)  # ValueError at start when two commands share a tool name
        self.definitions = tool_definitions(self.specs)
        self.refused: set[str] = set()  # models whose server refused tools (QUANDA_LLM_TOOLS=auto)


def toolbox(h: Handle) -> ToolBox:
    return h.ctx.state["chat"].tools


async def offered_tools(h: Handle, model: str, extra: list[dict] = ()) -> list[dict] | None:
    """The tools to send with a request for `model` (the plugins' and `extra`, a client's), or None:
    QUANDA_LLM_TOOLS=off never, on always, auto unless the driver knows the model takes none (Ollama:
    /api/show lacks the tools capability; an OpenAI-compatible server: it refused them before) or its server
    refused them to this app."""
    box, mode = toolbox(h), h.settings.llm_tools
    definitions = [*box.definitions, *extra]
    if mode == "off" or not definitions:
        return None
    if mode == "auto" and (model in box.refused or await h.ctx.llm.supports_tools(model) is False):
        return None
    return definitions


def round_key(answer_id: str, round_no: int) -> str:
    return f"{answer_id}:{round_no:02d}"


def call_key(answer_id: str, round_no: int, position: int) -> str:
    return f"{answer_id}:tool:{round_no}:{position}"


async def used_tools(h: Handle, answer_id: str) -> bool:
    """Whether the answer made native tool calls (then JSON in its text is not run: no double execution)."""
    return await h.store.get_record(ROUND_KIND, round_key(answer_id, 0)) is not None


@dataclass
class Turn:
    """What one request streamed."""

    text_parts: list[str] = field(default_factory=list)
    thinking_parts: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    completed: bool = False
    error: str | None = None
    error_data: dict = field(default_factory=dict)
    rejected: LLMEvent | None = None  # TOOLS_REJECTED: the request with tools was refused

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def thinking(self) -> str:
        return "".join(self.thinking_parts)


class RoundLoop:
    """Generates one answer: its rounds, in order. The answer's job is the only writer of its message."""

    def __init__(self, h: Handle, answer_id: str, model: str, writer: QuandaWriter,
                 start_thinking: Callable[[], Awaitable[QuandaWriter]], key: str | None = None) -> None:
        self.h, self.answer_id, self.model, self.writer, self.key = h, answer_id, model, writer, key
        self.meter = Meter()
        self.fitted: window.Fitted | None = None
        self.llm = h.ctx.llm
        self.start_thinking = start_thinking
        self.thinking: QuandaWriter | None = None
        self.parts: list[str] = []  # the answer's content as written, in pieces (joined only when needed)
        self.thinking_parts: list[str] = []
        self.chunks = ChunkStream(writer)  # the LLM's text, written as fast as the store commits
        self.thinking_chunks: ChunkStream | None = None
        self.round = 0
        self.replayed: list[dict] = []  # the tool rounds so far, as messages for the model
        self.calls_seen = 0
        self.stopping = False
        self.client_tools: frozenset[str] = frozenset()  # a client's own tools (client_tools.py): never run here
        self.waiting = False  # a call waits for the user's approval: the job ends, a decision resumes it

    # -- Retry ----------------------------------------------------------------------------------------------

    async def resume(self, thinking_id: str | None) -> None:
        """Rebuild the answer from its recorded rounds (Retry): nothing recorded runs again."""
        if thinking_id:
            self.thinking = QuandaWriter(await QuandaMessage.from_id(self.h.store, thinking_id))
        recorded = await self.h.store.list_records(ROUND_KIND, prefix=f"{self.answer_id}:")
        for index, (_key, record) in enumerate(recorded):
            self._add_text(record["text"])
            self._add_thinking(record["thinking"])
            # the last round paused for an approval: its calls go on (the decided one, those after it)
            go_on = index == len(recorded) - 1 and bool(await self.h.store.list_records(
                approvals.KIND, prefix=f"{self.answer_id}:tool:{record['round']}:", limit=1))
            results = []
            for call in record["calls"]:
                result = await self._settle(record["round"], call, run=go_on and not client_tools.is_frontend(call),
                                            why=INTERRUPTED)
                if result is None:
                    self.waiting = True
                    await self._add_waiting(call)
                    break
                await self._add_line(result)
                results.append(result_line(result))
            if self.waiting:
                break
            self.calls_seen += len(record["calls"])
            self.replayed += self.llm.tool_messages(record["calls"], results, record["text"], record["thinking"])
            self.round = record["round"] + 1
        await self.writer.override(self.content)
        if self.thinking is not None:
            await self.thinking.override("".join(self.thinking_parts))

    # -- generation -----------------------------------------------------------------------------------------

    async def run(self) -> tuple[str, str]:
        """("done", "") when the model finished its answer, else ("failed" or "cut", what happened), in the
        answer's turn at the LLM server (`turns`: it may wait for another answer first)."""
        waited = []

        async def waiting() -> None:
            waited.append(True)
            await self.writer.warning(turns.WAITING)

        if self.waiting:
            return "waiting", ""
        async with turns.turn(self.h, waiting):
            if waited:
                await self.writer.warning("")
            return await self._rounds()

    def details(self) -> dict:
        """What the entry keeps of this answer besides its status: the model, the usage, the horizon."""
        out: dict = {"usage": self.meter.summary()}
        if self.model:
            out["model"] = self.model
        return out

    async def _fit(self, tools_offered: bool) -> window.Fitted:
        settings = await conversation.settings_of(self.h.store, self.h.owner)
        fitted = await window.fit(self.h, self.answer_id, self.model, tools_offered=tools_offered,
                                  own_prompt=settings.get("system_prompt") or "", context=settings.get("context"),
                                  extra=self.replayed)
        fitted.temperature = settings.get("temperature")
        if self.key and (self.fitted is None or self.fitted.seen_from != fitted.seen_from):
            await conversation.update_entry(self.h.store, self.key, seen_from=fitted.seen_from,
                                            dropped=fitted.dropped)
            await self.h.publish("chat.horizon", message_id=self.answer_id)
        self.fitted = fitted
        return fitted

    async def _rounds(self) -> tuple[str, str]:
        if not self.model:  # asked while the status could not tell (the server was busy): ask it now
            try:
                self.model = await self.llm.default_model(self.h.settings.default_model)
            except LLMUnavailable as exc:
                return "failed", str(exc)
        client = await client_tools.options(self.h, self.answer_id)
        self.client_tools = client_tools.names(client)
        self.replayed[:0] = client.get("replay", [])
        tools = await offered_tools(self.h, self.model, client.get("tools", []))
        rejection: LLMEvent | None = None
        refits = 0
        while True:
            offered = tools if self.round < MAX_TOOL_ROUNDS else None
            fitted = await self._fit(tools is not None)
            turn = await self._stream(fitted, offered)
            if turn.rejected is not None:  # the server refuses tools: ask again without, teaching JSON commands
                tools, rejection = None, turn.rejected
                continue
            if not turn.completed and turn.error_data.get("reason") == "too_long" and refits < REFITS \
                    and not turn.text_parts and turn.error_data.get("window"):
                refits += 1  # the window it named is known now: fit the prompt to it and ask again
                continue
            if not turn.completed:
                return ("cut" if turn.error_data.get("reason") in CUT_REASONS else "failed"), turn.error or UNFINISHED
            if rejection is not None:  # answered without tools after refusing them: remember it
                self._tools_refused(rejection)
                rejection = None
            if not turn.calls:
                return "done", ""
            if await self._protected(self._act(turn)):
                return "done", ""  # the client runs its own tools: the answer ends with their calls
            if self.waiting:
                return "waiting", ""  # a call waits for the user: the job ends, the decision resumes it
            if offered is None:  # calls in a request that offered no tools were all refused: the answer ends
                return "done", ""
            self.round += 1

    async def _stream(self, fitted: window.Fitted, offered: list[dict] | None) -> Turn:
        turn = Turn()
        options = {"context": fitted.window, "max_tokens": fitted.max_tokens, "temperature": fitted.temperature}
        self.meter.request(fitted.prompt_tokens, fitted.window)
        async with metrics.LLMRequest() as request, \
                aclosing(self.llm.stream_chat(fitted.messages, self.model, offered, options)) as events:
            async for event in events:
                if event.type == DELTA and event.text:
                    request.token()
                    if not turn.text_parts:
                        self.meter.first()
                    turn.text_parts.append(event.text)
                    await self._write(event.text)
                elif event.type == REASONING and event.text:
                    request.token("reasoning")
                    turn.thinking_parts.append(event.text)
                    await self._think(event.text, first=len(turn.thinking_parts) == 1)
                elif event.type == TOOL_CALL:
                    turn.calls.append(dict(event.data or {}))
                elif event.type == TOOLS_REJECTED:
                    turn.rejected = request.result = event
                    break  # leaving closes the run: the driver's own retry (with this prompt) is not sent
                elif event.type == COMPLETED:
                    turn.completed = True
                    request.result = event
                    self.meter.completed((event.data or {}).get("usage"), len(turn.text_parts))
                elif event.type == ERROR:
                    turn.error, turn.error_data = event.text, dict(event.data or {})
                    request.result = event
                    self.meter.completed(None, len(turn.text_parts))
        return turn

    def _tools_refused(self, rejection: LLMEvent) -> None:
        """In `auto`, a model whose server refused tools (saying so) is not offered them again."""
        box = toolbox(self.h)
        detail = str((rejection.data or {}).get("detail", "")).lower()
        if self.h.settings.llm_tools == "auto" and any(w in detail for w in ("tool", "function", "jinja")):
            box.refused.add(self.model)
        log.warning("%s Commands go through JSON in the text for this answer.", rejection.text)

    async def _act(self, turn: Turn) -> bool:
        """Record a finished round, then settle each of its calls in order; True when the round called a
        client's tool (which the client runs: the answer ends)."""
        calls = [self._checked(call) for call in turn.calls]
        record = {"round": self.round, "text": turn.text, "thinking": turn.thinking, "calls": calls}
        if not await self.h.store.insert_record(ROUND_KIND, round_key(self.answer_id, self.round), record):
            log.warning("answer %s: round %d was recorded already", self.answer_id, self.round)
        results = []
        for call in calls:
            if client_tools.is_frontend(call):
                continue
            result = await self._settle(self.round, call, run=not self.stopping, why=STOPPED)
            if result is None:
                self.waiting = True
                await self._add_waiting(call, live=True)
                return False
            await self._add_line(result, live=True)
            results.append(result_line(result))
        if len(results) < len(calls):
            return True
        self.replayed += self.llm.tool_messages(calls, results, turn.text, turn.thinking)
        return False

    def _checked(self, call: dict) -> dict:
        """The call as it is recorded: the driver's data, refused here when the schema or a limit says no
        (a refused call keeps only the start of its arguments, as text)."""
        data = {"position": call.get("position", 0), "id": _clean(call.get("id")) or f"call_{self.calls_seen}",
                "name": _clean(call.get("name"))}
        self.calls_seen += 1
        if data["name"] in self.client_tools and "error" not in call:
            return {**data, "arguments": call["arguments"], "frontend": True}
        _, why = tool_call_command(call, toolbox(self.h).specs)
        if not why and self.calls_seen > MAX_COMMANDS:
            why = f"at most {MAX_COMMANDS} tool calls run per answer"
        if why:
            raw = call.get("raw_arguments")
            if raw is None:
                raw = _json_text(call.get("arguments"))
            return {**data, "raw_arguments": _clean(raw)[:RAW_KEPT], "error": _clean(why)}
        return {**data, "arguments": call["arguments"]}

    async def _settle(self, round_no: int, call: dict, run: bool, why: str) -> CommandResult | None:
        """The call's one outcome: run it (when `run` and not claimed yet) or record it as not run (`why`);
        a call claimed already keeps its recorded result. None: it waits for the user's approval."""
        h, key = self.h, call_key(self.answer_id, round_no, call["position"])
        record = {"tool": call["name"], "call_id": call["id"], "round": round_no, "position": call["position"]}
        if run and "error" not in call:  # checked once, by _checked, when its round was recorded
            command, plan = await plan_checked_call(h, call, toolbox(h).specs)
            spec = toolbox(h).specs.get(call["name"])
            if plan.result.ok and approvals.needs_approval(spec, call["arguments"]) \
                    and await claimed_result(h, key) is None:
                decided = await approvals.decision(h, key)
                if decided is None:
                    await approvals.ask(h, key, self.answer_id, "tool", approval_text(call, plan), command)
                    return None
                if decided != "approved":
                    plan = Change.refused(f"{call['name']} not run: {approvals.REFUSED[decided]}")
        elif "error" in call:
            command, plan = None, Change.refused(f"{call['name'] or 'tool call'} not run: {call['error']}")
        else:
            command, plan = None, Change.refused(f"{call['name']} not run: {why}")
        result = await run_once(h, key, self.answer_id, {**record, "command": command}, plan, post_line=False)
        result = result or await claimed_result(h, key) or plan.result
        await approvals.settle(h, key)
        return result

    async def _protected(self, work: Awaitable[bool]) -> bool:
        """Run a round's calls so that Stop cannot cut one in half: a Stop lets the call under way finish,
        the rest are recorded as not run, then the job stops."""
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.stopping = True
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.error("answer %s: settling tool calls after Stop failed: %r", self.answer_id, task.exception())
            raise

    # -- the answer's text ----------------------------------------------------------------------------------

    @property
    def content(self) -> str:
        return "".join(self.parts)

    @staticmethod
    def _ends_with(parts: list[str], suffix: str) -> bool:
        """Whether the joined parts end with `suffix`, looking at the last pieces only."""
        tail = ""
        for part in reversed(parts):
            tail = part + tail
            if len(tail) >= len(suffix):
                break
        return tail.endswith(suffix)

    async def _write(self, text: str) -> None:
        self.parts.append(text)
        self.chunks.add(text)

    def _add_text(self, text: str) -> None:
        self.parts.append(text)

    async def flush(self) -> None:
        """Until every piece of text and thinking given so far is written."""
        await self.chunks.flush()
        if self.thinking_chunks is not None:
            await self.thinking_chunks.flush()

    async def _add_line(self, result: CommandResult, live: bool = False, mark: str = "") -> None:
        """The result line as its own paragraph, after what the answer says so far."""
        if self._ends_with(self.parts, "\n\n") or not self.parts:
            gap = ""
        else:
            gap = "\n" if self._ends_with(self.parts, "\n") else "\n\n"
        text = gap + markdown_line(mark + result.text if mark else result_line(result)) + "\n\n"
        if live:
            await self._write(text)
        else:
            self.parts.append(text)

    async def _add_waiting(self, call: dict, live: bool = False) -> None:
        """The line saying a call waits for the user (replaced by its result line once decided)."""
        await self._add_line(CommandResult(False, f"{call['name']} waits for your approval"), live=live, mark="… ")

    def _add_thinking(self, text: str) -> str:
        """Append a round's (first) thinking, apart from the rounds' before it; returns what was appended."""
        if text and self.thinking_parts and not self._ends_with(self.thinking_parts, "\n\n"):
            text = "\n\n" + text
        self.thinking_parts.append(text)
        return text

    async def _think(self, text: str, first: bool) -> None:
        if first:
            text = self._add_thinking(text)
        else:
            self.thinking_parts.append(text)
        if self.thinking is None:
            self.thinking = await self.start_thinking()
        if self.thinking_chunks is None:
            self.thinking_chunks = ChunkStream(self.thinking)
        self.thinking_chunks.add(text)


def approval_text(call: dict, plan: Change) -> str:
    """What a call waiting for approval will do, as the card says it."""
    args = ", ".join(f"{k}={v!r}" for k, v in (call.get("arguments") or {}).items())
    return f"{call['name']}({args}) — once approved: {plan.result.text}"
