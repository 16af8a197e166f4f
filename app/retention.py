"""Records collected once no longer needed, so that what a server reads does not grow with its history.

- A command's claim (kind "command", `commands.py`) makes it run once: needed while its answer may still be
  generated, recovered or retried. Once it is done, its answer is immutable (nothing reruns commands of a
  final answer) and it is older than QUANDA_RETENTION_S, it is deleted.
- Records versions before leases left behind: `job_reaped` claims (leases are taken, not claimed, now) and
  their `job` lease records, once expired longer ago than the retention window.
- Health probes (kind "health", one per server process that ever ran) older than the window.
- The claims that kept speaking up to once per interval (kind "speak_up_once", chat/speakup.py) older than it.

One server sweeps at a time: it holds the store lease "quanda:retention" (taken on the database's clock like a
job's) while it does. The sweep pages through each kind (range scans of PAGE keys), never a whole table at
once; it runs at start-up and every SWEEP_EVERY_S.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from quanda.core import QuandaError, QuandaNotFoundError, QuandaStore

log = logging.getLogger("quanda.retention")

LEASE_KEY = "quanda:retention"
SWEEP_EVERY_S = 3600.0
PAGE = 500
LEGACY_KINDS = ("job_reaped", "job")


async def sweep(store: QuandaStore, retention_s: float, now: float | None = None) -> dict[str, int]:
    """Delete what is no longer needed (see the module docstring); how many of each kind were deleted."""
    now = time.time() if now is None else now
    horizon = now - retention_s
    immutable: dict[str, bool] = {}

    async def final(message_id: str) -> bool:
        if message_id not in immutable:
            try:
                immutable[message_id] = (await store.get_message(message_id)).immutable
            except QuandaNotFoundError:
                immutable[message_id] = True  # gone: nothing can run it again
        return immutable[message_id]

    async def claim_done(_key: str, claim: dict[str, Any]) -> bool:
        return claim.get("state") == "done" and claim.get("claimed_at", now) < horizon and \
            await final(str(claim.get("message_id", "")))

    async def legacy(_key: str, record: dict[str, Any]) -> bool:
        return record.get("expires", record.get("at", now)) < horizon

    async def old_probe(_key: str, probe: dict[str, Any]) -> bool:
        return probe.get("at", now) < horizon

    deleted = {"command": await _delete_where(store, "command", claim_done),
               "health": await _delete_where(store, "health", old_probe),
               "speak_up_once": await _delete_where(store, "speak_up_once", old_probe)}
    for kind in LEGACY_KINDS:
        deleted[kind] = await _delete_where(store, kind, legacy)
    return deleted


async def _delete_where(store: QuandaStore, kind: str, doomed: Any) -> int:
    count, after = 0, None
    while True:
        page = await store.list_records(kind, limit=PAGE, after=after)
        for key, record in page:
            if await doomed(key, record):
                count += await store.delete_record(kind, key)
        if len(page) < PAGE:
            return count
        after = page[-1][0]


class Retention:
    """Sweeps now and then, while it holds the retention lease (one server at a time)."""

    def __init__(self, store: QuandaStore, retention_s: float):
        self.store, self.retention_s = store, retention_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def _run(self) -> None:
        while True:
            try:
                lease = await self.store.acquire_lease(LEASE_KEY, self.store.origin, SWEEP_EVERY_S, {})
                if lease is not None:
                    deleted = await sweep(self.store, self.retention_s)
                    if any(deleted.values()):
                        log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in deleted.items() if n))
            except QuandaError as exc:
                log.warning("retention: %s", exc)
            await asyncio.sleep(SWEEP_EVERY_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
