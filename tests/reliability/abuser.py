"""A misbehaving client, in its own process (so its own CPU use does not slow the test that measures the others):

    python -m tests.reliability.abuser flood URL COOKIE --rate 1000 --seconds 10 [--sockets 1]
        WebSockets sending unknown actions at `rate` frames/s each; counts the answers they get
    python -m tests.reliability.abuser connections URL COOKIE --count 500 --hold 5
        `count` WebSockets opened at once; counts those accepted (held open `hold` seconds once every handshake
        was answered, when it prints {"settled": seconds}) and how the others were refused

    python -m tests.reliability.abuser logins URL - --clients 100 --seconds 5 [--name alice]
        `clients` HTTP clients, each from an address of its own (127.0.1.1, 127.0.1.2 …: all loopback), each
        sending wrong logins one after another (with --name, for that user; else for names that do not exist,
        a new one each time); the clients start one after another over RAMP_S (then it prints
        {"event": "attacking"}: every client has a login in flight), and send no new one after `seconds`;
        counts the answers by kind

It prints one JSON line of figures when done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter

import websockets

RAMP_S = 1.0  # logins: the clients start over this long


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/ws"


def say(event: str, **figures: float) -> None:
    """A line the test reads as it comes: where the abuse is at."""
    print(json.dumps({"event": event, **figures}), flush=True)


async def flood(url: str, cookie: str, rate: float, seconds: float, sockets: int = 1) -> dict:
    opened = asyncio.Barrier(sockets + 1)
    flooding = asyncio.gather(*(flood_one(url, cookie, rate, seconds, opened) for _ in range(sockets)))
    await opened.wait()
    say("flooding")
    results = await flooding
    total = {key: sum(r[key] for r in results) for key in ("sent", "answered_during", "answered", "slow_down")}
    return {**total, "seconds": max(r["seconds"] for r in results), "closed": [r["closed"] for r in results],
            "largest_answer": max(r["largest_answer"] for r in results)}


async def flood_one(url: str, cookie: str, rate: float, seconds: float, opened: asyncio.Barrier) -> dict:
    answers, closed = [], None
    sent = 0
    # its close waits behind the frames the server has yet to read: give up on a clean close after 1 s
    async with websockets.connect(ws_url(url), additional_headers={"Cookie": cookie}, max_size=None,
                                  close_timeout=1) as ws:
        await opened.wait()
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

    settled = 0

    async def one() -> None:
        nonlocal settled
        try:
            await answered(ws_url(url))
        finally:
            settled += 1
            if settled == count:  # every handshake answered: the burst is over, what stays open is held
                say("settled", after_s=time.monotonic() - start)

    async def answered(where: str) -> None:
        try:
            ws = await websockets.connect(where, additional_headers={"Cookie": cookie}, open_timeout=30)
        except websockets.InvalidStatus as exc:
            outcomes[f"refused at handshake: {exc.response.status_code}"] += 1
            reasons[exc.response.body.decode(errors="replace")[:200]] += 1
            return
        except Exception as exc:  # noqa: BLE001 - counted by kind
            outcomes[f"refused at handshake: {type(exc).__name__}"] += 1
            return
        with contextlib.suppress(websockets.ConnectionClosed):  # refused: closed already, its notice is read below
            await ws.send(json.dumps({"action": "hello"}))
        try:
            frame = await asyncio.wait_for(ws.recv(), 30)
        except websockets.ConnectionClosed as exc:
            outcomes[f"closed {exc.rcvd.code if exc.rcvd else None} without a word"] += 1
            return
        if "unknown action 'hello'" in frame:  # accepted and served
            outcomes["open"] += 1
            opened.append(ws)
            return
        reasons[frame[:200]] += 1
        try:
            await asyncio.wait_for(ws.wait_closed(), 30)
            outcomes[f"closed {ws.close_code}"] += 1
        except TimeoutError:
            outcomes["told, left open"] += 1

    say("connecting")
    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    took = time.monotonic() - start
    await asyncio.sleep(hold)  # holding what was accepted
    for ws in opened:
        await ws.close()
    return {"outcomes": dict(outcomes), "reasons": dict(reasons), "settled_s": took}


def login_outcome(response) -> str:
    if response.status_code == 429:
        return "busy" if "at once" in response.text else "throttled"
    if response.status_code == 200 and "Wrong user name or password." in response.text:
        return "wrong"
    return f"other {response.status_code}"


async def logins(url: str, clients: int, seconds: float, name: str | None) -> dict:
    import httpx

    outcomes: Counter = Counter()
    opened = asyncio.Barrier(clients + 1)
    guesses = iter(range(10**9))
    began = 0

    async def attacker(k: int) -> None:
        nonlocal began
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{1 + k // 250}.{1 + k % 250}")
        async with httpx.AsyncClient(base_url=url, transport=transport, headers={"Origin": url},
                                     timeout=120) as http:
            await http.get("/login")  # connected
            await opened.wait()
            await asyncio.sleep(k * RAMP_S / clients)  # one after another: a login flood, not one burst
            deadline = time.monotonic() + seconds
            first = True
            while time.monotonic() < deadline:
                who = name or f"nobody-{next(guesses)}"
                request = asyncio.ensure_future(http.post("/login", data={"username": who,
                                                                          "password": "wrong guess"}))
                if first:  # on its way: once every client's first is, the attack is on
                    first = False
                    began += 1
                    if began == clients:
                        say("attacking")
                outcomes[login_outcome(await request)] += 1

    await asyncio.gather(opened.wait(), *(attacker(k) for k in range(clients)))
    return {"outcomes": dict(outcomes)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["flood", "connections", "logins"])
    parser.add_argument("url")
    parser.add_argument("cookie")
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--hold", type=float, default=5)
    parser.add_argument("--sockets", type=int, default=1)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--name")
    args = parser.parse_args()
    if args.mode == "logins":
        result = asyncio.run(logins(args.url, args.clients, args.seconds, args.name))
    elif args.mode == "flood":
        result = asyncio.run(flood(args.url, args.cookie, args.rate, args.seconds, args.sockets))
    else:
        result = asyncio.run(connections(args.url, args.cookie, args.count, args.hold))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
