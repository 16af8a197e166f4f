"""A dead or slow database under a running server, mid-answer: the SQLite file's directory made read-only, the
disk full, PostgreSQL stopped, the disk frozen. The user must see a clear message, `/-/health` must say 503
while the database is gone, nothing acknowledged may be lost, and the app must recover by itself once the
database is back: health 200 again, the cut answer marked so that Retry completes it, new actions working
(a frozen disk only delays: the answer goes on where it paused).

How each is made (this machine's tests run as root, where plain permissions stop nothing):
- read-only: the database's directory, file and WAL on a loop-mounted ext4 image get the immutable attribute
  (`chattr +i`), which the kernel enforces for root too, on descriptors already open (the `-shm` index is left
  alone: SQLite maps it, and a mapped page that cannot be written kills the process with SIGBUS);
- disk full: a small loop-mounted ext4 image (no blocks reserved for root) filled to its last block;
- PostgreSQL: a private cluster (`pg_createcluster` on a free port; the shared server on 5432 is never
  touched), stopped with `pg_ctlcluster … stop -m fast` and started again;
- slow: the loop-mounted filesystem frozen (`fsfreeze`): every write waits until it is thawed, the server's
  event loop never (its SQLite calls run on the store's threads).
MongoDB cannot run on this machine (no server package, downloads blocked): that case is not tested here.
Each skips, saying why, where the machine does not allow it (not root, no loop device, no PostgreSQL)."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.llm_server import LLMTestServer, Reply
from tests.reliability.harness import (TOKEN, Acks, SSEReader, Tab, api_client, browser_cookie, check_store,
                                       eventually, integrity, short, wait_token)
from tests.servers import AppServer, free_port

pytestmark = pytest.mark.reliability
REPLY = [f"w{i} " for i in range(200)]
TIMEOUT = 30
OUTAGE_S = 2.0  # how long the database stays dead once the app has noticed (the answer writes every 15 ms)


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


class LoopDisk:
    """A small ext4 filesystem in an image file, loop-mounted: it can be filled, and its files made
    immutable."""

    def __init__(self, root: Path, size_mb: int = 64):
        self.image, self.path, self.size_mb = root / "disk.img", root / "disk", size_mb
        self.frozen: list[Path] = []

    def __enter__(self) -> "LoopDisk":
        if os.geteuid() != 0:
            pytest.skip("a loop-mounted filesystem needs root")
        for tool in ("mkfs.ext4", "mount", "umount", "chattr"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed")
        self.path.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(self.size_mb << 20)
        run("mkfs.ext4", "-q", "-F", "-m", "0", str(self.image))
        mounted = run("mount", "-o", "loop", str(self.image), str(self.path), check=False)
        if mounted.returncode != 0:
            pytest.skip(f"this machine does not allow a loop mount: {mounted.stderr.strip()}")
        return self

    def __exit__(self, *exc) -> None:
        self.thaw()  # first: a frozen filesystem cannot be unmounted, and its writers wait for ever
        self.writable()
        run("umount", str(self.path), check=False).returncode == 0 or run("umount", "-l", str(self.path))
        self.image.unlink(missing_ok=True)

    def fill(self) -> None:
        """Every block taken (a file of zeros written until the filesystem says ENOSPC)."""
        with open(self.path / "filler", "wb", buffering=0) as f:
            for block in (1 << 20, 4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
            os.fsync(f.fileno())
        assert shutil.disk_usage(self.path).free < 64 << 10

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def read_only(self, *names: str) -> None:
        self.frozen = [self.path / n for n in names if (self.path / n).exists()] + [self.path]
        run("chattr", "+i", *map(str, self.frozen))

    def writable(self) -> None:
        if self.frozen:
            run("chattr", "-i", *map(str, self.frozen))
            self.frozen = []

    def freeze(self) -> None:
        self.freezing = True
        run("fsfreeze", "-f", str(self.path))

    def thaw(self) -> None:
        if getattr(self, "freezing", False):
            run("fsfreeze", "-u", str(self.path))
            self.freezing = False


class PrivateCluster:
    """A PostgreSQL 15 cluster of this test's own, on a free port, trusting local connections."""

    def __init__(self):
        self.name, self.port = f"qrel{uuid.uuid4().hex[:8]}", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> "PrivateCluster":
        if os.geteuid() != 0 or shutil.which("pg_createcluster") is None:
            pytest.skip("a private PostgreSQL cluster needs root and pg_createcluster (postgresql-common)")
        made = run("pg_createcluster", "15", self.name, "-p", str(self.port), "--start", "--",
                   "--auth-host=trust", "--auth-local=trust", check=False)
        if made.returncode != 0:
            pytest.skip(f"pg_createcluster failed: {made.stderr.strip()[-300:]}")
        return self

    def stop(self) -> None:
        run("pg_ctlcluster", "15", self.name, "stop", "-m", "fast")

    def start(self) -> None:
        run("pg_ctlcluster", "15", self.name, "start")

    def __exit__(self, *exc) -> None:
        run("pg_dropcluster", "15", self.name, "--stop", check=False)


@pytest.fixture
def llm():
    with LLMTestServer(Reply(chunks=REPLY, delay=0.015)) as server:
        yield server


async def health(client: httpx.AsyncClient) -> int:
    return (await client.get("/-/health", timeout=10)).status_code


async def outage(tmp_path, llm, db_url: str, break_it, mend_it, during=None, **env: str) -> dict:
    """An answer streams; the database dies under it; then comes back. Returns what was seen, for the
    caller's figures; asserts the user was told, health said 503 then 200, Retry completed the answer, and
    new actions work. `during(client, answer id)`, if given, checks more while the database is dead."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    server = AppServer(workdir, QUANDA_DB_URL=db_url, QUANDA_API_TOKEN=TOKEN, OLLAMA_HOST=llm.url,
                       OLLAMA_MODEL="quanda-test", QUANDA_JOB_LEASE_S="2", **env).start()
    acks = Acks()
    try:
        cookie = await browser_cookie(server.url)
        async with api_client(server.url) as client, Tab(server.url, cookie, page="todo") as tab:
            q = (await client.post("/api/messages", json={"role": "q", "content": "count"})).json()["id"]
            answer = (await client.post(f"/api/messages/{q}/answer", json={})).json()["answer_id"]
            reader = SSEReader(client, answer, acks)
            assert await acks.wait_count(30, TIMEOUT), f"only {acks.count} tokens"
            seen = len(tab.frames)
            await asyncio.to_thread(break_it)
            await eventually(lambda: _is(health(client), 503), TIMEOUT, "/-/health says 503 while the database is gone")
            del tab.frames[:seen]
            await tab.wait_frame(r"database", TIMEOUT, "the page told that the database is unavailable")
            await tab.send("todo.add", name="added while the database is gone")
            await tab.wait_frame(r"database is unavailable", TIMEOUT, "an action refused, saying why")
            told = tab.notices()
            assert re.search(r"database is unavailable \(.+\)", " ".join(told)), told  # saying why
            if during is not None:
                await during(client, answer)
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for anything
            await asyncio.to_thread(mend_it)
            await eventually(lambda: _is(health(client), 200), TIMEOUT, "/-/health back to 200 by itself")
            await reader.stop()
            marked = await wait_token(client, answer, lambda tok, st: st["warning"] != "", TIMEOUT,
                                      "the cut answer marked, Retry offered")
            await tab.send("chat.retry", message_id=answer)
            done = SSEReader(client, answer, acks)
            await done.wait(TIMEOUT, "the retried answer")
            state = (await client.get(f"/api/messages/{answer}")).json()
            assert state["immutable"] and state["content"] == "".join(REPLY), short(state)
            del tab.frames[:]
            await tab.send("todo.add", name="added once the database is back")
            await tab.wait_frame(r"added once the database is back", TIMEOUT, "an action works again")
    finally:
        server.stop()
    assert not (found := tracebacks(server.log_text())), found[0][:4000]
    await check_store(db_url, acks)
    return {"acknowledged": acks.count, "told": told, "marked": marked["warning"]}


def tracebacks(log: str) -> list[str]:
    """The tracebacks in a server's log, but asyncpg's pool's own: it logs one each time it fails to reconnect
    while PostgreSQL is down (library logging the app does not control)."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ |INFO: )", log)
    return [r for r in records if "Traceback" in r and " asyncpg.pool: " not in r.split("\n", 1)[0]]


async def _is(status, expected: int) -> bool:
    return await status == expected


@pytest.mark.parametrize("failure", ["read-only", "disk full"])
async def test_sqlite_unwritable_mid_answer(tmp_path, llm, failure):
    with LoopDisk(tmp_path) as disk:
        db_url = f"sqlite:///{disk.path}/quanda.db"
        if failure == "read-only":
            seen = await outage(tmp_path, llm, db_url, lambda: disk.read_only("quanda.db", "quanda.db-wal"),
                                disk.writable)
        else:
            seen = await outage(tmp_path, llm, db_url, disk.fill, disk.free)
        assert integrity(str(disk.path / "quanda.db")) == "ok"
    print(f"\n[dead database] SQLite {failure}: {seen}")


async def test_postgresql_stopped_mid_answer(tmp_path, llm):
    with PrivateCluster() as pg:
        seen = await outage(tmp_path, llm, pg.url, pg.stop, pg.start)
    print(f"\n[dead database] PostgreSQL stopped: {seen}")


async def test_sqlite_on_a_frozen_disk_mid_answer(tmp_path, llm):
    """Slow, not dead: every write waits until the thaw. The event loop never waits with it (every SQLite call
    runs on a thread of the store; the loop waits for one at most a couple of milliseconds): pages that need
    no database are served at once, a read answers or fails within its deadline, `/-/health` says 503 once its
    round trip has waited QUANDA_DB_TIMEOUT_S, the page is told; thawed, the cut answer is marked and
    completed by Retry, nothing acknowledged lost."""
    if shutil.which("fsfreeze") is None:
        pytest.skip("fsfreeze is not installed")
    held: dict = {}

    async def served_at_once(client: httpx.AsyncClient, answer: str) -> None:
        start = time.monotonic()
        assert (await client.get("/-/plugins")).status_code == 200
        held["plugins_s"] = time.monotonic() - start
        assert held["plugins_s"] < 2, f"a page needing no database took {held['plugins_s']:.2f} s"
        start = time.monotonic()
        status = (await client.get(f"/api/messages/{answer}")).status_code
        held["read"] = (status, round(time.monotonic() - start, 2))
        assert held["read"][1] < 5 + 3, f"a read took {held['read']} s on a frozen disk"

    with LoopDisk(tmp_path) as disk:
        db_url = f"sqlite:///{disk.path}/quanda.db"
        seen = await outage(tmp_path, llm, db_url, disk.freeze, disk.thaw, during=served_at_once)
        assert integrity(str(disk.path / "quanda.db")) == "ok"
    print(f"\n[dead database] SQLite frozen disk: {seen}; while frozen: {held}")
