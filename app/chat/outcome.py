"""An answer's outcome, from its conversation entry: it survives the seal.

The core's reducer clears a message's warning when it is sealed (right for the core: a sealed message is
final). The chat keeps how each answer ended in its entry instead — `status` (generating, done, stopped,
failed, cut, interrupted), `reason` (the warning it ended with), `usage`, `model` — so the bubble after a
reload, the read-only viewer, both exports, the HTTP API and the terminal client all say it.
"""

from __future__ import annotations

from typing import Any

from quanda.components.answer import AnswerInfo

from . import answers


def status_of(entry: dict[str, Any]) -> str:
    """The outcome ("final", written by older versions for a finished answer, is "done")."""
    status = entry.get("status") or "done"
    return "done" if status == "final" else status


def reason_of(entry: dict[str, Any], record) -> str:
    """Why it ended: the reason kept in the entry, else the message's warning while it still has one."""
    if entry.get("reason"):
        return entry["reason"]
    return (record.warning if record is not None else "") or ""


def info(entry: dict[str, Any], record, last: bool = False, running: bool = True) -> AnswerInfo:
    """What the views show of an answer (`running`: whether its job still runs, when it says generating)."""
    status = status_of(entry)
    if status == "generating" and not running:
        status = "interrupted"
    versions = entry.get("versions") or []
    return AnswerInfo(status=status, reason=reason_of(entry, record) if status in answers.UNFINISHED else "",
                      sealed=bool(record is not None and record.immutable), usage=entry.get("usage") or {},
                      version=int(entry.get("shown", 0)), versions=max(1, len(versions)), last=last,
                      unchanged=bool(entry.get("unchanged")) and status == "done",
                      empty=bool(entry.get("empty")) and status == "done")


def as_json(entry: dict[str, Any], record) -> dict[str, Any]:
    """The outcome fields of an answer in the HTTP API and the JSON export."""
    versions = entry.get("versions") or []
    done = status_of(entry) == "done"
    return {"outcome": status_of(entry),
            "reason": reason_of(entry, record) if status_of(entry) in answers.UNFINISHED else "",
            "unchanged": bool(entry.get("unchanged")) and done,  # it was asked for a change and ran none
            "empty": bool(entry.get("empty")) and done,  # the model sent no text and did nothing
            "usage": entry.get("usage") or None,
            "version": int(entry.get("shown", 0)) + 1, "versions": max(1, len(versions))}
