"""A misbehaving client, in its own process (so its own CPU use does not slow the test that measures the others):

    python -m tests.reliability.abuser flood URL COOKIE --rate 1000 --seconds 10 [--sockets 1]
        WebSockets sending unknown actions at `rate` frames/s each; counts the answers they get
    python -m tests.reliability.abuser connections URL COOKIE --count 500 --hold 5
        `count` WebSockets opened at once; counts those that stay open and how the others were closed

It prints one JSON line of figures when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import websockets


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/ws"


async def flood(url: str, cookie: str, rate: float, seconds: float, sockets: int = 1) -> dict:
    results = await asyncio.gather(*(flood_one(url, cookie, rate, seconds) for _ in range(sockets)))
    total = {key: sum(r[key] for r in results) for key in ("sent", "answered_during", "answered", "slow_down")}
    return {**total, "seconds": max(r["seconds"] for r in results), "closed": [r["closed"] for r in results],
            "largest_answer": max(r["largest_answer"] for r in results)}


async def flood_one(url: str, cookie: str, rate: float, seconds: float) -> dict:
    answers, closed = [], None
    sent = 0
    async with websockets.connect(ws_url(url), additional_headers={"Cookie": cookie}, max_size=None) as ws:
        async def read() -> None:
            nonlocal closed
            try:
                async for frame in ws:
                    answers.append((time.monotonic(), frame))
            except websockets.ConnectionClosed as exc:
                closed = exc.rcvd.code if exc.rcvd else None
            else:
                closed = ws.close_code

        reader = asyncio.create_task(read())
        start = time.monotonic()
        while (now := time.monotonic()) - start < seconds and closed is None:
            due = start + sent / rate
            if due > now:
                await asyncio.sleep(due - now)  # pacing the flood itself
            try:
                await asyncio.wait_for(ws.send(json.dumps({"action": f"flood-{sent}"})), seconds)
            except (websockets.ConnectionClosed, TimeoutError):
                break
            sent += 1
        ended = time.monotonic()
        window = [f for t, f in answers if t <= ended]
        await asyncio.sleep(1.0)  # what is still answered just after the flood
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    notices = [f for _t, f in answers if 'id="ws-notice"' in f]
    return {"sent": sent, "seconds": ended - start, "answered_during": len(window), "answered": len(answers),
            "slow_down": sum("slow down" in f for f in notices), "closed": closed,
            "largest_answer": max((len(f) for _t, f in answers), default=0)}


async def connections(url: str, cookie: str, count: int, hold: float) -> dict:
    outcomes: Counter = Counter()
    reasons: Counter = Counter()
    opened: list = []

    async def one() -> None:
        try:
            ws = await websockets.connect(ws_url(url), additional_headers={"Cookie": cookie}, open_timeout=30)
        except websockets.InvalidStatus as exc:
            outcomes[f"refused at handshake: {exc.response.status_code}"] += 1
            reasons[exc.response.body.decode(errors="replace")[:200]] += 1
            return
        except Exception as exc:  # noqa: BLE001 - counted by kind
            outcomes[f"refused at handshake: {type(exc).__name__}"] += 1
            return
        try:
            frame = await asyncio.wait_for(ws.recv(), hold)
            reasons[frame[:200]] += 1
            await asyncio.wait_for(ws.wait_closed(), hold)
            outcomes[f"closed {ws.close_code}"] += 1
        except TimeoutError:
            outcomes["open"] += 1
            opened.append(ws)
        except websockets.ConnectionClosed as exc:
            outcomes[f"closed {exc.rcvd.code if exc.rcvd else None}"] += 1

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    took = time.monotonic() - start
    for ws in opened:
        await ws.close()
    return {"outcomes": dict(outcomes), "reasons": dict(reasons), "seconds": took}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["flood", "connections"])
    parser.add_argument("url")
    parser.add_argument("cookie")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--hold", type=float, default=5)
    parser.add_argument("--sockets", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "flood":
        result = asyncio.run(flood(args.url, args.cookie, args.rate, args.seconds, args.sockets))
    else:
        result = asyncio.run(connections(args.url, args.cookie, args.count, args.hold))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
