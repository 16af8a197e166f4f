"""What the terminal holds of the conversation: plain objects, changed by the network readers, drawn by the
app's frame loop (which is the only code that touches widgets).

A message's state follows the core's reducer (quanda.core: chunk appends, override replaces, warning sets,
immutable ends) and records what the screen has yet to show: the text appended since the last frame
(`pending`), or that the whole text must be drawn again (`redraw`, after an override). A token at or below
the seq the message holds is dropped (nothing is ever shown twice); a token past the next seq is a gap the
reader must not paper over (ProtocolError: it reconnects from the seq it holds).

The conversation keeps at most `limit` entries (the oldest leave first), in key order.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable

from .sse import ProtocolError

ANSWER = "assistant"
RETRYABLE = ("stopped", "failed", "cut", "interrupted")
UNCHANGED_NOTE = "Nothing was changed."  # (as the web page says them)
EMPTY_NOTE = "The model sent no answer."


@dataclass
class MessageState:
    id: str
    role: str = ""
    content: str = ""
    estimate: str | None = None
    warning: str = ""
    immutable: bool = False
    last_seq: int = 0
    pending: list[str] = field(default_factory=list)  # appended since the last frame
    pending_chars: int = 0
    redraw: bool = True  # the screen must draw `content` whole (first frame, after an override)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MessageState":
        return cls(id=data["id"], role=data.get("role", ""), content=data.get("content") or "",
                   estimate=data.get("estimate"), warning=data.get("warning") or "",
                   immutable=bool(data.get("immutable")), last_seq=int(data.get("last_seq") or 0))

    def apply(self, event: str, data: dict[str, Any]) -> bool:
        """Apply one event of `/api/messages/{id}/events`; False when it was already applied."""
        kind, seq, text = data.get("kind"), data.get("seq"), data.get("text") or ""
        if not isinstance(seq, int) or kind not in ("chunk", "override", "warning", "immutable"):
            raise ProtocolError(f"not a token: {str(data)[:80]}")
        if event == "thread.message.snapshot":  # the whole state at `seq` (a fresh follow)
            self._replace(text, data.get("estimate"))
            self.last_seq = seq
            return True
        if seq <= self.last_seq:
            return False
        if seq != self.last_seq + 1:
            raise ProtocolError(f"message {self.id}: token {seq} came after {self.last_seq}")
        self.last_seq = seq
        if kind == "chunk":
            self.content += text
            self.estimate = data.get("estimate")
            if not self.redraw:
                self.pending.append(text)
                self.pending_chars += len(text)
        elif kind == "override":
            self._replace(text, None)
        elif kind == "warning":
            self.warning = text
        else:
            self.immutable, self.warning, self.estimate = True, "", None
        return True

    def _replace(self, text: str, estimate: str | None) -> None:
        self.content, self.estimate = text, estimate
        self.redraw, self.pending, self.pending_chars = True, [], 0

    def take(self) -> tuple[bool, str]:
        """For a frame: (draw the whole text?, the text appended since the last frame)."""
        redraw, appended = self.redraw, "".join(self.pending)
        self.redraw, self.pending, self.pending_chars = False, [], 0
        return redraw, appended


@dataclass
class Entry:
    key: int  # entries are ordered by key (the time they were written, in ns)
    type: str  # "q", "assistant" or "event"
    at: float | None = None
    text: str = ""  # an event's text
    message: MessageState | None = None
    status: str = ""  # an answer's: generating, done, stopped, failed, cut, interrupted, final
    model: str | None = None
    thinking: MessageState | None = None
    outcome: str = ""  # how it ended, kept after the seal: done, stopped, failed, cut, interrupted
    reason: str = ""  # why, for an unfinished one
    note: str = ""  # what a finished one did not do: "Nothing was changed." / "The model sent no answer."
    usage: dict[str, Any] | None = None
    approvals: list[dict[str, Any]] = field(default_factory=list)  # actions it asked to run, decided or not
    results: list[dict[str, Any]] = field(default_factory=list)  # actions it ran: undoable, undone

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Entry":
        entry = cls(key=int(data["key"]), type=data.get("type", ""), at=data.get("at"), text=data.get("text") or "",
                    status=data.get("status") or "", model=data.get("model"))
        entry.set_outcome(data)
        if data.get("message"):
            entry.message = MessageState.from_json(data["message"])
        if data.get("thinking"):
            entry.thinking = MessageState.from_json(data["thinking"])
        return entry

    def set_outcome(self, data: dict[str, Any]) -> None:
        """The outcome fields of an entry or a chat.state event (when it has them)."""
        if "outcome" in data:
            self.outcome, self.reason = data.get("outcome") or "", data.get("reason") or ""
            self.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
            self.note = EMPTY_NOTE if data.get("empty") else UNCHANGED_NOTE if data.get("unchanged") else ""
        if isinstance(data.get("results"), list):
            self.results = [r for r in data["results"] if isinstance(r, dict) and isinstance(r.get("key"), str)]
        if isinstance(data.get("approvals"), list):
            self.approvals = [q for q in data["approvals"] if isinstance(q, dict) and isinstance(q.get("key"), str)]

    def pending(self) -> list[dict[str, Any]]:
        """The actions that wait for the user's Approve or Reject."""
        return [q for q in self.approvals if q.get("decision") is None]


class Conversation:
    """The entries shown (at most `limit`), the cursor to resume following from, the LLM status."""

    def __init__(self, limit: int = 200, on_change: Callable[[], None] = lambda: None):
        self.limit, self.on_change = limit, on_change
        self.entries: list[Entry] = []
        self.cursor: str | None = None
        self.status: dict[str, Any] = {}
        self.structure = 0  # bumped when entries come or go (the screen reconciles its widgets)
        self.dirty: set[str] = set()  # ids of messages with something to draw
        self.changed_status = True

    def by_key(self, key: int) -> Entry | None:
        i = bisect.bisect_left(self.entries, key, key=lambda e: e.key)
        return self.entries[i] if i < len(self.entries) and self.entries[i].key == key else None

    def messages(self) -> dict[str, MessageState]:
        found = {}
        for entry in self.entries:
            for message in (entry.message, entry.thinking):
                if message is not None:
                    found[message.id] = message
        return found

    def answering(self) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.type == ANSWER and e.status == "generating"), None)

    def retryable(self) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.type == ANSWER and e.status in RETRYABLE), None)

    def pending_approval(self) -> dict[str, Any] | None:
        """The oldest action of the newest answer that waits for a decision."""
        return next((e.pending()[0] for e in reversed(self.entries) if e.type == ANSWER and e.pending()), None)

    def undoable(self) -> dict[str, Any] | None:
        """The newest action that Undo can take back."""
        for entry in reversed(self.entries):
            found = [r for r in entry.results if r.get("undoable")]
            if entry.type == ANSWER and found:
                return found[-1]
        return None

    def set_undone(self, key: str) -> None:
        """An action was undone (a chat.undo event)."""
        for entry in self.entries:
            for result in entry.results:
                if result.get("key") == key:
                    result.update(undone=True, undoable=False)
                    self._touch(entry.message)
                    return

    def set_approval(self, question: dict[str, Any]) -> None:
        """An action asked or decided (a chat.approval event)."""
        for entry in self.entries:
            if entry.message is not None and entry.message.id == question.get("answer_id"):
                entry.approvals = [q for q in entry.approvals if q.get("key") != question.get("key")] + [question]
                entry.approvals.sort(key=lambda q: q["key"])
                self._touch(entry.message)
                return

    def last_answer(self) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.type == ANSWER), None)

    # -- changes, from the conversation's event stream ------------------------------------------------------

    def reset(self, body: dict[str, Any]) -> None:
        self.entries = []
        for item in body.get("entries", []):
            self._insert(Entry.from_json(item))
        self.set_status(body.get("status") or {})
        self._changed()

    def add(self, item: dict[str, Any]) -> Entry:
        entry = Entry.from_json(item)
        if self.by_key(entry.key) is None:
            self._insert(entry)
            self._changed()
        return entry

    def set_answer_status(self, key: int, status: str, data: dict[str, Any] | None = None) -> Entry | None:
        entry = self.by_key(key)
        if entry is not None:
            entry.status = status
            entry.set_outcome(data or {})
            self._touch(entry.message)
        return entry

    def set_thinking(self, key: int, thinking: dict[str, Any] | None) -> Entry | None:
        entry = self.by_key(key)
        if entry is not None and entry.thinking is None and thinking:
            entry.thinking = MessageState.from_json(thinking)
            self._changed()
        return entry

    def set_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.changed_status = True
        self.on_change()

    def touch(self, message: MessageState) -> None:
        self._touch(message)

    def _touch(self, message: MessageState | None) -> None:
        if message is not None:
            self.dirty.add(message.id)
            self.on_change()

    def _insert(self, entry: Entry) -> None:
        bisect.insort(self.entries, entry, key=lambda e: e.key)
        if len(self.entries) > self.limit:
            del self.entries[:len(self.entries) - self.limit]
        for message in (entry.message, entry.thinking):
            if message is not None:
                self.dirty.add(message.id)

    def _changed(self) -> None:
        self.structure += 1
        self.on_change()
