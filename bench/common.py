"""What the WebSocket benchmarks share: the seed-style baseline that resends a whole message on every token,
serving the app under test, and printing tables."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from app.ws import ClientError, Connection

FullResend = Callable[[Connection, str, int], Awaitable[None]]


def follow_full_handler(role: str, full_resend: FullResend):
    """A ws action `{"action": ..., "streams": {id: seq}}` that streams each owned message of `role` through
    `full_resend` (one frame per token, no coalescing), outside the hub's followers."""
    tasks: dict[tuple[int, str], asyncio.Task] = {}

    async def on_follow_full(conn: Connection, data: dict) -> None:
        streams = data.get("streams")
        if not isinstance(streams, dict):
            raise ClientError("follow_full needs {'streams': {message_id: seq}}")
        for message_id, seq in streams.items():
            owner = await conn.hub.store.get_record("owner", message_id)
            if owner is None or owner.get("sid") != conn.sid or owner.get("role") != role:
                raise ClientError(f"no {role} stream {message_id!r} in this session")
            key = (id(conn), message_id)
            old = tasks.pop(key, None)
            if old is not None:
                old.cancel()
            task = tasks[key] = asyncio.create_task(full_resend(conn, message_id, int(seq)))
            task.add_done_callback(lambda t, k=key: tasks.get(k) is t and tasks.pop(k))

    return on_follow_full


def serve_app(the_app, port: int, profile: str | None = None) -> None:
    """Run the app under uvicorn on loopback; with `profile`, write cProfile stats there on SIGTERM."""
    import uvicorn

    if not profile:
        uvicorn.run(the_app, host="127.0.0.1", port=port, log_level="warning")
        return
    import cProfile
    import signal

    profiler = cProfile.Profile()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    profiler.enable()
    try:
        uvicorn.run(the_app, host="127.0.0.1", port=port, log_level="warning")
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([row(header, widths), sep, *(row(r, widths) for r in rows)])
