"""An owner's conversation: the ordered entries the chat shows and the LLM sees.

Entries are records of kind "chat" keyed `<owner>:<time_ns>` (so listing by prefix keeps their order):
`{"type": "event", "text"}` for ambient UI events, `{"type": "q"|"assistant", "message_id", ...}` for
messages (an answer also has a `status` and, when the model thought aloud, a `thinking_id`).
"""

from __future__ import annotations

import time
from typing import Any

from app.quanda import QuandaStore

KIND = "chat"


async def add_entry(store: QuandaStore, owner: str, entry: dict[str, Any],
                    at_ns: int | None = None) -> str | None:
    """Append an entry; with `at_ns` (a time fixed beforehand) it is added at most once: None if it was."""
    key = f"{owner}:{at_ns or time.time_ns():020d}"
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


async def entries(store: QuandaStore, owner: str, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    found = await store.list_records(KIND, prefix=f"{owner}:")
    return found[-limit:] if limit else found


async def find_answer(store: QuandaStore, owner: str, message_id: str) -> tuple[str, dict[str, Any]] | None:
    for key, entry in reversed(await entries(store, owner)):
        if entry.get("message_id") == message_id and entry.get("type") == "assistant":
            return key, entry
    return None
