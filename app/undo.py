"""Undo: an action the LLM ran (a command or a tool call, recorded by its claim) taken back, exactly once.

A change of records is undone by putting back each record its ops touched as it was just before (the claim
keeps them, `commands.undo_record`) — but only when every one of them is still as the change left it:
otherwise the user (or another action) changed it since, and the Undo is refused with that reason rather
than overwrite the newer data. The Undo is claimed under the action's own key (kind "undo",
insert-if-absent) in the same unit as the restored records, so two tabs or two servers pressing it at once
undo once. The model is told as an ambient event ("The user undid: …"); the plugin's `undo_facts` redraw
the pages. A change marked not undoable, or a host's action (its effect is outside the store), offers none.
"""

from __future__ import annotations

import time

import logging

from quanda.commands import CLAIM_KIND, command_specs
from quanda.context import ClientError, Handle
from quanda.core import QuandaError

log = logging.getLogger("quanda.undo")

KIND = "undo"
TOPIC = "chat.undo"


async def results_of(h: Handle, answer_id: str) -> list[dict]:
    """The actions an answer ran, in order: what each did, whether it can be undone or was."""
    found = []
    for key, claim in await h.store.list_records(CLAIM_KIND, prefix=f"{answer_id}:"):
        if claim.get("state") != "done" or not claim.get("ok") or not (claim.get("ops") or claim.get("effect")):
            continue  # refused, or changed nothing (a listing): no card
        undone = await h.store.get_record(KIND, key) is not None
        result = {"key": key, "text": claim["result"], "undone": undone,
                  "undoable": bool(claim.get("undo")) and not undone,
                  "args": command_of(claim).get("args") or {}, "before": claim.get("before"),
                  "after": claim.get("after")}
        result["view"] = view_of(h, claim, result)
        found.append(result)
    return found


def command_of(claim: dict) -> dict:
    """The JSON command a claim ran (a tool call's claim holds it inside the call's record)."""
    command = claim.get("command") or {}
    return command.get("command") or {} if "tool" in command else command


def view_of(h: Handle, claim: dict, result: dict):
    """The component the action's plugin (or host) gives for its result, or None (its text shows)."""
    command = command_of(claim)
    spec = command_specs(h.ctx.plugins).get((command.get("target"), command.get("action")))
    if spec is None or spec.result_view is None:
        return None
    try:
        return spec.result_view({k: result[k] for k in ("text", "args", "before", "after", "undone")})
    except Exception:  # noqa: BLE001 - a plugin's view bug shows the text instead
        log.exception("the result view of %s failed", spec.tool_name)
        return None


async def undo(h: Handle, key: object) -> str:
    """Take the action back (once); ClientError saying why not."""
    claim = await _claim_of(h, key)
    if not claim.get("undo"):
        raise ClientError("that action cannot be undone")
    if await h.store.get_record(KIND, key) is not None:
        raise ClientError("that action was undone already")
    for record in claim["undo"]["records"]:
        if await h.store.get_record(record["kind"], record["key"]) != record["after"]:
            raise ClientError(f"Undo refused: the {record['kind']} it changed was changed since (nothing was "
                              "undone, so the newer change stays)")
    restore = [("delete", r["kind"], r["key"], None) if r["before"] is None else ("put", r["kind"], r["key"], r["before"])
               for r in claim["undo"]["records"]]
    if not await h.store.commit_records([("insert", KIND, key, {"owner": h.owner, "at": time.time()}), *restore]):
        raise ClientError("that action was undone already")
    for topic, fact in claim["undo"]["facts"]:
        await h.publish(topic, **fact)
    text = f"The user undid: {claim['result']}"
    await h.post_event(text, key=f"{key}:undo")
    await h.publish(TOPIC, key=key, answer_id=claim["message_id"])
    return text


async def _claim_of(h: Handle, key: object) -> dict:
    if not isinstance(key, str) or not key or len(key) > 200:
        raise ClientError("no such action here")
    try:
        claim = await h.store.get_record(CLAIM_KIND, key)
        if claim is None or claim.get("state") != "done" or not claim.get("ok"):
            raise ClientError("no such action here")
        await h.owned(claim["message_id"])
    except QuandaError:
        raise ClientError("no such action here") from None
    return claim
