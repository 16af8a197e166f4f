"""Undo: an action the LLM ran (a command or a tool call, recorded by its claim) taken back, exactly once.

A change of records is undone by putting back each record its ops touched as it was just before (the claim
keeps them, `commands.undo_record`) — but only when every one of them is still as the change left it:
otherwise the user (or another action) changed it since, and the Undo is refused with that reason rather
than overwrite the newer data. The Undo is claimed under the action's own key (kind "undo",
insert-if-absent) in the same unit as the restored records, so two tabs or two servers pressing it at once
undo once. The model is told as an ambient event ("The user undid: …"); the plugin's `undo_facts` redraw
the pages. A change marked not undoable offers none. A host's action (its effect is outside the store) is undone by the
function it declares (`@action(undo=…)`): claimed first, so it runs once; it refuses (ClientError) when the
data changed since, and that releases the claim; without one, it offers no Undo.
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
        mark = await h.store.get_record(KIND, key)  # "undoing": a host's undo under way (or cut by a crash)
        undone = mark is not None and mark.get("state", "done") == "done"
        result = {"key": key, "text": claim["result"], "undone": undone,
                  "undoable": bool(claim.get("undo") or _effect_undo(h, claim)) and mark is None,
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


def _spec_of(h: Handle, claim: dict):
    command = command_of(claim)
    return command_specs(h.ctx.plugins).get((command.get("target"), command.get("action")))


def _effect_undo(h: Handle, claim: dict):
    """A host's action's own undo, when it declared one."""
    spec = _spec_of(h, claim) if claim.get("effect") else None
    return spec.undo if spec is not None else None


async def undo(h: Handle, key: object) -> str:
    """Take the action back (once); ClientError saying why not."""
    claim = await _claim_of(h, key)
    if _effect_undo(h, claim) is not None:
        return await _undo_effect(h, key, claim)
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


async def _undo_effect(h: Handle, key: str, claim: dict) -> str:
    """A host's action undone by its own function: claimed first ("undoing"), so it runs once; a refusal
    (ClientError: the data changed since) releases the claim, and says why."""
    if not await h.store.insert_record(KIND, key, {"owner": h.owner, "at": time.time(), "state": "undoing"}):
        raise ClientError("that action was undone already")
    try:
        said = await _effect_undo(h, claim)(h, command_of(claim).get("args") or {}, key, claim["result"])
    except ClientError as exc:
        await h.store.delete_record(KIND, key)
        raise ClientError(f"Undo refused: {exc}") from None
    await h.store.put_record(KIND, key, {"owner": h.owner, "at": time.time(), "state": "done"})
    for topic, fact in claim.get("facts") or []:
        await h.publish(topic, **fact)  # the host's live parts redraw
    text = f"The user undid: {claim['result']} ({said})"
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
