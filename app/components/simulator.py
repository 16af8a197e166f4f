"""The stream simulator's card (its stream view is the plugin's, app/plugins/simulator.py)."""

from __future__ import annotations

import re

from fasthtml.common import H3, Article, Button, Div, Form, Hidden, Input, Label, Pre, Progress, Span

from . import ids
from .notice import FieldNotice
from .stream import StreamMarker

_ESTIMATE_RE = re.compile(r"\((\d+)/(\d+)\)")


def progress_of(estimate: str | None) -> tuple[int, int] | None:
    """(i, N) from a run's estimate "(i/N)"."""
    match = _ESTIMATE_RE.fullmatch(estimate or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def status_text(immutable: bool, warning: str, progress: tuple[int, int] | None = None) -> str:
    """The seal clears the warning, so a sealed run that did not reach N/N was stopped."""
    if warning in ("stopped", "interrupted"):
        return warning
    if immutable:
        return "stopped" if progress is None or progress[0] < progress[1] else "finished"
    return warning or "running"


def run_status(record, run: dict | None) -> str:
    """What the card says of a run: its recorded outcome once it ended, else what its message shows."""
    if record.immutable and run and run.get("outcome"):
        return run["outcome"]
    return status_text(record.immutable, record.warning, run_progress(record, run))


def SimBar(message_id: str, done: int, total: int, oob: bool = False):
    pct = int(100 * done / total) if total else 0
    return Progress(value=str(done), max=str(total), id=ids.sim_bar_id(message_id), data_percent=str(pct),
                    hx_swap_oob="true" if oob else None)


def SimStatus(message_id: str, text: str, oob: bool = False):
    return Span(text, id=ids.sim_status_id(message_id), cls=f"sim-status {text}",
                hx_swap_oob="true" if oob else None)


def SimStopForm(running_id: str | None = None, oob: bool = False):
    return Form(Hidden(name="action", value="sim.stop"), Hidden(name="message_id", value=running_id or ""),
                Button("Stop", type="submit", id="sim-stop", cls="secondary", disabled=running_id is None),
                ws_send=True, id="sim-stop-form", hx_swap_oob="true" if oob else None)


DEFAULT_FIELDS = {"chunks": 200, "delay_min": 5, "delay_max": 20}


def run_fields(run: dict | None) -> dict:
    """The fields as a run has them (older run records hold only the chunks), else the defaults."""
    return {name: (run or {}).get(name, default) for name, default in DEFAULT_FIELDS.items()}


def SimStartForm(fields: dict | None = None, oob: bool = False):
    """The run's fields and Start. While a run goes they show its values; idle, the tab puts back what was
    typed in it (static/simulator.js), else they show the last run's."""
    values = {**DEFAULT_FIELDS, **(fields or {})}
    return Form(
        Hidden(name="action", value="sim.start"),
        Label("Chunks", Input(type="number", name="chunks", value=str(values["chunks"]), min="1", max="10000",
                              id="sim-chunks")),
        Label("Delay min (ms)", Input(type="number", name="delay_min", value=str(values["delay_min"]), min="0",
                                      max="10000", id="sim-delay-min")),
        Label("Delay max (ms)", Input(type="number", name="delay_max", value=str(values["delay_max"]), min="0",
                                      max="10000", id="sim-delay-max")),
        Button("Start", type="submit", id="sim-start"),
        ws_send=True, id="sim-start-form", cls="sim-form", data_notice=ids.SIM_NOTICE,
        hx_swap_oob="true" if oob else None,
    )


def SimForm(error: str = "", running_id: str | None = None, fields: dict | None = None):
    return Div(SimStartForm(fields), SimStopForm(running_id),
               FieldNotice(ids.SIM_NOTICE, error, oob=False), id="sim-controls")


def run_progress(record, run: dict | None) -> tuple[int, int] | None:
    """A run's progress: from its estimate while it runs, from its run record once it ended."""
    progress = progress_of(record.estimate)
    if progress is None and run and "chunks" in run:
        progress = (run.get("done", 0), run["chunks"])
    return progress


def SimRun(record=None, run: dict | None = None, oob: bool = False):
    """The current run (or an empty panel): progress bar, status, the scrolling stream-content box."""
    if record is None:
        return Div(Span("No run yet: press Start.", cls="muted"), id="sim-run", hx_swap_oob="true" if oob else None)
    progress = run_progress(record, run)
    done, total = progress or (0, 0)
    return Div(
        Div(SimBar(record.id, done, total),
            SimStatus(record.id, run_status(record, run)),
            cls="sim-progress"),
        Pre(record.content, id=ids.sim_content_id(record.id), cls="stream-content follow-scroll"),
        StreamMarker(record.id, record.last_seq, follow=not record.immutable, ended=record.immutable),
        id="sim-run", data_message=record.id, hx_swap_oob="true" if oob else None,
    )


def SimulatorCard(record=None, run: dict | None = None, error: str = ""):
    running = record.id if record is not None and not record.immutable else None
    return Article(H3("Stream simulator"), SimForm(error, running, run_fields(run)), SimRun(record, run),
                   id=ids.sim_card_id(),
                   cls="card")
