"""The stream simulator's Card, and the view that streams a run into it."""

from __future__ import annotations

import re

from fasthtml.common import H3, Article, Button, Div, Form, Hidden, Input, Label, Pre, Progress, Span

from app.quanda import QuandaToken

from . import ids
from .stream import StreamMarker

_PROGRESS_RE = re.compile(r"Simulated chunk (\d+)/(\d+)")


def progress_of(text: str) -> tuple[int, int] | None:
    """The last "Simulated chunk i/N" in the text."""
    last = None
    for last in _PROGRESS_RE.finditer(text):
        pass
    return (int(last.group(1)), int(last.group(2))) if last else None


def status_text(immutable: bool, warning: str, progress: tuple[int, int] | None = None) -> str:
    """The seal clears the warning, so a sealed run that did not reach N/N was stopped."""
    if warning in ("stopped", "interrupted"):
        return warning
    if immutable:
        return "stopped" if progress is None or progress[0] < progress[1] else "finished"
    return warning or "running"


def SimBar(message_id: str, done: int, total: int, oob: bool = False):
    pct = int(100 * done / total) if total else 0
    return Progress(value=str(done), max=str(total), id=ids.sim_bar_id(message_id), data_percent=str(pct),
                    hx_swap_oob="true" if oob else None)


def SimStatus(message_id: str, text: str, oob: bool = False):
    return Span(text, id=ids.sim_status_id(message_id), cls=f"sim-status {text}",
                hx_swap_oob="true" if oob else None)


def SimStopForm(running_id: str | None = None):
    return Form(Hidden(name="action", value="sim.stop"), Hidden(name="message_id", value=running_id or ""),
                Button("Stop", type="submit", id="sim-stop", cls="secondary", disabled=running_id is None),
                ws_send=True, id="sim-stop-form")


def SimForm(error: str = "", running_id: str | None = None):
    stop = SimStopForm(running_id)
    start = Form(
        Hidden(name="action", value="sim.start"),
        Label("Chunks", Input(type="number", name="chunks", value="200", min="1", max="10000", id="sim-chunks")),
        Label("Delay min (ms)", Input(type="number", name="delay_min", value="5", min="0", max="10000",
                                      id="sim-delay-min")),
        Label("Delay max (ms)", Input(type="number", name="delay_max", value="20", min="0", max="10000",
                                      id="sim-delay-max")),
        Button("Start", type="submit", id="sim-start"),
        ws_send=True, id="sim-start-form", cls="sim-form",
    )
    return Div(start, stop, Div(error, id="sim-error", cls="error" if error else None), id="sim-controls")


def SimRun(record=None, oob: bool = False):
    """The current run (or an empty panel): progress bar, status, the scrolling stream-content box."""
    if record is None:
        return Div(Span("No run yet: press Start.", cls="muted"), id="sim-run", hx_swap_oob="true" if oob else None)
    progress = progress_of(record.content)
    done, total = progress or (0, 0)
    return Div(
        Div(SimBar(record.id, done, total),
            SimStatus(record.id, status_text(record.immutable, record.warning, progress)),
            cls="sim-progress"),
        Pre(record.content, id=ids.sim_content_id(record.id), cls="stream-content"),
        StreamMarker(record.id, record.last_seq, follow=not record.immutable),
        id="sim-run", data_message=record.id, hx_swap_oob="true" if oob else None,
    )


def SimulatorCard(record=None, error: str = ""):
    running = record.id if record is not None and not record.immutable else None
    return Article(H3("Stream simulator"), SimForm(error, running), SimRun(record), id=ids.sim_card_id(),
                   cls="card")


class SimulatorView:
    """Streams a run into its card: appended text only (never the whole content again), bar and status."""

    def __init__(self, message_id: str):
        self.message_id = message_id
        self.appended: list[str] = []
        self.replaced: str | None = None
        self.seq = 0
        self.warning = ""
        self.immutable = False
        self.status_dirty = False
        self.progress: tuple[int, int] | None = None

    def feed(self, token: QuandaToken) -> None:
        self.seq = token.seq
        if token.kind == "chunk":
            self.appended.append(token.text)
        elif token.kind == "override":
            self.replaced, self.appended = token.text, []
        elif token.kind == "warning":
            self.warning, self.status_dirty = token.text, True
        elif token.kind == "immutable":
            self.immutable, self.status_dirty = True, True

    def flush(self) -> list:
        mid, fragments = self.message_id, []
        text = "".join(self.appended)
        if self.replaced is not None:
            full = self.replaced + text
            fragments.append(Pre(full, id=ids.sim_content_id(mid), cls="stream-content", hx_swap_oob="true"))
            progress = progress_of(full)
        elif text:
            fragments.append(Pre(text, hx_swap_oob=f"beforeend:#{ids.sim_content_id(mid)}"))
            progress = progress_of(text)
        else:
            progress = None
        if progress:
            self.progress = progress
            fragments.append(SimBar(mid, *progress, oob=True))
        if self.status_dirty:
            fragments.append(SimStatus(mid, status_text(self.immutable, self.warning, self.progress), oob=True))
            if self.immutable:
                fragments.append(Button("Stop", type="submit", id="sim-stop", cls="secondary", disabled=True,
                                        hx_swap_oob="true"))
        if fragments or self.seq:
            fragments.append(StreamMarker(mid, self.seq, oob=True))
        self.appended, self.replaced, self.status_dirty = [], None, False
        return fragments
