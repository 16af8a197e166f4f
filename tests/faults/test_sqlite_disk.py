"""SQLite on a slow or failing disk (`disk.SlowDisk`: every write to the database's files held or failed in the
kernel call, as a slow or dying device does): the event loop never waits on the disk for more than a small
budget — a write takes as long as the disk makes it, the server meanwhile goes on with everything else; a
failing disk fails the writes, clearly, and once it heals writes go on by themselves."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import sys

import pytest

from tests.faults.disk import SlowDisk
from tests.servers import ROOT

pytestmark = pytest.mark.faults
DELAY_MS = 500  # per write to the database's files; a commit makes a few
LOOP_LATE_MAX_S = 0.25  # a 5 ms timer runs up to ~60 ms late on this shared 2-core machine anyway; under half a write


async def probe(tmp_path, disk: SlowDisk, prepare, appends: int = 3) -> dict:
    """Run tests/faults/loop_probe.py under the shim: `prepare()` once its store is open, then the appends."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.faults.loop_probe", f"sqlite:///{tmp_path}/q.db", str(ready), str(go),
        str(appends), cwd=ROOT, env={**__import__("os").environ, **disk.env()}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        async with asyncio.timeout(60):
            while not ready.exists():
                await asyncio.sleep(0.02)  # another process's file: no event to wait on
            prepare()
            go.touch()
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_a_slow_disk_holds_the_writes_not_the_event_loop(tmp_path):
    disk = SlowDisk(tmp_path, "q.db")
    seen = await probe(tmp_path, disk, lambda: disk.slow(DELAY_MS))
    assert seen["outcomes"] == [2, 3, 4], seen
    assert seen["took_s"] >= 3 * DELAY_MS / 1000, seen  # the disk really was slow
    assert seen["max_late_s"] <= LOOP_LATE_MAX_S, (
        f"the event loop stalled {seen['max_late_s']:.3f} s on a disk {DELAY_MS} ms slow per write: {seen}")
    print(f"\n[faults] SQLite, {DELAY_MS} ms per write: 3 appends in {seen['took_s']:.2f} s, the loop at most "
          f"{1000 * seen['max_late_s']:.1f} ms late over {seen['ticks']} ticks")


async def test_a_failing_disk_fails_the_writes_clearly_and_nothing_else(tmp_path):
    disk = SlowDisk(tmp_path, "q.db")
    seen = await probe(tmp_path, disk, lambda: disk.fail(errno.EIO), appends=2)
    assert all(isinstance(o, str) and "QuandaStoreError" in o and "disk I/O error" in o for o in seen["outcomes"]), seen
    assert seen["read_s"] is not None and seen["read_s"] < 1.0, seen  # reads still work
    assert seen["max_late_s"] <= LOOP_LATE_MAX_S, seen
