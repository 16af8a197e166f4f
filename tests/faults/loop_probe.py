"""Run by tests/faults/test_sqlite_disk.py in a process of its own (the slow-disk shim is preloaded into it):
appends to a SQLite store while a task measures how late the event loop runs. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from quanda.core import QuandaError, QuandaMessage, QuandaWriter, open_store


async def main(url: str, ready_path: str, go_path: str, appends: int) -> None:
    store = await open_store(url)
    msg = await QuandaMessage.create(store, role="assistant")
    writer = QuandaWriter(msg)
    await writer.chunk("before ")
    with open(ready_path, "w") as f:  # the test may now make the disk slow, then create go_path
        f.write("ready")
    while True:
        try:
            open(go_path).close()
            break
        except FileNotFoundError:
            await asyncio.sleep(0.01)  # waiting on another process's file: there is no event to wait on
    lateness: list[float] = []
    running = True

    async def tick() -> None:  # how late the loop runs a 5 ms timer
        while running:
            due = time.monotonic() + 0.005
            await asyncio.sleep(0.005)
            lateness.append(time.monotonic() - due)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    start = time.monotonic()
    outcomes: list = []
    for i in range(appends):  # one after the other, as a writer awaiting each token does
        try:
            outcomes.append(await writer.chunk(f"{i} "))
        except QuandaError as exc:
            outcomes.append(exc)
    took = time.monotonic() - start
    reads = time.monotonic()
    try:
        await store.get_message(msg.id)
        read_s = time.monotonic() - reads
    except QuandaError:
        read_s = None
    running = False
    await ticker
    await store.close()
    print(json.dumps({"took_s": took, "max_late_s": max(lateness), "ticks": len(lateness), "read_s": read_s,
                      "outcomes": [o.seq if not isinstance(o, BaseException) else f"{type(o).__name__}: {o}"
                                   for o in outcomes]}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
