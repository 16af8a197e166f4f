"""An AG-UI run's events, read from what the store holds: the answer's tokens, its thinking's tokens and its
recorded tool rounds. Nothing is kept in the server's memory, so any server can send a run's events, again,
from any point (`Last-Event-ID`), while the answer is written or after it ended.

Events (encoded with the protocol's own types, `ag-ui-protocol`):
- `RUN_STARTED` first in every response; then, in a response that starts from the beginning, a
  `MESSAGES_SNAPSHOT` of the thread (its last SNAPSHOT_ENTRIES entries: questions as `user` messages,
  answers as `assistant` messages with their tool calls and results, ambient events — what tabs do — as
  `activity` messages of type `quanda.event`) — without the run's own answer, which the events that
  follow carry whole (a snapshot holding text they then send again would show it twice).
- the answer's thinking as `REASONING_START` / `REASONING_MESSAGE_*` / `REASONING_END` (message id: the
  thinking message's id), its text as `TEXT_MESSAGE_*` (message id: the answer's id; it includes the ✓/✗
  lines the tabs show for our tool calls);
- each tool round, once its calls are settled: `TOOL_CALL_START` / `ARGS` / `END` per call (tool call id
  `<answer>.<round>.<position>`), and `TOOL_CALL_RESULT` for ours (run exactly once, before the event was
  sent); a client's own (frontend) tool gets no result: the client runs it;
- the end: `RUN_FINISHED` (outcome `success`, with `pendingToolCallIds` naming the client's calls to answer;
  `cancelled` when the answer was stopped) or `RUN_ERROR` (the warning the tabs show, e.g. the LLM server is
  unreachable; never internal text).

Event ids (`id:` lines) are cursors `<answer seq>.<thinking seq>.<rounds sent>`; a response resumed from one
sends what comes after it and re-opens (same ids) the messages still open, so a client that applies events
by id — the official `@ag-ui/client` does — ends with each message once. Opening and closing events carry
no id: they are re-sent as needed.
"""

from __future__ import annotations

import asyncio
import json
import re
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator

from ag_ui.core import (ActivityMessage, AssistantMessage, FunctionCall, MessagesSnapshotEvent,
                        ReasoningEndEvent, ReasoningMessageContentEvent, ReasoningMessageEndEvent,
                        ReasoningMessageStartEvent, ReasoningStartEvent, RunErrorEvent, RunFinishedEvent,
                        RunStartedEvent, TextMessageContentEvent, TextMessageEndEvent, TextMessageStartEvent,
                        ToolCall, ToolCallArgsEvent, ToolCallEndEvent, ToolCallResultEvent, ToolCallStartEvent,
                        ToolMessage, UserMessage)
from ag_ui.encoder import EventEncoder

from quanda.commands import claimed_result, result_line
from quanda.context import Handle
from quanda.ownership import fact_for
from quanda.core import QuandaError, QuandaMessage, QuandaReader

from . import client_tools, conversation, tools

SNAPSHOT_ENTRIES = 50
KEEPALIVE_S = 15.0
THINKING_DRAIN_S = 2.0  # at the end of a finished answer, how long its (sealed) thinking may take to arrive
STOPPED = "stopped"
_CURSOR = re.compile(r"(\d{1,19})\.(\d{1,19})\.(\d{1,4})")
_ENCODER = EventEncoder()


@dataclass
class Cursor:
    answer: int = 0
    thinking: int = 0
    rounds: int = 0

    def __str__(self) -> str:
        return f"{self.answer}.{self.thinking}.{self.rounds}"

    @classmethod
    def parse(cls, text: str | None) -> "Cursor | None":
        """The cursor of a `Last-Event-ID`; None without one; ValueError when it is not one of ours."""
        if text in (None, ""):
            return None
        found = _CURSOR.fullmatch(text)
        if found is None:
            raise ValueError("Last-Event-ID is not an event id of this run (expected <n>.<n>.<n>)")
        return cls(*(int(g) for g in found.groups()))


def encode(event: Any, event_id: Cursor | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return head + _ENCODER.encode(event)


def tool_call_id(answer_id: str, round_no: int, position: int) -> str:
    return f"{answer_id}.{round_no}.{position}"


def parse_tool_call_id(value: str) -> tuple[str, int, int] | None:
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return parts[0], int(parts[1]), int(parts[2])


async def rounds_of(h: Handle, answer_id: str) -> list[dict]:
    return [record for _key, record in await h.store.list_records(tools.ROUND_KIND, prefix=f"{answer_id}:")]


async def call_result(h: Handle, answer_id: str, round_no: int, call: dict) -> str | None:
    """The ✓/✗ line of one of our calls once it is settled (None before); a client's call has none here."""
    if client_tools.is_frontend(call):
        return None
    found = await claimed_result(h, tools.call_key(answer_id, round_no, call["position"]))
    return result_line(found) if found is not None else None


def call_arguments(call: dict) -> str:
    if "arguments" in call:
        return json.dumps(call["arguments"], ensure_ascii=False)
    return call.get("raw_arguments", "")


async def thread_messages(h: Handle, cid: str, run_answer: str, shown: str | None = None) -> list[Any]:
    """The thread as AG-UI messages (see the module's docstring). The run's own answer (`run_answer`) is as the
    events sent so far make it: left out when they start from its beginning (`shown` None: every part of it
    follows as events), else with `shown` as its text — never with text read later, which the events that
    follow would add a second time (a client appends each delta to the message it has)."""
    found: list[Any] = []
    for key, entry in await conversation.entries(h.store, h.owner, limit=SNAPSHOT_ENTRIES, cid=cid):
        if entry.get("message_id") == run_answer and shown is None:
            continue
        if entry["type"] == "event":
            found.append(ActivityMessage(id=f"event-{key}", activity_type="quanda.event",
                                         content={"text": entry.get("text", "")}))
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
        except QuandaError:
            continue
        if entry["type"] == "q":
            found.append(UserMessage(id=record.id, content=record.content))
            continue
        calls, results = [], []
        for round_record in await rounds_of(h, record.id):
            for call in round_record["calls"]:
                call_id = tool_call_id(record.id, round_record["round"], call["position"])
                calls.append(ToolCall(id=call_id, function=FunctionCall(name=call["name"] or "unknown",
                                                                        arguments=call_arguments(call))))
                line = await call_result(h, record.id, round_record["round"], call)
                if line is None and client_tools.is_frontend(call):
                    line = (await h.store.get_record(client_tools.RESULT_KIND, call_id) or {}).get("content")
                if line is not None:
                    results.append(ToolMessage(id=f"{call_id}.result", tool_call_id=call_id, content=line))
        content = shown if record.id == run_answer else record.content
        found.append(AssistantMessage(id=record.id, content=content or None, tool_calls=calls or None))
        found.extend(results)
    return found


class RunEvents:
    """The SSE text of one response for the run of `answer_id` (see the module's docstring)."""

    def __init__(self, h: Handle, run: dict, after: Cursor | None):
        self.h, self.run, self.answer_id = h, run, run["answer_id"]
        self.resumed = after is not None
        self.cursor = after or Cursor()
        self.text_open = False
        self.reasoning_open = False
        self.thinking_id: str | None = None
        self.thinking_done = False  # its reader ended (the thinking was sealed)
        self.pending: list[str] = []  # the client's calls of the last round sent
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held_thinking: list[Any] = []  # thinking tokens taken while draining (see _drain_thinking)
        self.readers: list[asyncio.Task] = []

    # -- the stream ------------------------------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[str]:
        yield encode(RunStartedEvent(thread_id=self.run["thread_id"], run_id=self.run["run_id"]))
        stop_listening = await self.h.store.listen(self._on_fact)
        try:
            if not self.resumed:
                yield encode(MessagesSnapshotEvent(messages=await thread_messages(self.h, self.run["cid"],
                                                                                  self.answer_id)), self.cursor)
            self._read("a", self.answer_id, self.cursor.answer)
            found = await conversation.find_answer(self.h.store, self.h.owner, self.answer_id)
            if found and found[1].get("thinking_id"):
                self._start_thinking(found[1]["thinking_id"])
            for text in await self._rounds():
                yield text
            async for text in self._follow():
                yield text
        finally:
            stop_listening()
            for task in self.readers:
                task.cancel()
            await asyncio.gather(*self.readers, return_exceptions=True)

    async def _follow(self) -> AsyncIterator[str]:
        while True:
            try:
                lane, item = await asyncio.wait_for(self.queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if lane == "thinking":
                self._start_thinking(item)
            elif lane == "t":
                for text in self._thinking_token(item):
                    yield text
            elif lane == "a" and item is not None:
                async for text in self._answer_token(item):
                    yield text
                if item.kind == "immutable" or (item.kind == "warning" and item.text):
                    return
            elif lane == "error":
                for text in self._close():
                    yield text
                yield encode(RunErrorEvent(message="the database is unavailable; resume this run in a moment",
                                           code="store_unavailable"))
                return

    def _on_fact(self, topic: str, fact: dict) -> None:
        if topic == "chat.thinking" and fact_for(fact, self.h.owner) and fact.get("answer_id") == self.answer_id:
            self.queue.put_nowait(("thinking", fact.get("thinking_id")))

    def _start_thinking(self, thinking_id: object) -> None:
        if isinstance(thinking_id, str) and self.thinking_id is None:
            self.thinking_id = thinking_id
            self._read("t", thinking_id, self.cursor.thinking)

    def _read(self, lane: str, message_id: str, after: int) -> None:
        async def pump() -> None:
            try:
                message = await QuandaMessage.from_id(self.h.store, message_id)
                async with aclosing(QuandaReader(message, after_seq=after).__aiter__()) as tokens:
                    async for token in tokens:
                        self.queue.put_nowait((lane, token))
                self.queue.put_nowait((lane, None))
            except QuandaError:
                self.queue.put_nowait(("error", None))
        self.readers.append(asyncio.create_task(pump(), name=f"agui-{lane}-{message_id}"))

    # -- the lanes -------------------------------------------------------------------------------------------

    def _thinking_token(self, token: Any) -> list[str]:
        if token is None or token.kind == "immutable":
            self.thinking_done = True
        if token is None or token.kind != "chunk" or not token.text:
            return []
        out = [] if self.reasoning_open else self._open_reasoning()
        self.cursor.thinking = token.seq
        out.append(encode(ReasoningMessageContentEvent(message_id=self.thinking_id, delta=token.text), self.cursor))
        return out

    async def _answer_token(self, token: Any) -> AsyncIterator[str]:
        if token.kind == "chunk" and token.text:
            if "✓" in token.text or "✗" in token.text:  # a tool round's result lines: the round is settled
                for text in await self._rounds():
                    yield text
            for text in self._close_reasoning():
                yield text
            if not self.text_open:
                self.text_open = True
                yield encode(TextMessageStartEvent(message_id=self.answer_id, role="assistant"))
            self.cursor.answer = token.seq
            yield encode(TextMessageContentEvent(message_id=self.answer_id, delta=token.text), self.cursor)
            return
        self.cursor.answer = token.seq
        if token.kind == "override":  # a Retry rebuilt the answer: the thread as it is now
            for text in self._close():
                yield text
            yield encode(MessagesSnapshotEvent(messages=await thread_messages(
                self.h, self.run["cid"], self.answer_id, token.text)), self.cursor)
        elif token.kind == "warning" and token.text:
            for text in await self._end():
                yield text
            if token.text == STOPPED:
                yield encode(RunFinishedEvent(thread_id=self.run["thread_id"], run_id=self.run["run_id"],
                                              outcome={"type": "cancelled"}))
            else:
                yield encode(RunErrorEvent(message=token.text, code="answer_failed"))
        elif token.kind == "immutable":
            await self._drain_thinking()
            for text in await self._end():
                yield text
            outcome = {"type": "success", **({"pendingToolCallIds": self.pending} if self.pending else {})}
            yield encode(RunFinishedEvent(thread_id=self.run["thread_id"], run_id=self.run["run_id"],
                                          outcome=outcome))

    async def _drain_thinking(self) -> None:
        """A finished answer's thinking was sealed before it: send the rest of it first."""
        if self.thinking_id is None or self.thinking_done:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + THINKING_DRAIN_S
        held = []
        while loop.time() < deadline:
            try:
                lane, item = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if lane == "t":
                self.held_thinking.append(item)
                if item is None or item.kind == "immutable":
                    break
            else:
                held.append((lane, item))
        for item in held:
            self.queue.put_nowait(item)

    async def _end(self) -> list[str]:
        held, self.held_thinking = self.held_thinking, []
        out = [text for token in held for text in self._thinking_token(token)]
        return out + await self._rounds() + self._close()

    async def _rounds(self) -> list[str]:
        """The events of every tool round settled and not sent yet."""
        out: list[str] = []
        while True:
            record = await self.h.store.get_record(tools.ROUND_KIND, tools.round_key(self.answer_id,
                                                                                     self.cursor.rounds))
            if record is None:
                return out
            lines = [await call_result(self.h, self.answer_id, record["round"], c) for c in record["calls"]]
            if any(line is None and not client_tools.is_frontend(c) for c, line in zip(record["calls"], lines)):
                return out  # a call still running: its round is sent once settled
            out += self._close()
            for call, line in zip(record["calls"], lines):
                call_id = tool_call_id(self.answer_id, record["round"], call["position"])
                out.append(encode(ToolCallStartEvent(tool_call_id=call_id, tool_call_name=call["name"] or "unknown",
                                                     parent_message_id=self.answer_id)))
                out.append(encode(ToolCallArgsEvent(tool_call_id=call_id, delta=call_arguments(call))))
                out.append(encode(ToolCallEndEvent(tool_call_id=call_id)))
                if line is not None:
                    out.append(encode(ToolCallResultEvent(message_id=f"{call_id}.result", tool_call_id=call_id,
                                                          content=line, role="tool")))
            self.pending = [tool_call_id(self.answer_id, record["round"], c["position"])
                            for c in record["calls"] if client_tools.is_frontend(c)]
            self.cursor.rounds += 1
            out[-1] = f"id: {self.cursor}\n" + out[-1]

    def _open_reasoning(self) -> list[str]:
        out = self._close_text()
        self.reasoning_open = True
        return out + [encode(ReasoningStartEvent(message_id=self.thinking_id)),
                      encode(ReasoningMessageStartEvent(message_id=self.thinking_id, role="reasoning"))]

    def _close_reasoning(self) -> list[str]:
        if not self.reasoning_open:
            return []
        self.reasoning_open = False
        return [encode(ReasoningMessageEndEvent(message_id=self.thinking_id)),
                encode(ReasoningEndEvent(message_id=self.thinking_id))]

    def _close_text(self) -> list[str]:
        if not self.text_open:
            return []
        self.text_open = False
        return [encode(TextMessageEndEvent(message_id=self.answer_id))]

    def _close(self) -> list[str]:
        return self._close_reasoning() + self._close_text()
