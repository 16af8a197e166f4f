"""Who may use a message: the one place that records and checks it.

Every message the app creates for someone is recorded as theirs (`own`); the chat's actions and the HTTP API
ask `owned` before they read or write one, the WebSocket's follow asks `role_if_owned`. Another owner's id is
answered exactly like an unknown id (QuandaNotFoundError), so ids leak nothing. Facts name the owner they
are for: `fact_for` is the one test of it (the hub, the SSE streams, AG-UI).
"""

from __future__ import annotations

from typing import Iterable

from quanda.core import QuandaNotFoundError, QuandaStore
from quanda.core import MessageRecord

KIND = "owner"


async def own(store: QuandaStore, owner: str, message_id: str, role: str) -> None:
    await store.put_record(KIND, message_id, {"owner": owner, "role": role})


async def owner_of(store: QuandaStore, message_id: str) -> dict | None:
    """The ownership record of a message ({"owner", "role"}), or None."""
    if not isinstance(message_id, str):
        return None
    record = await store.get_record(KIND, message_id.lower()) if len(message_id) == 24 else None
    if record is not None and "owner" not in record and "sid" in record:  # written before workspaces
        record["owner"] = record["sid"]
    return record


async def role_if_owned(store: QuandaStore, owner: str, message_id: object) -> str | None:
    """The role of the message if `owner` may use it ("" when it has none), else None."""
    record = await owner_of(store, message_id)  # type: ignore[arg-type]
    if record is None or record["owner"] != owner:
        return None
    return record.get("role", "")


def fact_for(fact: dict, owner: str) -> bool:
    """Whether a published fact is for `owner` (every fact names the owner it was published for)."""
    return fact.get("owner") == owner


async def owned(store: QuandaStore, owner: str, message_id: object,
                roles: Iterable[str] | None = None) -> MessageRecord:
    """The message, if `owner` may use it (and it has one of `roles`); QuandaNotFoundError otherwise."""
    record = await store.get_message(message_id)  # type: ignore[arg-type]  # malformed ids: not found
    mine = await owner_of(store, record.id)
    if mine is None or mine["owner"] != owner or (roles is not None and mine.get("role") not in set(roles)):
        raise QuandaNotFoundError(f"no message with id {message_id!r}")
    return record
