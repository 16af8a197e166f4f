"""The conversation as an HTTP client follows it: entries as JSON, and a cursor that makes following resumable.

A client (the terminal, any script) reads the conversation once, then follows what changes: new entries
(questions, answers, ambient events) and the state of answers (generating → done, stopped, failed,
interrupted → generating again on Retry, → final when sealed) and the thinking an answer gains. Every event
carries, as its SSE id, a **cursor**: the client's view of the conversation after that event, self-contained,
so that any server can resume from it after a reconnect or a restart:

    v1.<conversation>.<since>.<seen>.<open>

- `<conversation>`: 12 hex digits naming the conversation (a new or another one makes the server start over
  with a snapshot);
- `<since>` and `<seen>`: entries are keyed by the time they were written, and two writers may commit out of
  the order of their keys. So the cursor lists the keys it has seen in the last WINDOW_NS before the newest
  one (as offsets from `<since>`, comma-separated); every entry keyed before `<since>` counts as seen. New
  entries are those keyed at or after `<since>` and not listed.
- `<open>`: the answers that may still change, `<key>=<status>` (`+t` once their thinking is known),
  comma-separated. Done and final answers never change again; events and questions never change.

Resuming is a diff between the cursor and the conversation now: no entry is sent twice, none is missed, and
a state is sent only when it differs from what the client has. Each SSE event's id is the cursor after it, so a
connection cut between two events resumes between them. A cursor the server cannot use (malformed, another
conversation, more new entries than a snapshot holds, an open answer that is gone) gets a `chat.snapshot`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from quanda.context import Handle
from quanda.core import QuandaError
from quanda.core import MessageRecord

from . import answers, conversation, outcome

WINDOW_NS = 10 * 10**9  # how far out of key order two writers of entries may commit
MAX_SEEN = 64  # keys listed in a cursor (the newest ones; older count as seen)
MAX_OPEN = 32  # open answers followed (the newest ones)
TRACKED = 400  # the entries read per diff: answers older than that are not followed
TERMINAL = ("done", "final")
OPEN = ("generating",) + answers.UNFINISHED
_KEY = r"\d{1,20}"
_CURSOR = re.compile(rf"v1\.([0-9a-f]{{12}})\.({_KEY})\.((?:{_KEY}(?:,{_KEY})*)?)\."
                     rf"((?:{_KEY}=[a-z]{{1,12}}(?:\+t)?(?:,{_KEY}=[a-z]{{1,12}}(?:\+t)?)*)?)")


class Reset(Exception):
    """The client's view cannot be brought up to date by a diff: send a snapshot."""


@dataclass
class View:
    """What a client has of the conversation (see the module's docstring)."""

    conversation: str
    since: int = 0
    seen: set[int] = field(default_factory=set)
    open: dict[int, tuple[str, bool]] = field(default_factory=dict)  # answer key -> (status, thinking known)

    def cursor(self) -> str:
        seen = ",".join(str(ns - self.since) for ns in sorted(self.seen))
        opened = ",".join(f"{ns}={status}{'+t' if thinking else ''}"
                          for ns, (status, thinking) in sorted(self.open.items()))
        return f"v1.{self.conversation}.{self.since}.{seen}.{opened}"

    @classmethod
    def parse(cls, cursor: str | None) -> "View | None":
        """The view a cursor names, or None when it is not one."""
        if not cursor or len(cursor) > 4096:
            return None
        found = _CURSOR.fullmatch(cursor)
        if found is None:
            return None
        conv, since, seen, opened = found.groups()
        view = cls(conv, int(since), {int(since) + int(x) for x in seen.split(",") if x})
        for item in filter(None, opened.split(",")):
            key, _, status = item.partition("=")
            thinking = status.endswith("+t")
            status = status.removesuffix("+t")
            if status not in OPEN:
                return None
            view.open[int(key)] = (status, thinking)
        return view

    def add(self, ns: int) -> None:
        """An entry the client now has: the window slides to the newest key."""
        self.seen.add(ns)
        self.since = max(self.since, max(self.seen) - WINDOW_NS)
        self.seen = {k for k in self.seen if k >= self.since}
        if len(self.seen) > MAX_SEEN:
            self.seen = set(sorted(self.seen)[-MAX_SEEN:])
            self.since = min(self.seen)

    def starting_at(self, first: int) -> None:
        """The client has nothing before the entry keyed `first` and needs nothing: count it as seen."""
        self.since = max(self.since, first)
        self.seen = {k for k in self.seen if k >= self.since}

    def track(self, ns: int, status: str, thinking: bool) -> None:
        if status in TERMINAL:
            self.open.pop(ns, None)
            return
        self.open[ns] = (status, thinking)
        if len(self.open) > MAX_OPEN:
            del self.open[min(self.open)]


def conversation_tag(cid: str) -> str:
    return hashlib.sha256(cid.encode()).hexdigest()[:12]


async def current_conversation(h: Handle) -> str:
    """The id of the owner's current conversation (of the several a workspace keeps), with its revision when it
    was changed in place (an answer's version regenerated or switched: a follower gets a snapshot)."""
    cid = await conversation.current(h.store, h.owner)
    rev = await conversation.revision(h.store, h.owner, cid)
    return f"{cid}#{rev}" if rev else cid


def key_ns(key: str) -> int:
    return int(key.rsplit(":", 1)[1])


def message_json(record: MessageRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"id": record.id, "role": record.role, "content": record.content, "estimate": record.estimate,
            "warning": record.warning, "immutable": record.immutable, "last_seq": record.last_seq}


async def record_of(h: Handle, message_id: object) -> MessageRecord | None:
    try:
        return await h.store.get_message(message_id)  # type: ignore[arg-type]
    except QuandaError:
        return None


def answer_status(entry: dict[str, Any], record: MessageRecord | None) -> str:
    """An answer's state as clients see it: a stopped, failed or interrupted answer sealed when the next
    question came is final."""
    status = entry.get("status", "final")
    if status in answers.UNFINISHED and (record is None or record.immutable):
        return "final"
    return status if status in OPEN + TERMINAL else "final"


async def entry_json(h: Handle, key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it, with the state of its message (and thinking) now."""
    kind = entry.get("type")
    out: dict[str, Any] = {"key": str(key_ns(key)), "type": kind, "at": entry.get("at")}
    if kind not in ("q", answers.ROLE):
        out["text"] = entry.get("text", "")
        return out
    record = await record_of(h, entry.get("message_id"))
    out.update(message_id=entry.get("message_id"), message=message_json(record))
    if kind == answers.ROLE:
        thinking = await record_of(h, entry["thinking_id"]) if entry.get("thinking_id") else None
        out.update(status=answer_status(entry, record), model=entry.get("model"),
                   thinking_id=entry.get("thinking_id"), thinking=message_json(thinking),
                   **outcome.as_json(entry, record))
    return out


async def snapshot(h: Handle, limit: int) -> tuple[View, list[dict[str, Any]]]:
    """The last `limit` entries of the current conversation, and the view of a client that has them."""
    view = View(conversation_tag(await current_conversation(h)))
    found = await conversation.entries(h.store, h.owner, limit=limit)
    items = []
    for key, entry in found:
        item = await entry_json(h, key, entry)
        items.append(item)
        view.add(key_ns(key))
        if item["type"] == answers.ROLE:
            view.track(key_ns(key), item["status"], bool(item.get("thinking_id")))
    if found:
        view.starting_at(key_ns(found[0][0]))
    return view, items


async def changes(h: Handle, view: View, limit: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """What changed since `view`, as (event name, data) in order, updating `view` as it goes: the cursor
    after each event is `view.cursor()` when it is yielded. Raises Reset when a diff cannot do."""
    if conversation_tag(await current_conversation(h)) != view.conversation:
        raise Reset("the conversation changed")
    found = await conversation.entries(h.store, h.owner, limit=TRACKED)
    present = {key_ns(key): (key, entry) for key, entry in found}
    if any(ns not in present for ns in view.open) and len(found) < TRACKED:
        raise Reset("an answer being followed left the conversation")
    fresh = [(ns, key, entry) for ns, (key, entry) in present.items() if ns >= view.since and ns not in view.seen]
    if len(fresh) > limit:
        raise Reset("more new entries than a snapshot holds")
    for ns in sorted(view.open):  # answers the client has, whose state may have moved on
        if ns not in present:
            continue
        key, entry = present[ns]
        status, thinking = view.open[ns]
        if not thinking and entry.get("thinking_id"):
            view.track(ns, status, True)
            yield "chat.thinking", {"key": str(ns), "message_id": entry["message_id"],
                                    "thinking_id": entry["thinking_id"],
                                    "thinking": message_json(await record_of(h, entry["thinking_id"]))}
        record = await record_of(h, entry.get("message_id"))
        now = answer_status(entry, record)
        if now != status:
            view.track(ns, now, bool(entry.get("thinking_id")))
            yield "chat.state", {"key": str(ns), "message_id": entry.get("message_id"), "status": now,
                                 **outcome.as_json(entry, record)}
    for ns, key, entry in sorted(fresh, key=lambda item: item[0]):
        item = await entry_json(h, key, entry)
        view.add(ns)
        if item["type"] == answers.ROLE:
            view.track(ns, item["status"], bool(item.get("thinking_id")))
        yield "chat.entry", item
