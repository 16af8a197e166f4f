"""A session's conversation: the ordered entries the chat shows and the LLM sees.

Entries are records of kind "chat" keyed `<sid>:<time_ns>` (so listing by prefix keeps their order):
`{"type": "event", "text"}` for ambient UI events, `{"type": "q"|"assistant", "message_id", ...}` for
messages (an answer also has a `status` and, when the model thought aloud, a `thinking_id`).
"""

from __future__ import annotations

import time
from typing import Any

from app.quanda import QuandaStore

KIND = "chat"


async def add_entry(store: QuandaStore, sid: str, entry: dict[str, Any]) -> str:
    key = f"{sid}:{time.time_ns():020d}"
    await store.put_record(KIND, key, {**entry, "at": time.time()})
    return key


async def update_entry(store: QuandaStore, key: str, **changes: Any) -> dict[str, Any] | None:
    entry = await store.get_record(KIND, key)
    if entry is None:
        return None
    entry.update(changes)
    await store.put_record(KIND, key, entry)
    return entry


async def entries(store: QuandaStore, sid: str, limit: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    found = await store.list_records(KIND, prefix=f"{sid}:")
    return found[-limit:] if limit else found


async def find_answer(store: QuandaStore, sid: str, message_id: str) -> tuple[str, dict[str, Any]] | None:
    for key, entry in reversed(await entries(store, sid)):
        if entry.get("message_id") == message_id and entry.get("type") == "assistant":
            return key, entry
    return None
