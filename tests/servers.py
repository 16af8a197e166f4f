"""Real servers for the tests: the app under uvicorn in its own process, and a TCP proxy that can cut
every connection (a network failure, as the browser sees it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python main.py` in a subprocess, in its own working directory (its data/ lives there)."""

    def __init__(self, workdir: Path, **env: str):
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "QUANDA_PORT": str(self.port), "PYTHONPATH": str(ROOT), **env}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AppServer":
        self.log = open(self.workdir / f"server-{self.port}.log", "ab")
        # with QUANDA_TEST_CRASH_AT, main.py with the test's crash hook installed (tests/crashes.py)
        command = ["-m", "tests.crashes"] if self.env.get("QUANDA_TEST_CRASH_AT") else [str(ROOT / "main.py")]
        self.proc = subprocess.Popen([sys.executable, *command], cwd=self.workdir, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise RuntimeError(f"server exited: {self.log_text()}")
            try:
                if httpx.get(self.url + "/-/plugins", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # waiting for a process to listen: there is no event to wait on
        raise RuntimeError(f"server did not start: {self.log_text()}")

    def log_text(self) -> str:
        return (self.workdir / f"server-{self.port}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class CuttableProxy:
    """Forwards a local port to the app; `cut()` resets every open connection."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def __aenter__(self) -> "CuttableProxy":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        self.cut()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()


@contextlib.asynccontextmanager
async def open_tab(server: "AppServer", cookie: str, page: str | None = None):
    """A WebSocket like a browser tab's: it tells the server which page it shows (as quanda.js does), so
    the facts of that page's plugin reach it."""
    import json

    import websockets
    async with websockets.connect(server.url.replace("http", "ws") + "/ws",
                                  additional_headers={"Cookie": cookie}) as ws:
        if page is not None:
            await ws.send(json.dumps({"action": "view", "page": page, "streams": {}, "fresh": []}))
        yield ws


PASSWORD = "correct horse battery"


def add_user(server: "AppServer", name: str, password: str = PASSWORD) -> None:
    """`python -m quanda users add NAME` on the server's database (accounts mode)."""
    done = subprocess.run([sys.executable, "-m", "quanda", "users", "add", name, "--password-stdin"],
                          input=password + "\n", text=True, capture_output=True, cwd=server.workdir,
                          env=server.env, timeout=30)
    assert done.returncode == 0, done.stderr


async def login(server: "AppServer", name: str, password: str = PASSWORD) -> str:
    """Sign in as a browser would; the session cookie."""
    async with httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url}) as client:
        response = await client.post("/login", data={"username": name, "password": password})
        assert response.status_code == 303 and response.headers["location"] == "/", response.text[:300]
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


ACCOUNTS = {"QUANDA_AUTH": "accounts", "QUANDA_SECRET": "s" * 40}
