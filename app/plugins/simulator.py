"""Stream simulator: a long-running server-side job streaming progress into a QuandaMessage.

A run writes chunks "Simulated chunk i/N\\n" with estimate "(i/N)" into a role="simulator" message. The
page is only a reader: the run goes on when the tab closes, and every tab of the session follows it.
"""

from __future__ import annotations

import asyncio
import logging
import random

from app.components.simulator import SimRun, SimStopForm, SimulatorCard, SimulatorView
from app.context import AppContext
from app.plugins import Plugin
from app.quanda import QuandaError, QuandaMessage, QuandaWriter
from app.ws import ClientError, Connection

log = logging.getLogger("quanda.simulator")

ROLE = "simulator"
MAX_CHUNKS = 10_000
MAX_DELAY_MS = 10_000


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


async def current_run(ctx: AppContext, sid: str):
    run = await ctx.store.get_record("sim_run", sid)
    if run is None:
        return None
    try:
        return await ctx.store.get_message(run["message_id"])
    except QuandaError:
        return None


async def page(ctx: AppContext, sid: str):
    return SimulatorCard(await current_run(ctx, sid))


async def simulate(ctx: AppContext, sid: str, message: QuandaMessage, chunks: int, low: float, high: float) -> None:
    writer = QuandaWriter(message)
    done = 0
    try:
        for i in range(1, chunks + 1):
            if high > 0:
                await asyncio.sleep(random.uniform(low, high))
            await writer.chunk(f"Simulated chunk {i}/{chunks}\n", estimate=f"({i}/{chunks})")
            done = i
        await writer.make_immutable()
        await ctx.post_event(sid, f"Stream simulator finished: {chunks} chunks.")
    except asyncio.CancelledError:
        await asyncio.shield(stopped(ctx, sid, writer, done, chunks))
        raise
    except QuandaError as exc:
        log.error("simulator run %s failed: %s", message.id, exc)
        await ctx.post_event(sid, f"Stream simulator failed: {exc}")


async def stopped(ctx: AppContext, sid: str, writer: QuandaWriter, done: int, chunks: int) -> None:
    try:
        await writer.warning("stopped")
        await writer.make_immutable()
    except QuandaError as exc:
        log.warning("could not mark run %s stopped: %s", writer.message_id, exc)
    await ctx.post_event(sid, f"Stream simulator stopped at chunk {done}/{chunks}.")


async def on_start(conn: Connection, data: dict) -> None:
    ctx: AppContext = conn.hub.ctx
    chunks, low, high = parse_run_request(data)
    previous = await current_run(ctx, conn.sid)
    if previous is not None and not previous.immutable and previous.id in ctx.jobs:
        raise ClientError("a run is already going: stop it first")
    message = await QuandaMessage.create(ctx.store, role=ROLE)
    await ctx.own(conn.sid, message.id, ROLE)
    await ctx.store.put_record("sim_run", conn.sid, {"message_id": message.id})
    record = await ctx.store.get_message(message.id)
    # each tab that shows the card asks to follow the run from the seq its marker holds (see quanda.js)
    await ctx.hub.broadcast(conn.sid, SimRun(record, oob=True), SimStopForm(message.id))
    ctx.start_job(message.id, simulate(ctx, conn.sid, message, chunks, low, high))
    await ctx.post_event(conn.sid, f"Stream simulator started: {chunks} chunks.")


async def on_stop(conn: Connection, data: dict) -> None:
    ctx: AppContext = conn.hub.ctx
    run = await current_run(ctx, conn.sid)
    if run is None or run.immutable or run.id != data.get("message_id", run.id):
        raise ClientError("no run to stop")
    job = ctx.jobs.get(run.id)
    if job is None:
        raise ClientError("that run is not going on this server")
    job.cancel()


async def mark_orphans(ctx: AppContext) -> None:
    """Runs left mutable by a server that stopped can never finish: mark them stopped."""
    for record in await ctx.store.select_messages(role=ROLE, immutable=False):
        if record.id not in ctx.jobs:
            try:
                writer = await QuandaWriter.from_id(ctx.store, record.id)
                await writer.warning("interrupted")
                await writer.make_immutable()
            except QuandaError as exc:
                log.warning("could not close orphaned run %s: %s", record.id, exc)


plugin = Plugin(
    name="simulator",
    label="Stream simulator",
    order=20,
    page=page,
    startup=mark_orphans,
    ws_handlers={"sim.start": on_start, "sim.stop": on_stop},
    stream_views={ROLE: SimulatorView},
    system_prompt="The stream simulator runs a long job that streams progress; the user starts and stops it.",
)
