"""The conversation's widgets: a question, an answer (its thinking in a collapsible section, its text as
terminal markdown, its warning), an ambient event line. Each draws from the model (app/tui/model.py) when the
frame loop asks it to, and only then."""

from __future__ import annotations

from rich.markup import escape
from textual.containers import Vertical
from textual.widgets import Collapsible, Label, Markdown, Static

from .model import ANSWER, Entry, MessageState

STATUS_TEXT = {"generating": "writing…", "done": "", "final": "", "stopped": "stopped",
               "failed": "failed — ^R retries", "interrupted": "interrupted — ^R retries"}


class MessageMarkdown(Markdown):
    """A message's text as markdown: drawn whole after an override, else appended through Textual's markdown
    stream (which folds appends together while the widget is busy)."""

    def __init__(self, state: MessageState, **kwargs):
        super().__init__(None, open_links=False, **kwargs)
        self.state = state
        self._stream = None

    async def draw(self) -> None:
        redraw, appended = self.state.take()
        if redraw:
            await self.end_stream()
            await self.update(self.state.content)
        elif appended:
            if self._stream is None:
                self._stream = Markdown.get_stream(self)
            await self._stream.write(appended)

    async def end_stream(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.stop()

    async def on_unmount(self) -> None:
        await self.end_stream()


class EntryView(Vertical):
    """One entry of the conversation."""

    def __init__(self, entry: Entry):
        super().__init__(classes=f"entry {entry.type}")
        self.entry = entry

    def message_ids(self) -> list[str]:
        return [m.id for m in (self.entry.message, self.entry.thinking) if m is not None]

    async def draw(self) -> None: ...


class EventView(EntryView):
    def compose(self):
        yield Static(escape(self.entry.text), classes="event-text")


class QuestionView(EntryView):
    def compose(self):
        yield Label("You", classes="who")
        if self.entry.message is not None:
            yield MessageMarkdown(self.entry.message, classes="text")

    async def draw(self) -> None:
        for md in self.query(MessageMarkdown):
            await md.draw()


class AnswerView(EntryView):
    def compose(self):
        yield Label(self.header(), classes="who")
        yield Collapsible(title="Thinking", collapsed=True, classes="thinking")
        if self.entry.message is not None:
            yield MessageMarkdown(self.entry.message, classes="text")
        yield Static("", classes="warning")

    def header(self) -> str:
        status = STATUS_TEXT.get(self.entry.status, self.entry.status)
        model = f" · {self.entry.model}" if self.entry.model else ""
        return f"Assistant{escape(model)}" + (f" · [b]{escape(status)}[/b]" if status else "")

    async def on_mount(self) -> None:
        self.query_one(".thinking", Collapsible).display = False

    async def draw(self) -> None:
        self.query_one(".who", Label).update(self.header())
        thinking = self.query_one(".thinking", Collapsible)
        if self.entry.thinking is not None:
            if not thinking.display:
                thinking.display = True
                await thinking.query_one(Collapsible.Contents).mount(
                    MessageMarkdown(self.entry.thinking, classes="thinking-text"))
            words = len(self.entry.thinking.content.split())
            thinking.title = f"Thinking ({words} words)" if self.entry.thinking.immutable or \
                self.entry.status != "generating" else f"Thinking… ({words} words)"
        for md in self.query(MessageMarkdown):
            await md.draw()
        message = self.entry.message
        warning = self.query_one(".warning", Static)
        text = message.warning if message is not None else ""
        estimate = message.estimate if message is not None and not message.immutable else None
        warning.update(escape(text or (estimate or "")))
        warning.display = bool(text or estimate)

    def toggle_thinking(self) -> bool:
        thinking = self.query_one(".thinking", Collapsible)
        if not thinking.display:
            return False
        thinking.collapsed = not thinking.collapsed
        return True


def view_for(entry: Entry) -> EntryView:
    if entry.type == ANSWER:
        return AnswerView(entry)
    if entry.type == "q":
        return QuestionView(entry)
    return EventView(entry)
