"""Stream simulator: a long-running server-side job streaming progress into a QuandaMessage.

A run writes chunks "Simulated chunk i/N\\n" with estimate "(i/N)" into a role="simulator" message. The
page is only a reader: the run goes on when the tab closes, every tab of the owner follows it, and the
progress bar comes from each chunk's estimate. The run record (kind "sim_run", one per owner) names the
current run and, once it ended, how it ended.
"""

from __future__ import annotations

import asyncio
import logging
import random
from importlib.resources import files

from fasthtml.common import Pre

from quanda.components import ids
from quanda.components.simulator import (SimBar, SimRun, SimStartForm, SimStatus, SimStopForm, SimulatorCard,
                                         progress_of, run_fields, status_text)
from quanda.components.stream import StreamMarker
from quanda.api import (ClientError, Handle, Job, Plugin, QuandaError, QuandaMessage, QuandaToken, QuandaWriter,
                        near)

log = logging.getLogger("quanda.simulator")

ROLE = "simulator"
RUN_KIND = "sim_run"
MAX_CHUNKS = 10_000
MAX_DELAY_MS = 10_000


class SimulatorView:
    """Streams a run into its card: appended text only (never the whole content again), the bar from each
    chunk's estimate "(i/N)", and the status."""

    def __init__(self, message_id: str):
        self.message_id = message_id
        self.appended: list[str] = []
        self.replaced: str | None = None
        self.seq = 0
        self.warning = ""
        self.immutable = False
        self.status_dirty = False
        self.progress: tuple[int, int] | None = None
        self.progress_dirty = False

    def feed(self, token: QuandaToken) -> None:
        self.seq = token.seq
        if token.kind in ("chunk", "override"):
            if token.kind == "chunk":
                self.appended.append(token.text)
            else:
                self.replaced, self.appended = token.text, []
            progress = progress_of(token.estimate)
            if progress is not None:
                self.progress, self.progress_dirty = progress, True
        elif token.kind == "warning":
            self.warning, self.status_dirty = token.text, True
        elif token.kind == "immutable":
            self.immutable, self.status_dirty = True, True

    def flush(self) -> list:
        mid, fragments = self.message_id, []
        text = "".join(self.appended)
        if self.replaced is not None:
            fragments.append(Pre(self.replaced + text, id=ids.sim_content_id(mid), cls="stream-content follow-scroll",
                                 hx_swap_oob="true"))
        elif text:
            fragments.append(Pre(text, hx_swap_oob=f"beforeend:#{ids.sim_content_id(mid)}"))
        if self.progress_dirty and self.progress:
            fragments.append(SimBar(mid, *self.progress, oob=True))
        if self.status_dirty and (self.progress or not self.immutable):
            # without the run's progress (a tab that had every chunk already) the ending is told by the
            # fact `sim.ended` instead
            fragments.append(SimStatus(mid, status_text(self.immutable, self.warning, self.progress), oob=True))
        if self.immutable:
            fragments.append(SimStopForm(None, oob=True))
        if fragments or self.seq:
            fragments.append(StreamMarker(mid, self.seq, oob=True, ended=self.immutable))
        self.appended, self.replaced, self.status_dirty, self.progress_dirty = [], None, False, False
        return fragments


def parse_run_request(data: dict) -> tuple[int, float, float]:
    """(chunks, min delay s, max delay s) from the form, or ClientError saying what is wrong."""
    try:
        chunks = int(str(data.get("chunks", "")).strip())
        low = int(str(data.get("delay_min", "0")).strip() or 0)
        high = int(str(data.get("delay_max", "0")).strip() or 0)
    except ValueError:
        raise ClientError("chunks and delays must be whole numbers") from None
    if not 1 <= chunks <= MAX_CHUNKS:
        raise ClientError(f"chunks must be between 1 and {MAX_CHUNKS:,}")
    if not (0 <= low <= MAX_DELAY_MS and 0 <= high <= MAX_DELAY_MS):
        raise ClientError(f"delays must be between 0 and {MAX_DELAY_MS:,} ms")
    if low > high:
        raise ClientError("the minimum delay must not exceed the maximum")
    return chunks, low / 1000, high / 1000


async def current_run(h: Handle):
    """(message record, run record) of the owner's current run, or (None, None)."""
    run = await h.store.get_record(RUN_KIND, h.owner)
    if run is None:
        return None, None
    try:
        return await h.store.get_message(run["message_id"]), run
    except QuandaError:
        return None, None


async def page(h: Handle):
    return SimulatorCard(*await current_run(h))


async def simulate(h: Handle, message: QuandaMessage, chunks: int, low: float, high: float) -> None:
    writer = QuandaWriter(message)
    done = 0
    try:
        for i in range(1, chunks + 1):
            if high > 0:
                await asyncio.sleep(random.uniform(low, high))
            await writer.chunk(f"Simulated chunk {i}/{chunks}\n", estimate=f"({i}/{chunks})")
            done = i
        await writer.make_immutable()
        await ended(h, message.id, chunks, done, "finished")
        await h.post_event(f"Stream simulator finished: {chunks} chunks.")
    except asyncio.CancelledError:
        await asyncio.shield(stop_writing(h, writer, chunks, done, "stopped"))
        raise
    except QuandaError as exc:
        log.error("simulator run %s failed: %s", message.id, exc)
        await h.post_event(f"Stream simulator failed: {exc}")


async def stop_writing(h: Handle, writer: QuandaWriter, chunks: int, done: int, outcome: str) -> None:
    try:
        await writer.warning(outcome)
        await writer.make_immutable()
    except QuandaError as exc:
        log.warning("could not mark run %s %s: %s", writer.message_id, outcome, exc)
    await ended(h, writer.message_id, chunks, done, outcome)
    await h.post_event(f"Stream simulator {outcome} at chunk {done}/{chunks}.")


async def ended(h: Handle, message_id: str, chunks: int, done: int, outcome: str) -> None:
    run = await h.store.get_record(RUN_KIND, h.owner)
    if run is not None and run.get("message_id") == message_id:
        await h.store.put_record(RUN_KIND, h.owner, {**run, "done": done, "outcome": outcome})
    await h.publish("sim.ended", message_id=message_id, outcome=outcome, done=done, chunks=chunks)


@near(ids.SIM_NOTICE)
async def on_start(h: Handle, data: dict) -> None:
    chunks, low, high = parse_run_request(data)
    previous, _ = await current_run(h)
    if previous is not None and not previous.immutable and await h.job_running(previous.id):
        raise ClientError("a run is already going: stop it first")
    message = await QuandaMessage.create(h.store, role=ROLE)
    await h.own(message.id, ROLE)
    await h.store.put_record(RUN_KIND, h.owner, {"message_id": message.id, "chunks": chunks,
                                                 "delay_min": round(low * 1000), "delay_max": round(high * 1000)})
    await h.start_job(ROLE, message.id, simulate(h, message, chunks, low, high))
    await h.publish("sim.started", message_id=message.id)
    await h.post_event(f"Stream simulator started: {chunks} chunks.")


@near(ids.SIM_NOTICE)
async def on_stop(h: Handle, data: dict) -> None:
    run, _ = await current_run(h)
    if run is None or run.immutable or run.id != data.get("message_id", run.id):
        raise ClientError("no run to stop")
    if not await h.stop_job(run.id):
        raise ClientError("that run is not going any more")


async def show_started(h: Handle, fact: dict):
    # each tab that shows the card then asks to follow the run from the seq its marker holds (quanda.js)
    record, run = await current_run(h)
    if record is None or record.id != fact["message_id"]:
        return None
    # the fields belong to the run: every tab shows the values it runs with
    return [SimRun(record, run, oob=True), SimStopForm(record.id, oob=True),
            SimStartForm(run_fields(run), oob=True)]


async def show_ended(h: Handle, fact: dict):
    mid = fact["message_id"]
    return [SimBar(mid, fact["done"], fact["chunks"], oob=True), SimStatus(mid, fact["outcome"], oob=True),
            SimStopForm(None, oob=True)]


async def recover(h: Handle, job: Job) -> None:
    """A run whose server died can never finish: mark it interrupted."""
    writer = await QuandaWriter.from_id(h.store, job.message_id)
    record = await h.store.get_message(job.message_id)
    if record.immutable:
        return
    done, chunks = progress_of(record.estimate) or (0, 0)
    await stop_writing(h, writer, chunks, done, "interrupted")


plugin = Plugin(
    name="simulator",
    label="Stream simulator",
    order=20,
    page=page,
    ws_handlers={"sim.start": on_start, "sim.stop": on_stop},
    stream_views={ROLE: SimulatorView},
    fact_views={"sim.started": show_started, "sim.ended": show_ended},
    recover={ROLE: recover},
    system_prompt="The stream simulator runs a long job that streams progress; the user starts and stops it.",
    assets=(str(files("quanda.static") / "simulator.js"),),  # the fields kept per tab
)
