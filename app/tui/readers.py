"""The terminal client's readers, mixed into `QuandaTUI` (app/tui/app.py, whose docstring tells the
concurrency): one task follows the conversation, one task per message being written follows that message;
they change the model and nothing else, and reconnect with `Last-Event-ID` when their connection fails."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

from .client import Problem, backoff
from .model import ANSWER, Entry, MessageState
from .sse import ProtocolError

MAX_FOLLOWED = 16  # messages followed at once (answers being written, and their thinking)


class Follower:
    """The reader task of one message, and where it may stop (`until`: the seq the message had when its
    answer stopped being written)."""

    def __init__(self, state: MessageState):
        self.state = state
        self.winding = False  # its answer is no longer being written
        self.until: int | None = None  # once winding: the seq to read up to
        self.task: asyncio.Task | None = None

    def done(self) -> bool:
        return self.state.immutable or (self.until is not None and self.state.last_seq >= self.until)


class Readers:
    """The reader tasks of the app (which provides `client`, `conv`, `followers`, `history`, `spawn`,
    `show_problem`)."""

    # -- the conversation -------------------------------------------------------------------------------------

    async def follow_conversation(self) -> None:
        def opened() -> None:
            self.connected = True
            self.show_problem("conversation", None)

        def failed(problem: Problem) -> None:
            self.connected = False
            self.show_problem("conversation", problem)

        try:
            async with aclosing(self.client.events(f"/api/chat/events?limit={min(self.history, 200)}",
                                                   lambda: self.conv.cursor, on_problem=failed,
                                                   on_open=opened)) as stream:
                async for event, data in stream:
                    self.on_conversation_event(event.event, data)
                    if event.id:
                        self.conv.cursor = event.id  # applied: a reconnect resumes after it
        except Problem as problem:  # waiting does not cure it
            failed(problem)
            if problem.status == 401:  # signed out (the token revoked): say so and stop
                self.stop_network(problem)

    def on_conversation_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "chat.snapshot":
            self.conv.reset(data)
        elif name == "chat.entry":
            self.conv.add(data)
        elif name == "chat.state":
            self.catch_up(self.conv.set_answer_status(int(data["key"]), data["status"], data))
        elif name == "chat.thinking":
            self.conv.set_thinking(int(data["key"]), data.get("thinking"))
        elif name == "chat.status":
            self.conv.set_status(data)
        elif name == "chat.approval":
            self.conv.set_approval(data)
        elif name == "chat.undo":
            self.conv.set_undone(data.get("key"))
        elif name == "chat.error":
            self.show_problem("conversation", Problem(data.get("error", "the server had a problem"), "reconnecting"))
        self.sync_followers()

    def sync_followers(self) -> None:
        """A reader for every message of an answer being written; none for messages no longer held."""
        held = self.conv.messages()
        for message_id, follower in list(self.followers.items()):
            if held.get(message_id) is not follower.state:  # gone from the screen, or replaced by a snapshot's
                self.end_follower(message_id)
        for entry in self.conv.entries:
            if entry.type == ANSWER and entry.status == "generating":
                for message in (entry.message, entry.thinking):
                    if message is not None and not message.immutable:
                        follower = self.follow(message)
                        if follower is not None:
                            follower.winding, follower.until = False, None  # (again, after a Retry)

    def catch_up(self, entry: Entry | None) -> None:
        """An answer's state changed: read its messages up to where they are now (tokens written before the
        change may still be on their way; the change may have come and gone between two reads, as a Retry
        done at once does), then stop reading unless it is being written."""
        if entry is None or entry.status == "generating":
            return
        for message in (entry.message, entry.thinking):
            if message is None or message.immutable:
                continue
            follower = self.follow(message)
            if follower is not None and not follower.winding:
                follower.winding = True
                self.spawn(self.wind_down(follower), f"wind-down {message.id}")

    def follow(self, message: MessageState) -> Follower | None:
        follower = self.followers.get(message.id)
        if follower is None and len(self.followers) < MAX_FOLLOWED:
            follower = self.followers[message.id] = Follower(message)
            follower.task = self.spawn(self.follow_message(follower), f"message {message.id}")
        return follower

    def end_follower(self, message_id: str) -> None:
        follower = self.followers.pop(message_id, None)
        if follower is not None and follower.task is not None:
            follower.task.cancel()

    async def wind_down(self, follower: Follower) -> None:
        """Where the reader of a message no longer written stops: the seq the message has now."""
        attempt = 0
        while True:
            try:
                last = int((await self.client.message(follower.state.id))["last_seq"])
                break
            except Problem as problem:
                if not problem.retry:
                    last = follower.state.last_seq  # the message is not there to read: keep what we hold
                    break
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        if follower.winding and self.followers.get(follower.state.id) is follower:
            follower.until = last
            if follower.done():
                self.end_follower(follower.state.id)

    async def follow_message(self, follower: Follower) -> None:
        state, source = follower.state, f"message {follower.state.id}"
        attempt = 0
        try:
            while not follower.done():
                try:
                    async with aclosing(self.client.events(
                            f"/api/messages/{state.id}/events", lambda: str(state.last_seq),
                            on_problem=lambda p: self.show_problem(source, p),
                            on_open=lambda: self.show_problem(source, None))) as stream:
                        async for event, data in stream:
                            if state.apply(event.event, data):
                                self.conv.touch(state)
                            if follower.done():
                                return
                except ProtocolError as exc:  # a gap: reconnect from the seq we hold
                    self.show_problem(source, self.client.transport_problem(exc))
                    await asyncio.sleep(backoff(attempt))
                    attempt += 1
        except Problem as problem:
            self.show_problem(source, problem)
            if problem.status == 401:
                self.show_problem("conversation", problem)
                self.stop_network(problem)
        finally:
            if self.followers.get(state.id) is follower:
                del self.followers[state.id]
            self.show_problem(source, None)  # and a frame: those waiting on one see the reader gone
