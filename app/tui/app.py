"""The terminal client: a Textual app following one workspace's conversation over the HTTP API.

Concurrency, on the one event loop Textual runs:
- one reader task follows the conversation (`/api/chat/events`), and one reader task per message being
  written (`/api/messages/{id}/events`: the answer, its thinking); a reader ends when its message is sealed,
  or once it holds the seq the message had when its answer stopped, and is cancelled when the message leaves
  the screen or the app quits. Readers change the model (app/tui/model.py) and nothing else;
- one frame task draws: woken by a change, it draws every change since the last frame, then waits out the
  rest of the frame, so the screen is redrawn at most `fps` times a second however fast tokens arrive
  (a frame appends what came since the last one; while a widget is busy, tokens pile up for the next frame);
- a reader whose connection fails shows why and what to do, waits (backoff with jitter) and reconnects with
  `Last-Event-ID`: the seq it holds for a message, the cursor it holds for the conversation. Nothing is shown
  twice (the model drops what it holds already) and nothing is missed (the server resumes after it);
- quitting (^Q, ^C) cancels and awaits every task, then closes the HTTP client: no task and no connection
  is left behind. (The tasks are plain asyncio tasks rather than Textual workers because quitting must
  await them: Textual cancels its workers at exit without waiting for them to end.)
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from typing import Any, Coroutine

from rich.markup import escape
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static, TextArea

from .client import Problem, QuandaClient
from .input import QuestionInput
from .model import Conversation, Entry
from .readers import Follower, Readers
from .widgets import AnswerView, EntryView, view_for

DEFAULT_FPS = 30
TASK_PREFIX = "quanda-tui"


class QuandaTUI(Readers, App):
    TITLE = "Quanda"
    CSS = """
    #status { height: 1; padding: 0 1; background: $panel; }
    #status.down { background: $error 40%; }
    #timeline { height: 1fr; padding: 0 1; }
    .entry { height: auto; margin: 0 0 1 0; }
    .entry .who { color: $text-muted; text-style: bold; }
    .entry.q .who { color: $accent; }
    .entry.event { margin: 0; }
    .event-text { color: $text-muted; text-style: italic; }
    .entry .warning { color: $warning; }
    .entry .approvals { color: $warning; }
    .entry Markdown { margin: 0; padding: 0; }
    .thinking { color: $text-muted; }
    #problem { height: auto; max-height: 4; padding: 0 1; background: $error 30%; display: none; }
    #problem.shown { display: block; }
    #input { height: auto; min-height: 3; max-height: 10; }
    """
    BINDINGS = [
        Binding("ctrl+s", "send", "Send", show=False, priority=True),  # (Enter sends: QuestionInput)
        Binding("ctrl+t", "stop", "Stop", priority=True),
        Binding("ctrl+r", "retry", "Retry", priority=True),
        Binding("ctrl+y", "decide(True)", "Approve", show=False, priority=True),  # (the answer says so)
        Binding("ctrl+x", "decide(False)", "Reject", show=False, priority=True),
        Binding("ctrl+z", "undo", "Undo", show=False, priority=True),
        Binding("ctrl+n", "new_conversation", "New", priority=True),
        Binding("ctrl+o", "toggle_thinking", "Thinking", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, url: str, token: str | None = None, *, history: int = 200, fps: int = DEFAULT_FPS,
                 freeze_gc: bool = False):
        super().__init__()
        self.freeze_gc = freeze_gc
        self.client = QuandaClient(url, token)
        self.history = history
        self.frame_s = 1 / max(1, fps)
        self.conv = Conversation(history, on_change=self._wake_frame)
        self.followers: dict[str, Follower] = {}
        self.problems: dict[str, Problem] = {}  # shown now, by source
        self.problem_log: deque[Problem] = deque(maxlen=50)  # the problems shown lately, cleared or not
        self.problems_shown = 0  # how many ever were
        self.frames = 0  # frames drawn
        self.frame_done = asyncio.Condition()  # notified after every frame (tests and the benchmark wait on it)
        self.connected = False
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._views: dict[int, EntryView] = {}
        self._view_of: dict[str, EntryView] = {}  # message id -> the view drawing it
        self._drawn_structure = -1
        self._network_closed = False  # (not `_closed`: Textual's MessagePump has one, and shutting down reads it)
        self._stopping: asyncio.Task | None = None  # closing the network once signed out

    # -- layout -----------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(f"connecting to {escape(self.client.url)}…", id="status")
        yield VerticalScroll(id="timeline")
        yield Static("", id="problem")
        yield QuestionInput(id="input", soft_wrap=True, show_line_numbers=False, tab_behavior="focus")
        # every key on one line of 80 columns (the command palette, ^P, works without its hint)
        yield Footer(show_command_palette=False)

    async def on_mount(self) -> None:
        self.query_one("#timeline", VerticalScroll).anchor()
        self.query_one("#input", TextArea).focus()
        if self.freeze_gc:  # (the command line's choice: it is the process's only app)
            # what exists now (Textual, Rich, httpx and their modules) lives as long as the process: left out
            # of garbage collection, a collection no longer stalls the loop walking it (the UI loop's p99 lag
            # at 2,000 tokens/s drops by half, see bench/tui_burst.py)
            gc.freeze()
        self.spawn(self.draw_frames(), "frames")
        self.spawn(self.follow_conversation(), "conversation")

    # -- tasks ------------------------------------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        task = asyncio.create_task(work, name=f"{TASK_PREFIX} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.show_problem("internal", Problem(f"the client failed: {task.exception()!r}",
                                                  "please report it; ^Q quits"))

    async def close_network(self) -> None:
        """Cancel every task and wait for them; close the HTTP client (and with it every connection)."""
        if self._network_closed:
            return
        self._network_closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.aclose()

    def stop_network(self, problem: Problem) -> None:
        """Signed out: what is shown stays (with the reason), nothing more is asked of the server."""
        self.client.stopped = problem
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop_network())

    async def _stop_network(self) -> None:
        await self.close_network()
        if not self.is_running:  # quit meanwhile: no screen to draw on
            return
        # the frame drawer was one of the tasks cancelled, maybe before it drew the reason: a last frame
        await self.draw()
        async with self.frame_done:
            self.frame_done.notify_all()

    async def action_quit(self) -> None:
        await self.close_network()
        self.exit()

    async def on_unmount(self) -> None:
        await self.close_network()

    # -- problems ---------------------------------------------------------------------------------------------

    def show_problem(self, source: str, problem: Problem | None) -> None:
        if self._network_closed:
            return
        if problem is None:
            self.problems.pop(source, None)
        else:
            self.problems[source] = problem
            self.problem_log.append(problem)
            self.problems_shown += 1
        shown = self.query_one("#problem", Static)
        if self.problems:
            shown.update("\n".join(f"[b]{escape(p.text)}[/b]" + (f" — {escape(p.hint)}" if p.hint else "")
                                   for p in self.problems.values()))
        shown.set_class(bool(self.problems), "shown")
        self.query_one("#status", Static).set_class("conversation" in self.problems, "down")
        self._wake_frame()  # those waiting for a frame (`until`) see it

    # -- frames -----------------------------------------------------------------------------------------------

    def _wake_frame(self) -> None:
        self._wake.set()

    async def draw_frames(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = loop.time()
            await self.draw()
            self.frames += 1
            async with self.frame_done:
                self.frame_done.notify_all()
            # the rest of the frame: whatever arrives meanwhile joins the next one
            await asyncio.sleep(max(started + self.frame_s - loop.time(), self.frame_s / 4))

    async def draw(self) -> None:
        if self.conv.structure != self._drawn_structure:
            self._drawn_structure = self.conv.structure
            await self.reconcile()
        dirty, self.conv.dirty = self.conv.dirty, set()
        views = {id(view): view for view in map(self._view_of.get, dirty) if view is not None}
        for view in views.values():
            await view.draw()
        if self.conv.changed_status:
            self.conv.changed_status = False
            self.draw_status()

    async def reconcile(self) -> None:
        """Widgets for the entries the model holds, in its order; none for the others."""
        timeline = self.query_one("#timeline", VerticalScroll)
        keep = {entry.key: entry for entry in self.conv.entries}
        for key, view in list(self._views.items()):
            if keep.get(key) is not view.entry:
                del self._views[key]
                await view.remove()
        following: EntryView | None = None
        for entry in reversed(self.conv.entries):  # mount new ones before the next one held
            view = self._views.get(entry.key)
            if view is None:
                view = self._views[entry.key] = view_for(entry)
                if following is None:
                    await timeline.mount(view)
                else:
                    await timeline.mount(view, before=following)
                await view.draw()
            following = view
        self._view_of = {mid: view for view in self._views.values() for mid in view.message_ids()}

    def draw_status(self) -> None:
        status = self.conv.status
        if not status:
            return
        mark = "[green]●[/green]" if status.get("ok") else "[red]●[/red]"
        where = escape(self.client.url)
        self.query_one("#status", Static).update(f"{mark} {escape(status.get('text', ''))}  ·  {where}")

    # -- actions ----------------------------------------------------------------------------------------------

    def on_question_input_send(self, _: QuestionInput.Send) -> None:
        self.action_send()

    def action_send(self) -> None:
        text = self.query_one("#input", TextArea).text.strip()
        if not text:
            self.tell("Type a question first.", severity="warning")
            return
        self.spawn(self.send(text), "send")

    async def send(self, text: str) -> None:
        try:
            await self.client.ask(text)
        except Problem as problem:
            self.tell(str(problem), title="Not sent", severity="error")
            return
        box = self.query_one("#input", TextArea)
        if box.text.strip() == text:
            box.clear()

    def action_stop(self) -> None:
        entry = self.conv.answering()
        if entry is None or entry.message is None:
            self.tell("No answer is being written.", severity="warning")
            return
        self.spawn(self.call(self.client.stop(entry.message.id), "Not stopped"), "stop")

    def action_retry(self) -> None:
        entry = self.conv.retryable()
        if entry is None or entry.message is None:
            self.tell("No stopped or failed answer to retry (final answers stay as they are).",
                        severity="warning")
            return
        self.spawn(self.call(self.client.retry(entry.message.id), "Not retried"), "retry")

    def action_decide(self, approve: bool) -> None:
        """Approve or Reject the action the newest answer waits on."""
        question = self.conv.pending_approval()
        if question is None:
            self.tell("No action waits for your approval.", severity="warning")
            return
        title = "Not approved" if approve else "Not rejected"
        self.spawn(self.call(self.client.decide(question["key"], approve), title), "decide")

    def action_undo(self) -> None:
        """Take back the newest action the assistant ran that can be (the server refuses with the reason)."""
        result = self.conv.undoable()
        if result is None:
            self.tell("No action of the assistant can be undone.", severity="warning")
            return
        self.spawn(self.call(self.client.undo(result["key"]), "Not undone"), "undo")

    def action_new_conversation(self) -> None:
        self.spawn(self.call(self.client.new_conversation(), "No new conversation"), "new")

    async def call(self, request: Coroutine[Any, Any, Any], title: str) -> None:
        try:
            await request
        except Problem as problem:
            self.tell(str(problem), title=title, severity="error")

    def tell(self, message: str, **kwargs: Any) -> None:
        """A notice (and a frame, so that those waiting on one see it)."""
        self.notify(message, **kwargs)
        self._wake_frame()

    def action_toggle_thinking(self) -> None:
        for entry in reversed(self.conv.entries):
            view = self._views.get(entry.key)
            if isinstance(view, AnswerView) and view.toggle_thinking():
                return
        self.tell("No answer has a thinking section.", severity="information")

    # -- for tests and the benchmark -----------------------------------------------------------------------

    async def until(self, predicate, timeout: float, what: str) -> None:
        """Wait until `predicate()` holds after a frame; fail saying `what` was awaited."""
        async def wait() -> None:
            async with self.frame_done:
                await self.frame_done.wait_for(predicate)
        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; problems: "
                                 f"{[str(p) for p in self.problems.values()]}") from None

    def entry_view(self, entry: Entry) -> EntryView | None:
        return self._views.get(entry.key)
