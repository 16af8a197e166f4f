"""`python main.py --workers 2`, run as docs/several-servers.md's "Several processes on one machine" block says: two server
processes on one port, peers through the store — a tab on each sees the other's change live, a scrape of either
counts both — and all of them stop cleanly on SIGTERM or SIGINT."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets

from tests.servers import ROOT, free_port

TIMEOUT = 30
PAGE = ROOT / "docs" / "several-servers.md"


def readme_command() -> list[str]:
    section = PAGE.read_text().split("## Several processes on one machine", 1)[1]
    words = re.search(r"```bash\n(.*?)```", section, re.S).group(1).split()
    assert words[:2] == ["python", "main.py"], words
    return [sys.executable, str(ROOT / "main.py"), *words[2:]]


class Workers:
    def __init__(self, workdir: Path, count: int = 2):  # the README's command starts 2
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        env = {**os.environ, "QUANDA_PORT": str(self.port), "PYTHONPATH": str(ROOT),
               "QUANDA_DB_URL": f"sqlite:///{workdir / 'q.db'}"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(readme_command(), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + TIMEOUT
        while self.listening() < count or not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the workers did not start:\n{self.log()}")
            time.sleep(0.05)  # waiting for processes to listen: no event to wait on

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def listening(self) -> int:
        """Sockets listening on the port (each worker's; the supervisor's holds the port without listening)."""
        return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                   if int(line.split()[1].split(":")[1], 16) == self.port and line.split()[3] == "0A")

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/-/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def workers(self) -> list[int]:
        """The supervisor's worker processes (not multiprocessing's resource tracker)."""
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def serving(self, client_port: int) -> int | None:
        """Which worker holds the server's end of the connection from `client_port`."""
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
            if int(local, 16) == self.port and int(remote, 16) == client_port:
                inodes.add(fields[9])
        for pid in self.workers():
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                try:
                    if re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd)) and os.readlink(fd)[8:-1] in inodes:
                        return pid
                except OSError:
                    continue
        return None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        return self.proc.wait(TIMEOUT)


@pytest.fixture
def workers(tmp_path):
    running = Workers(tmp_path)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


async def tab_on_each_worker(running: Workers) -> dict[int, websockets.ClientConnection]:
    """Tabs of the todo page, one per worker (the kernel picks the worker of each connection: open until both
    have one)."""
    tabs: dict[int, websockets.ClientConnection] = {}
    spare = []
    for _ in range(40):
        ws = await websockets.connect(running.url.replace("http", "ws") + "/ws")
        pid = running.serving(ws.local_address[1])
        if pid is None or pid in tabs:
            spare.append(ws)
        else:
            tabs[pid] = ws
            await ws.send(json.dumps({"action": "view", "page": "todo", "streams": {}, "fresh": []}))
        if len(tabs) == 2:
            break
    for ws in spare:
        await ws.close()
    assert len(tabs) == 2, f"40 connections all went to one worker: {running.workers()}"
    return tabs


async def frame_with(ws, text: str) -> str:
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await ws.recv()
            if text in frame:
                return frame


async def test_a_tab_on_each_worker_sees_the_others_change_live_and_all_stop_on_sigterm(workers):
    pids = workers.workers()
    tabs = await tab_on_each_worker(workers)
    assert sorted(tabs) == sorted(pids)
    (a_pid, a), (b_pid, b) = tabs.items()
    deadline = time.monotonic() + TIMEOUT  # whichever worker answers a scrape counts both (the spare tabs gone)
    while not re.search(r"^quanda_open_tabs 2\.0$", scraped := httpx.get(workers.url + "/-/metrics").text, re.M):
        assert time.monotonic() < deadline, re.findall(r"^quanda_open_tabs .*$", scraped, re.M)
        await asyncio.sleep(0.05)  # the spare tabs' closing reaching the workers: no event to wait on
    try:
        await a.send(json.dumps({"action": "todo.add", "name": "written on worker A"}))
        assert 'id="todo-' in await frame_with(b, "written on worker A")
        await b.send(json.dumps({"action": "todo.add", "name": "written on worker B"}))
        assert 'id="todo-' in await frame_with(a, "written on worker B")
    finally:
        await a.close()
        await b.close()
    assert workers.stop(signal.SIGTERM) == 0, workers.log()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} outlived the supervisor"
    assert "every worker stopped" in workers.log()


def test_sigint_stops_every_worker_and_frees_the_port(workers):
    pids = workers.workers()
    assert len(pids) == 2
    assert workers.stop(signal.SIGINT) == 0, workers.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    with httpx.Client() as http, pytest.raises(httpx.ConnectError):
        http.get(workers.url + "/-/health", timeout=2)


def test_a_port_taken_is_said_at_once(tmp_path, workers):
    env = {**os.environ, "QUANDA_PORT": str(workers.port), "PYTHONPATH": str(ROOT),
           "QUANDA_DB_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--workers", "2"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1 and "not starting" in done.stderr, done.stderr


def test_a_worker_that_dies_is_replaced(workers):
    first = workers.workers()
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT
    while not (len(now := workers.workers()) == 2 and first[0] not in now and workers.listening() == 2):
        assert time.monotonic() < deadline, f"no new worker: {now}\n{workers.log()}"
        time.sleep(0.05)  # the supervisor notices within half a second: no event to wait on
    assert first[1] in now and workers.healthy()
    assert "exited with -9: starting another" in workers.log()
    assert workers.stop(signal.SIGTERM) == 0


def test_settings_every_worker_would_refuse_stop_the_start(tmp_path):
    env = {**os.environ, "QUANDA_PORT": str(free_port()), "PYTHONPATH": str(ROOT), "QUANDA_HOST": "0.0.0.0",
           "QUANDA_DB_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    env.pop("QUANDA_SECRET", None)
    done = subprocess.run(readme_command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode != 0 and "QUANDA_SECRET" in done.stderr, done.stderr[-2000:]
    assert "with 2 workers" not in done.stderr  # refused before the supervisor started any
