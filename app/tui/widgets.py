"""The conversation's widgets: a question, an answer (its thinking in a collapsible section, its text as
terminal markdown, its warning), an ambient event line. Each draws from the model (app/tui/model.py) when the
frame loop asks it to, and only then."""

from __future__ import annotations

from rich.markup import escape
from textual.containers import Vertical
from textual.widgets import Collapsible, Label, Markdown, Static

from quanda.components.model_name import model_label
from quanda.llm.usage import usage_text

from .model import ANSWER, Entry, MessageState

STATUS_TEXT = {"generating": "writing…", "done": "", "final": "", "stopped": "stopped",
               "failed": "failed — ^R retries", "cut": "cut off — ^R retries",
               "interrupted": "interrupted — ^R retries", "waiting": "waiting for your approval"}
FINAL_TEXT = {"stopped": "stopped", "failed": "failed", "cut": "cut off", "interrupted": "interrupted"}


class MessageMarkdown(Markdown):
    """A message's text as markdown, drawn by the frame loop: whole after an override, else by appending what
    came since the last frame. The frame awaits the append (Textual parses only the open block again and
    mounts the new ones), so the frames are the batching: while a widget is busy, tokens pile up in the model
    and the next frame appends them at once. (Textual's `Markdown.get_stream()` batches the same way, from a
    task of its own; awaiting the append here instead makes a frame's end mean "the widget holds the text",
    which the tests and the benchmark wait on.)"""

    def __init__(self, state: MessageState, **kwargs):
        super().__init__(None, open_links=False, **kwargs)
        self.state = state
        self.ready = False

    async def on_mount(self) -> None:
        """Textual's own mount handler (run before this one) sets the document to the initial text, empty: a
        draw before it would be wiped. So the first draw waits for this, and asks for a frame."""
        self.ready = True
        self.state.redraw = True
        self.app.conv.touch(self.state)

    async def draw(self) -> None:
        if not self.ready:
            return
        redraw, appended = self.state.take()
        if redraw:
            await self.update(self.state.content)
        elif appended:
            await self.append(appended)


class EntryView(Vertical):
    """One entry of the conversation."""

    def __init__(self, entry: Entry):
        super().__init__(classes=f"entry {entry.type}")
        self.entry = entry
        self._shown: dict[int, str] = {}  # what each of its texts shows (to update only what changed)

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
        yield Static("", classes="approvals")
        yield Static("", classes="warning")

    def header(self) -> str:
        status = STATUS_TEXT.get(self.entry.status, self.entry.status)
        if self.entry.status == "final":  # sealed: how it ended is kept in the entry
            status = FINAL_TEXT.get(self.entry.outcome, "")
        model = f" · {model_label(self.entry.model)}" if self.entry.model else ""
        usage = f" · {usage_text(self.entry.usage)}" if self.entry.usage and self.entry.status != "generating" else ""
        return f"Assistant{escape(model)}" + (f" · [b]{escape(status)}[/b]" if status else "") + escape(usage)

    async def on_mount(self) -> None:
        self.query_one(".thinking", Collapsible).display = False

    async def draw(self) -> None:
        # only what changed is updated: each update of a widget costs the screen a layout
        self.set_text(self.query_one(".who", Label), self.header())
        thinking = self.query_one(".thinking", Collapsible)
        if self.entry.thinking is not None:
            if not thinking.display:
                thinking.display = True
                await thinking.query_one(Collapsible.Contents).mount(
                    MessageMarkdown(self.entry.thinking, classes="thinking-text"))
            words = len(self.entry.thinking.content.split())
            title = f"Thinking ({words} words)" if self.entry.thinking.immutable or \
                self.entry.status != "generating" else f"Thinking… ({words} words)"
            if thinking.title != title:
                thinking.title = title
        for md in self.query(MessageMarkdown):
            await md.draw()
        approvals = self.query_one(".approvals", Static)
        lines = [result_line(r) for r in self.entry.results] + [approval_line(q) for q in self.entry.approvals]
        self.set_text(approvals, "\n".join(lines))
        approvals.display = bool(lines)
        message = self.entry.message
        text = message.warning if message is not None else ""
        if not text and self.entry.outcome in FINAL_TEXT and self.entry.status == "final":
            text = self.entry.reason  # the seal cleared the warning; the entry kept why it ended
        if not text and self.entry.status == "final":
            text = self.entry.note  # a finished answer that changed nothing, or said nothing
        estimate = message.estimate if message is not None and not message.immutable else None
        warning = self.query_one(".warning", Static)
        self.set_text(warning, escape(text or (estimate or "")))
        warning.display = bool(text or estimate)

    def set_text(self, widget: Static, text: str) -> None:
        if self._shown.get(id(widget)) != text:
            self._shown[id(widget)] = text
            widget.update(text)

    def toggle_thinking(self) -> bool:
        thinking = self.query_one(".thinking", Collapsible)
        if not thinking.display:
            return False
        thinking.collapsed = not thinking.collapsed
        return True


DECIDED = {"approved": "approved", "rejected": "rejected", "expired": "not approved in time"}


def result_line(result: dict) -> str:
    """An action the assistant ran: what it did, and whether ^Z can take it back (or did)."""
    text = escape(str(result.get("text", "")))
    if result.get("undone"):
        return f"[b]Undone:[/b] {text}"
    return f"[b]Done:[/b] {text}" + (" — ^Z undo" if result.get("undoable") else "")


def approval_line(question: dict) -> str:
    """An action the assistant asked to run: waiting (^Y approves, ^X rejects) or how it was decided."""
    what = escape(str(question.get("what", "")))
    decision = question.get("decision")
    if decision is None:
        return f"[b]Approve?[/b] {what} — ^Y approve · ^X reject"
    return f"[b]{escape(DECIDED.get(decision, str(decision)).capitalize())}:[/b] {what}"


def view_for(entry: Entry) -> EntryView:
    if entry.type == ANSWER:
        return AnswerView(entry)
    if entry.type == "q":
        return QuestionView(entry)
    return EventView(entry)
