"""Wrong logins and everyone else's page: a signed-in user's WebSocket round trip, idle and while 100 wrong
logins from 100 addresses are in flight.

    python bench/logins.py [--clients 100] [--seconds 6] [--repeat 2]

An app server (a subprocess: uvicorn running `create_app`, accounts mode, SQLite) with two signed-in users,
three tabs each, each tab asking 15 round trips a second (an unknown action's notice: the cheapest answer a
tab gets). The round trips are measured idle (the baseline, in the same run), then while an attacker (a
process of its own, at the lowest CPU priority: `tests/reliability/abuser.py logins`) keeps `--clients` wrong
logins in flight at once, each client from an address of its own (127.0.1.x), names that do not exist.
Two servers: the app (password checks in worker threads, `app/hashpool.py`), and the app before issue 27
(the same code with its checks run on the event loop, as they were: `Accounts` given no pool).
Target (issue 27): the round-trip p99 during the attack within 2× the idle p99.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import MachineLoad, free_port, pct, stop_process, table, verdict, wait_http  # noqa: E402

PASSWORD = "correct horse battery"
USERS = ("alice", "bob")
MODES = {"threads": "checks in worker threads (the app)", "loop": "checks on the event loop (before issue 27)"}


def serve(port: int, db_url: str, mode: str) -> None:
    import logging

    from bench.common import serve_app
    from quanda import accounts
    from quanda.config import Settings
    from quanda.server import create_app

    logging.basicConfig(level=logging.WARNING)
    if mode == "loop":  # the app before issue 27: every password check on the event loop
        original = accounts.Accounts.__init__
        accounts.Accounts.__init__ = lambda self, store, pool=None: original(self, store, None)  # type: ignore
    settings = Settings(db_url=db_url, port=port, secret="b" * 40, auth="accounts")
    serve_app(create_app(settings, entry_point_group=None), port, settings=settings)


async def add_users(db_url: str) -> None:
    from quanda.accounts import Accounts
    from quanda.core import open_store

    async with await open_store(db_url) as store:
        for name in USERS:
            await Accounts(store).add(name, PASSWORD)


async def sign_in(url: str, name: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=url, headers={"Origin": url}) as http:
        response = await http.post("/login", data={"username": name, "password": PASSWORD})
        assert response.status_code == 303, response.text[:200]
        return "; ".join(f"{k}={v}" for k, v in http.cookies.items())


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


async def measure(mode: str, args: argparse.Namespace, workdir: Path) -> list[list[str]]:
    from tests.reliability.test_protocol_abuse import Abuse, Others

    db_url = f"sqlite:///{workdir / f'{mode}.db'}"
    await add_users(db_url)
    port = free_port()
    log = workdir / f"server-{mode}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), db_url, mode], cwd=workdir,
                                stdout=out, stderr=subprocess.STDOUT)
    rows = []
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_http(url + "/-/health", proc, log)
        server = SimpleNamespace(url=url)
        cookies = [await sign_in(url, name) for name in USERS]
        async with Others(server, cookies, tabs=3, rate=15.0) as tabs:
            await tabs.measure(1.0)  # warm up
            for _ in range(args.repeat):
                idle = await tabs.measure(args.seconds)
                attack = Abuse("logins", server, "-", "--clients", str(args.clients), "--seconds", str(args.seconds))
                started = time.monotonic()
                result, during = await asyncio.gather(attack.run(),
                                                      attack.when("attacking", tabs.measure(args.seconds)))
                checked = result["outcomes"].get("wrong", 0) / (time.monotonic() - started)
                rows.append([MODES[mode], ms(pct(idle, 50)), ms(pct(idle, 99)), ms(pct(during, 50)),
                             ms(pct(during, 99)), ms(max(during)), f"{len(during)}", f"{checked:.1f}",
                             f"{pct(during, 99) / pct(idle, 99):.1f}×"])
    finally:
        stop_process(proc)
    return rows


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        load = MachineLoad(()).start()
        rows = []
        for mode in ("threads", "loop"):
            rows += await measure(mode, args, Path(tmp))
        load.stop()
    print(f"\nRound trips of a signed-in user's tabs (2 users × 3 tabs × 15/s), idle vs {args.clients} wrong "
          f"logins in flight ({args.seconds:g} s each, {args.repeat} repeats); ms")
    print(table(["server", "idle p50", "idle p99", "attack p50", "attack p99", "attack max", "round trips",
                 "wrong logins/s", "p99 ÷ idle"], rows))
    print(f"\nMachine: {load.describe()}")
    ours = [row for row in rows if row[0] == MODES["threads"]]
    passed = all(float(row[4]) <= 2 * float(row[2]) for row in ours)
    print(verdict(passed, "the app: round-trip p99 during the attack within 2× the idle p99"))
    return 0 if passed else 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--repeat", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        sys.exit(asyncio.run(main(parse_args())))
