"""Databases written before workspaces: their data belonged to browser sessions (a 32-hex id in the key or
the record). In local mode it is all folded, once, into the one local workspace; in accounts mode it waits
for an admin (`python -m quanda users adopt NAME`) to give it to a user. Nothing is dropped: todos keep their
names and states (renumbered after the workspace's own), conversations merge in time order, each message
stays with its new owner.
"""

from __future__ import annotations

import logging
import re
import time

from quanda.accounts import LOCAL_WORKSPACE
from quanda.core import QuandaError, QuandaStore

log = logging.getLogger("quanda.migrate")

MARK = ("migration", "workspaces")
STALE_S = 600.0
_SESSION = re.compile(r"[0-9a-f]{32}")
PER_OWNER = ("sim_run", "draft", "chat_turn")  # one record per owner, keyed by it


def is_session(key: str) -> bool:
    return bool(_SESSION.fullmatch(key))


async def legacy_sessions(store: QuandaStore) -> set[str]:
    """The browser sessions that still own data."""
    found = {r["sid"] for _k, r in await store.list_records("owner") if "sid" in r and "owner" not in r}
    for kind in ("chat", "todo"):
        found |= {k.split(":", 1)[0] for k, _ in await store.list_records(kind) if is_session(k.split(":", 1)[0])}
    for kind in PER_OWNER:
        found |= {k for k, _ in await store.list_records(kind) if is_session(k)}
    return found


async def migrate(store: QuandaStore, accounts_mode: bool) -> None:
    """At start-up: local mode folds every session's data into the local workspace (once, by one server:
    several starting together on one database take turns through a claim; a claim older than STALE_S is
    taken over, in case its server died)."""
    if await store.get_record(*MARK) is not None:
        return
    if accounts_mode:
        sessions = await legacy_sessions(store)
        if sessions:
            log.warning("%d browser session(s) from before accounts own data: give it to a user with "
                        "`python -m quanda users adopt NAME --all`", len(sessions))
        return
    now = time.time()
    claim = await store.get_record("migration", "workspaces-running")
    if claim is not None and claim["at"] > now - STALE_S:
        return  # another server is at it
    if claim is not None:
        await store.delete_record("migration", "workspaces-running")
    if not await store.insert_record("migration", "workspaces-running", {"at": now}):
        return
    sessions = await legacy_sessions(store)
    if sessions:
        await adopt(store, sessions, LOCAL_WORKSPACE)
        log.info("folded the data of %d browser session(s) into the local workspace", len(sessions))
    await store.commit_records([("put", *MARK, {"done": True}),
                                ("delete", "migration", "workspaces-running", None)])


async def adopt(store: QuandaStore, sessions: set[str], workspace: str) -> None:
    """Give everything these browser sessions own to `workspace`. Safe to run again after a crash."""
    for key, record in await store.list_records("owner"):
        if record.get("sid") in sessions and "owner" not in record:
            await store.put_record("owner", key, {"owner": workspace, "role": record["role"]})
    for key, entry in await store.list_records("chat"):
        session, _, rest = key.partition(":")
        if session in sessions:
            await store.commit_records([("put", "chat", f"{workspace}:{rest}", entry), ("delete", "chat", key, None)])
    await _adopt_todos(store, sessions, workspace)
    for kind in PER_OWNER:
        await _adopt_latest(store, kind, sessions, workspace)


async def _adopt_todos(store: QuandaStore, sessions: set[str], workspace: str) -> None:
    mine = [t for _k, t in await store.list_records("todo", prefix=f"{workspace}:")]
    next_id = max((t["id"] for t in mine), default=0) + 1
    next_order = max((t["order"] for t in mine), default=0) + 1
    for session in sorted(sessions):
        for key, todo in sorted(await store.list_records("todo", prefix=f"{session}:"),
                                key=lambda kv: (kv[1]["order"], kv[1]["id"])):
            moved = {**todo, "id": next_id, "order": next_order}
            await store.commit_records([("put", "todo", f"{workspace}:{next_id:09d}", moved),
                                        ("delete", "todo", key, None)])
            next_id, next_order = next_id + 1, next_order + 1


async def _adopt_latest(store: QuandaStore, kind: str, sessions: set[str], workspace: str) -> None:
    """Per-owner records (current run, draft, turn): the workspace keeps its own, else the newest."""
    candidates = [(k, r) for k, r in await store.list_records(kind) if k in sessions]
    if not candidates:
        return
    if await store.get_record(kind, workspace) is None:
        if kind == "chat_turn":
            best = max(candidates, key=lambda kr: kr[1].get("turn", 0))[1]
        else:
            best = max(candidates, key=lambda kr: kr[1].get("message_id", ""))[1]  # ObjectIds grow with time
        await store.put_record(kind, workspace, best)
    for key, _ in candidates:
        try:
            await store.delete_record(kind, key)
        except QuandaError as exc:
            log.warning("could not remove %s %s: %s", kind, key, exc)
