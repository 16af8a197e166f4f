"""An owner's conversations: each an ordered list of entries the chat shows and the LLM sees.

A conversation has an id (`cid`) and a record of kind "chat_conv" keyed `<owner>:<cid>` (title, created,
updated, and its `settings`: model, system prompt, temperature, context size); the owner's current one is named by the record of kind "chat_current" keyed `<owner>`. Entries are
records of kind "chat" keyed `<cid>:<time_ns>` (so listing by prefix keeps their order):
`{"type": "event", "text"}` for ambient UI events, `{"type": "q"|"assistant", "message_id", ...}` for
messages (an answer also has a `status` and, when the model thought aloud, a `thinking_id`). An entry
replaced by an edited question carries `"superseded": true`: kept and shown as a previous version, never
sent to the LLM again.

Before conversations had ids, an owner had one conversation whose entries were keyed `<owner>:<time_ns>`.
Those keys are exactly the entry keys of a conversation whose id is the owner itself: the first time an
owner is seen by this version, such entries become its first conversation (cid = owner), nothing rewritten.
New conversations get ids `c-<24 hex>`, which never start with an owner's id followed by ":".
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from quanda.core import QuandaError, QuandaStore

KIND = "chat"
CONV_KIND = "chat_conv"
CURRENT_KIND = "chat_current"
TITLE_CHARS = 80
MESSAGE_TYPES = ("q", "assistant")
SETTINGS = ("model", "system_prompt", "temperature", "context")


def entry_key(cid: str, at_ns: int) -> str:
    return f"{cid}:{at_ns:020d}"


def new_cid() -> str:
    return "c-" + secrets.token_hex(12)


def title_of(question: str) -> str:
    """A conversation's title: the first line of its first question, shortened."""
    line = next((ln.strip() for ln in question.splitlines() if ln.strip()), "")
    line = line.lstrip("#>*- ").strip() or line
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


async def current(store: QuandaStore, owner: str) -> str:
    """The id of the owner's current conversation (made on first use; see the module's docstring)."""
    found = await store.get_record(CURRENT_KIND, owner)
    if found is not None:
        return found["cid"]
    legacy = await store.list_records(KIND, prefix=f"{owner}:")
    cid = owner if legacy else new_cid()
    if not await store.insert_record(CURRENT_KIND, owner, {"cid": cid}):
        return (await store.get_record(CURRENT_KIND, owner) or {"cid": cid})["cid"]
    now = time.time()
    record = {"cid": cid, "title": "", "created": legacy[0][1].get("at", now) if legacy else now,
              "updated": legacy[-1][1].get("at", now) if legacy else now}
    if legacy:
        record["title"] = await _first_question_title(store, [e for _k, e in legacy])
    await store.put_record(CONV_KIND, f"{owner}:{cid}", record)
    return cid


async def _first_question_title(store: QuandaStore, found: list[dict[str, Any]]) -> str:
    for entry in found:
        if entry.get("type") == "q":
            try:
                return title_of((await store.get_message(entry["message_id"])).content)
            except QuandaError:
                continue
    return ""


async def conversation(store: QuandaStore, owner: str, cid: object) -> dict[str, Any] | None:
    """The owner's conversation `cid`, or None (unknown, or another owner's: the same answer)."""
    if not isinstance(cid, str) or not 1 <= len(cid) <= 64:
        return None
    await current(store, owner)  # an owner seen for the first time: its earlier entries become a conversation
    return await store.get_record(CONV_KIND, f"{owner}:{cid}")


async def conversations(store: QuandaStore, owner: str) -> list[dict[str, Any]]:
    """Every conversation of the owner, the most recently used first."""
    await current(store, owner)
    found = [record for _key, record in await store.list_records(CONV_KIND, prefix=f"{owner}:")]
    return sorted(found, key=lambda c: (c.get("updated", 0), c.get("created", 0)), reverse=True)


async def start_new(store: QuandaStore, owner: str) -> str:
    """A fresh conversation becomes the current one (the old one is kept), unless the current one is empty:
    then it stays current. Returns the current conversation's id."""
    cid = await current(store, owner)
    if not await store.list_records(KIND, prefix=f"{cid}:"):
        return cid
    fresh, now = new_cid(), time.time()
    await store.put_record(CONV_KIND, f"{owner}:{fresh}", {"cid": fresh, "title": "", "created": now,
                                                         "updated": now})
    await store.put_record(CURRENT_KIND, owner, {"cid": fresh})
    return fresh


async def switch_to(store: QuandaStore, owner: str, cid: str) -> bool:
    """Make the owner's conversation `cid` the current one; False if there is no such conversation."""
    found = await conversation(store, owner, cid)
    if found is None:
        return False
    await store.put_record(CURRENT_KIND, owner, {"cid": found["cid"]})
    return True


async def touch(store: QuandaStore, owner: str, cid: str, question: str | None = None) -> dict[str, Any] | None:
    """Mark a conversation used now; the first question gives it its title."""
    record = await store.get_record(CONV_KIND, f"{owner}:{cid}")
    if record is None:
        return None
    record["updated"] = time.time()
    if question and not record.get("title"):
        record["title"] = title_of(question)
    await store.put_record(CONV_KIND, f"{owner}:{cid}", record)
    return record


async def add_entry(store: QuandaStore, owner: str, entry: dict[str, Any],
                    at_ns: int | None = None) -> str | None:
    """Append an entry to the owner's current conversation; with `at_ns` (a time fixed beforehand) it is
    added at most once: None if it was."""
    key = entry_key(await current(store, owner), at_ns or time.time_ns())
    if at_ns is not None:
        return key if await store.insert_record(KIND, key, {**entry, "at": at_ns / 1e9}) else None
    await store.put_record(KIND, key, {**entry, "at": time.time()})
    return key


async def update_entry(store: QuandaStore, key: str, **changes: Any) -> dict[str, Any] | None:
    entry = await store.get_record(KIND, key)
    if entry is None:
        return None
    entry.update(changes)
    await store.put_record(KIND, key, entry)
    return entry


async def entries(store: QuandaStore, owner: str, limit: int | None = None, *, cid: str | None = None,
                  superseded: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The entries of the owner's current conversation (or of `cid`, which the caller has checked is the
    owner's), oldest first; the last `limit` (read from the end: as many records as that takes, not the whole
    conversation); without superseded ones unless asked."""
    cid = cid or await current(store, owner)
    if not limit:
        found = await store.list_records(KIND, prefix=f"{cid}:")
        return found if superseded else [(key, entry) for key, entry in found if not entry.get("superseded")]
    reading = limit
    while True:  # the last `limit` entries are read, not the whole conversation (more if some are superseded)
        found = await store.list_last_records(KIND, f"{cid}:", reading)
        kept = found if superseded else [(key, entry) for key, entry in found if not entry.get("superseded")]
        if len(kept) >= limit or len(found) < reading:
            return kept[-limit:]
        reading *= 2


async def newest_first(store: QuandaStore, cid: str, page: int = 50) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A conversation's entries from the newest back, read a page at a time (range scans from the end)."""
    before = None
    while True:
        found = await store.list_records(KIND, prefix=f"{cid}:", limit=page, last=True, before=before)
        for item in reversed(found):
            yield item
        if len(found) < page:
            return
        before = found[0][0]


async def find_answer(store: QuandaStore, owner: str, message_id: str) -> tuple[str, dict[str, Any]] | None:
    """The entry of an answer: in the current conversation, else in any other of the owner's (newest first:
    an answer being stopped, retried or recovered is near the end)."""
    cid = await current(store, owner)
    cids = [cid] + [c["cid"] for c in await conversations(store, owner) if c["cid"] != cid]
    for each in cids:
        async for key, entry in newest_first(store, each):
            if entry.get("message_id") == message_id and entry.get("type") == "assistant":
                return key, entry
    return None


async def last_question(store: QuandaStore, owner: str) -> str | None:
    """The message id of the last question of the current conversation (not counting replaced ones)."""
    async for _key, entry in newest_first(store, await current(store, owner)):
        if entry.get("type") == "q" and not entry.get("superseded"):
            return entry.get("message_id")
    return None


async def supersede_from(store: QuandaStore, owner: str, question_id: str) -> list[str] | None:
    """Mark the question `question_id` (the last question of the current conversation) and the messages after
    it as a previous version; returns their message ids, or None when it is not the last question."""
    live = await entries(store, owner)
    at = next((i for i in range(len(live) - 1, -1, -1) if live[i][1].get("type") == "q"), None)
    if at is None or live[at][1].get("message_id") != question_id:
        return None
    ops = [("put", KIND, key, {**entry, "superseded": True}) for key, entry in live[at:]
           if entry.get("type") in MESSAGE_TYPES]
    await store.commit_records(ops)
    return [op[3]["message_id"] for op in ops]


async def holds(store: QuandaStore, owner: str, message_id: str) -> bool:
    """Whether the current conversation shows the message (as itself, not as a previous version)."""
    return any(entry.get("message_id") == message_id for _key, entry in await entries(store, owner))


async def settings_of(store: QuandaStore, owner: str, cid: str | None = None) -> dict[str, Any]:
    """The settings of the owner's current conversation (or of `cid`): only those set."""
    cid = cid or await current(store, owner)
    record = await store.get_record(CONV_KIND, f"{owner}:{cid}") or {}
    return {k: v for k, v in (record.get("settings") or {}).items() if k in SETTINGS and v not in (None, "")}


async def set_settings(store: QuandaStore, owner: str, cid: str, **changes: Any) -> dict[str, Any] | None:
    """Change some of a conversation's settings (None or "" unsets one); its settings after, or None."""
    record = await store.get_record(CONV_KIND, f"{owner}:{cid}")
    if record is None:
        return None
    settings = {**(record.get("settings") or {}), **{k: v for k, v in changes.items() if k in SETTINGS}}
    record["settings"] = {k: v for k, v in settings.items() if v not in (None, "")}
    await store.put_record(CONV_KIND, f"{owner}:{cid}", record)
    return record["settings"]


async def bump_revision(store: QuandaStore, owner: str, cid: str | None = None) -> None:
    """The current conversation (or `cid`) changed in place (a version regenerated or switched): followers of
    the HTTP API start over from a snapshot (timeline.py)."""
    cid = cid or await current(store, owner)
    record = await store.get_record(CONV_KIND, f"{owner}:{cid}")
    if record is not None:
        record["revision"] = int(record.get("revision", 0)) + 1
        await store.put_record(CONV_KIND, f"{owner}:{cid}", record)


async def revision(store: QuandaStore, owner: str, cid: str) -> int:
    return int((await store.get_record(CONV_KIND, f"{owner}:{cid}") or {}).get("revision", 0))


async def message_at(store: QuandaStore, key: str | None) -> str | None:
    """The message id of the entry keyed `key` (None for an event, or no such entry)."""
    if not key:
        return None
    entry = await store.get_record(KIND, key)
    return entry.get("message_id") if entry else None
