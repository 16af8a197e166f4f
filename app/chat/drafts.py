"""Drafts: the question being typed, streamed into a `role="q"` message while it is typed.

An owner has at most one draft: the record of kind "draft" keyed `<owner>` names its message (and, while the
last question is being edited, that question's id). Send seals the draft into the question. A draft left
untouched for QUANDA_DRAFT_TTL_S seconds is sealed by the sweeper (every server runs one; sealing is
idempotent) and its preview leaves every tab; the record stays and points to a sealed message, so the next
keystroke in a tab that still holds the text starts a new draft with the whole text: nothing typed is lost.
A reload shows a live draft in the input again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from quanda.context import AppContext, Handle
from quanda.core import QuandaError, QuandaImmutableError, QuandaMessage, QuandaWriter

if TYPE_CHECKING:
    from quanda.core import MessageRecord

log = logging.getLogger("quanda.chat")

KIND = "draft"
GONE = "chat.draft_gone"  # the fact: the owner's draft preview leaves the page


def expired(record: MessageRecord, ttl_s: float, now: float | None = None) -> bool:
    return record.immutable or (now or time.time()) - record.updated_at > ttl_s


async def live(h: Handle) -> tuple[dict[str, Any], MessageRecord] | None:
    """(draft record, its message) while the draft is being typed; None when there is none or it expired."""
    draft = await h.store.get_record(KIND, h.owner)
    if draft is None:
        return None
    try:
        record = await h.store.get_message(draft["message_id"])
    except QuandaError:
        return None
    return None if expired(record, h.settings.draft_ttl_s) else (draft, record)


async def write(h: Handle, text: str, edit: str | None = None) -> str | None:
    """The draft's text is now `text`: the id of its message, or None when there is nothing to write. `edit`,
    the question being edited, must be one of the owner's (QuandaNotFoundError otherwise, as for any id)."""
    if edit is not None:
        await h.owned(edit, roles=("q",))
    for _attempt in range(3):
        draft = await h.store.get_record(KIND, h.owner)
        message: QuandaMessage | None = None
        if draft is not None:
            try:
                record = await h.store.get_message(draft["message_id"])
                if not record.immutable:
                    message = QuandaMessage(h.store, record)
            except QuandaError:
                pass
        if message is None:
            if not text:
                return None
            message = await QuandaMessage.create(h.store, role="q")
            await h.own(message.id, "q")
            new = {"message_id": message.id}
            if edit or (draft and draft.get("edit")):
                new["edit"] = edit or draft["edit"]
            if draft is None and not await h.store.insert_record(KIND, h.owner, new):
                await QuandaWriter(message).make_immutable()  # another tab started the draft first: use it
                continue
            if draft is not None:
                await h.store.put_record(KIND, h.owner, new)
        elif edit is not None and draft.get("edit") != edit:
            await h.store.put_record(KIND, h.owner, {**draft, "edit": edit})
        try:
            await QuandaWriter(message).override(text)
        except QuandaImmutableError:  # sealed meanwhile (it expired): start a new one
            continue
        return message.id
    return None


async def take(h: Handle, text: str) -> MessageRecord:
    """The question, sealed: the draft's message if one is being typed, else a new one."""
    store = h.store
    found = await live(h)
    await store.delete_record(KIND, h.owner)
    question = QuandaMessage(store, found[1]) if found else None
    if question is None:
        question = await QuandaMessage.create(store, role="q")
        await h.own(question.id, "q")
    writer = QuandaWriter(question)
    try:
        if (await question.refresh()).content != text:
            await writer.override(text)
    except QuandaImmutableError:  # the sweeper sealed it just now: ask with a fresh one
        question = await QuandaMessage.create(store, role="q")
        await h.own(question.id, "q")
        writer = QuandaWriter(question)
        await writer.override(text)
    await writer.make_immutable()
    return await store.get_message(question.id)


async def discard(h: Handle) -> None:
    """Drop the draft (its message sealed as it is)."""
    draft = await h.store.get_record(KIND, h.owner)
    await h.store.delete_record(KIND, h.owner)
    if draft is not None:
        await seal(h.store, draft["message_id"])


async def seal(store: Any, message_id: str) -> None:
    try:
        record = await store.get_message(message_id)
        if not record.immutable:
            await QuandaWriter(QuandaMessage(store, record)).make_immutable()
    except QuandaError as exc:
        log.warning("could not seal draft %s: %s", message_id, exc)


async def seal_expired(ctx: AppContext, now: float | None = None) -> int:
    """Seal every draft untouched for longer than the TTL; the owner's tabs drop its preview. Returns how
    many were sealed."""
    sealed = 0
    for owner, draft in await ctx.store.list_records(KIND):
        try:
            record = await ctx.store.get_message(draft["message_id"])
        except QuandaError:
            continue
        if record.immutable or not expired(record, ctx.settings.draft_ttl_s, now):
            continue
        await seal(ctx.store, record.id)
        sealed += 1
        await ctx.publish(owner, GONE, message_id=record.id)
    return sealed


async def sweep(ctx: AppContext) -> None:
    """Run `seal_expired` every quarter of the TTL (at least every minute), until the app stops."""
    every = min(max(ctx.settings.draft_ttl_s / 4, 0.05), 60.0)
    while True:
        await asyncio.sleep(every)
        try:
            await seal_expired(ctx)
        except QuandaError as exc:
            if getattr(ctx.store, "_closed", False):  # the app is stopping
                return
            log.warning("sealing expired drafts failed: %s", exc)
