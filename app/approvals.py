"""Approvals: an action the LLM asked for that waits for the user's Approve or Reject before it runs.

An action requires approval when its `CommandSpec.approval` says so (True, or a predicate of the call's
arguments: "deletes more than one row"). When a tool call or a JSON command needs it and nothing has decided
it yet, the app records the question (kind "approval", keyed by the call's own key, the key its claim will
have) and runs nothing: a tool call's answer ends its job "waiting" (no job and no lease held while the user
thinks), a JSON command is left for later.

The decision is one record inserted under the same key (kind "approval_decision", the store's insert-if-absent:
the exactly-once primitive the claims use), so two tabs, two servers, a reload or a restart make one decision;
whoever inserts it carries it out: the answer is resumed (`answers.go_on`: its recorded rounds are replayed,
the approved call runs under its claim, a rejected one is told to the model as rejected, and the answer goes
on), a JSON command runs (or is refused) under its claim. The question is marked settled once its outcome is
written; until then the sweeper (every server, `sweep`) carries out decided questions left behind by a
crash, and turns questions older than QUANDA_APPROVAL_TIMEOUT_S into "expired" decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from quanda.commands import crash_point
from quanda.context import AppContext, ClientError, Handle
from quanda.core import QuandaError

log = logging.getLogger("quanda.approvals")

KIND = "approval"
DECISION = "approval_decision"
OPEN = "approval_open"  # the questions not settled yet, the only ones the sweeper reads (settled ones stay)
TOPIC = "chat.approval"
DECISIONS = ("approved", "rejected", "expired")
REFUSED = {"rejected": "the user rejected it", "expired": "it was not approved in time"}
SWEEP_S = 2.0


def needs_approval(spec: Any, args: dict) -> bool:
    """Whether this call of `spec` must wait for the user (a predicate that fails asks, to be safe)."""
    rule = getattr(spec, "approval", False)
    if callable(rule):
        try:
            return bool(rule(args))
        except Exception:  # noqa: BLE001 - a host's predicate bug must not let the call through unasked
            log.exception("approval predicate of %s failed: asking", getattr(spec, "tool_name", spec))
            return True
    return bool(rule)


async def ask(h: Handle, key: str, answer_id: str, source: str, what: str, command: dict | None) -> None:
    """Record the question (once) and show it in every tab."""
    question = {"owner": h.owner, "answer_id": answer_id, "source": source, "what": what, "command": command,
                "asked_at": time.time(), "settled": False}
    if await h.store.commit_records([("insert", KIND, key, question), ("put", OPEN, key, {"owner": h.owner})]):
        await h.publish(TOPIC, key=key, answer_id=answer_id)


async def decision(h: Handle, key: str) -> str | None:
    found = await h.store.get_record(DECISION, key)
    return found["decision"] if found else None


async def settle(h: Handle, key: str) -> None:
    """The question's outcome is written (its result line): nothing is left to carry out."""
    question = await h.store.get_record(KIND, key)
    if question is not None and not question.get("settled"):
        await h.store.commit_records([("put", KIND, key, {**question, "settled": True}), ("delete", OPEN, key, None)])
        await h.publish(TOPIC, key=key, answer_id=question["answer_id"])


async def of_answer(h: Handle, answer_id: str) -> list[dict]:
    """The answer's questions, in order, each with its decision (None while pending)."""
    return [await as_json(h, key, question)
            for key, question in await h.store.list_records(KIND, prefix=f"{answer_id}:")]


async def as_json(h: Handle, key: str, question: dict) -> dict:
    """A question as the page, the API, the terminal and the exports show it."""
    return {"key": key, "answer_id": question["answer_id"], "what": question["what"], "source": question["source"],
            "decision": await decision(h, key), "settled": question.get("settled", False)}


async def one(h: Handle, key: str) -> dict | None:
    """The owner's question under `key`, or None."""
    question = await h.store.get_record(KIND, key) if isinstance(key, str) and 0 < len(key) <= 200 else None
    return await as_json(h, key, question) if question and question.get("owner") == h.owner else None


async def decide(h: Handle, key: object, approve: bool) -> str:
    """Record the user's decision (once, whoever asks first) and carry it out; ClientError when there is no
    such question here or it was decided already."""
    if not isinstance(key, str) or not key or len(key) > 200:
        raise ClientError("no such approval here")
    try:
        question = await h.store.get_record(KIND, key)
    except QuandaError:
        raise ClientError("no such approval here") from None
    if question is None or question.get("owner") != h.owner:
        raise ClientError("no such approval here")
    wanted = "approved" if approve else "rejected"
    if not await h.store.insert_record(DECISION, key, {"decision": wanted, "at": time.time()}):
        raise ClientError(f"that action was already {await decision(h, key)}")
    await h.publish(TOPIC, key=key, answer_id=question["answer_id"])
    crash_point("after_decision")
    try:
        await carry_out(h, key, question)
    except ClientError:
        pass  # its answer is still ending its job: it resumes once that ends (or the sweeper does it)
    return wanted


async def carry_out(h: Handle, key: str, question: dict) -> None:
    """What a decision leads to: the answer goes on, or the JSON command runs (or is refused)."""
    from quanda.chat import answers  # the chat resumes answers; approvals are asked from inside it

    if question["source"] == "tool":
        await answers.go_on(h, question["answer_id"])
    else:
        await answers.run_approved_command(h, key, question)


async def sweep_once(ctx: AppContext) -> None:
    """Carry out decisions a crash left behind, and expire questions nobody answered in time."""
    horizon = time.time() - ctx.settings.approval_timeout_s
    for key, _open in await ctx.store.list_records(OPEN):
        question = await ctx.store.get_record(KIND, key)
        if question is None or question.get("settled"):
            await ctx.store.delete_record(OPEN, key)
            continue
        h = ctx.handle(question["owner"])
        if await decision(h, key) is None:
            if question["asked_at"] > horizon:
                continue
            if not await ctx.store.insert_record(DECISION, key, {"decision": "expired", "at": time.time()}):
                continue
            await h.publish(TOPIC, key=key, answer_id=question["answer_id"])
            await h.post_event(f"An action waited too long for approval and was not run: {question['what']}")
        try:
            await carry_out(h, key, question)
        except ClientError:
            pass  # its answer is being written (the decision is carried out there) or is gone


async def sweep(ctx: AppContext) -> None:
    """`sweep_once` at start and every SWEEP_S seconds (at most a tenth of the timeout), until the app stops."""
    every = min(SWEEP_S, max(ctx.settings.approval_timeout_s / 10, 0.05))
    while True:
        await asyncio.sleep(every)
        try:
            await sweep_once(ctx)
        except QuandaError as exc:
            if getattr(ctx.store, "_closed", False):
                return
            log.warning("sweeping approvals failed: %s", exc)
