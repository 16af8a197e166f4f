"""Versions of an answer: Regenerate asks again into a new version; the bubble switches between them (‹ 2/3 ›).

An answer entry holds the version on screen at its top level (`message_id`, `status`, `reason`, `usage`,
`model`, `thinking_id`, …: what every other part of the chat reads, and what the LLM sees) and, once
regenerated, every version in `versions` (a list of the same fields) with `shown`, the index of the one on
screen. The top level is the truth for the version shown; switching saves it into its slot first. Only
the last answer of the conversation can be regenerated, and not while an answer is being written; an
unfinished answer (stopped, failed, cut, interrupted) is sealed as it is when it becomes a previous version,
its outcome kept in its slot. Switching is refused while an answer is being written. Either makes every tab
redraw the conversation, and followers of the HTTP API get a new snapshot (the conversation's revision).
"""

from __future__ import annotations

from typing import Any

from quanda.core import QuandaError, QuandaMessage, QuandaWriter
from quanda.context import ClientError, Handle

from . import answers, conversation

FIELDS = ("message_id", "status", "reason", "usage", "model", "thinking_id", "commands", "seen_from", "dropped")
MAX_VERSIONS = 20


def slot(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry.get(name) for name in FIELDS}


async def _last_answer(h: Handle, message_id: object) -> tuple[str, dict[str, Any]]:
    record = await answers.owned_answer(h, message_id)
    live = await conversation.entries(h.store, h.owner, limit=50)
    answers_here = [(key, entry) for key, entry in live if entry["type"] == answers.ROLE]
    if not answers_here or answers_here[-1][1].get("message_id") != record.id:
        raise ClientError("only the last answer of the conversation can be regenerated or switched")
    for _key, entry in answers_here[-3:]:
        if entry.get("status") == "generating" and await h.job_running(entry["message_id"]):
            raise ClientError("an answer is still being written: wait for it or press Stop")
    return answers_here[-1]


async def regenerate(h: Handle, message_id: object) -> str:
    """A new version of the last answer, generated in the background; returns its message id."""
    key, entry = await _last_answer(h, message_id)
    versions = list(entry.get("versions") or [slot(entry)])
    if len(versions) >= MAX_VERSIONS:
        raise ClientError(f"this answer has {MAX_VERSIONS} versions already; ask a new question instead")
    try:
        record = await h.store.get_message(entry["message_id"])
        if not record.immutable:  # stopped, failed, cut or interrupted: final as it is, a previous version now
            await QuandaWriter(QuandaMessage(h.store, record)).make_immutable()
    except QuandaError as exc:
        raise ClientError("the answer could not be sealed; try again") from exc
    versions[int(entry.get("shown", 0))] = slot(entry)
    model = await conversation_model(h, entry)
    answer = await QuandaMessage.create(h.store, role=answers.ROLE)
    await h.own(answer.id, answers.ROLE)
    fresh = {name: None for name in FIELDS} | {"message_id": answer.id, "status": "generating", "model": model}
    versions.append(fresh)
    await h.store.put_record(conversation.KIND, key, {**entry, **fresh, "versions": versions,
                                                      "shown": len(versions) - 1})
    await conversation.bump_revision(h.store, h.owner)
    await h.start_job(answers.ROLE, answer.id, answers.generate(h, key, answer.id, model))
    await h.publish("chat.switched")  # (actions.SWITCHED: every tab redraws the conversation)
    return answer.id


async def switch(h: Handle, message_id: object, to: object) -> None:
    """Show version `to` (0-based) of the last answer."""
    key, entry = await _last_answer(h, message_id)
    versions = list(entry.get("versions") or [])
    if isinstance(to, str) and to.isdigit():
        to = int(to)
    if not isinstance(to, int) or isinstance(to, bool) or not 0 <= to < len(versions):
        raise ClientError("there is no such version")
    shown = int(entry.get("shown", 0))
    if to == shown:
        return
    versions[shown] = slot(entry)
    await h.store.put_record(conversation.KIND, key, {**entry, **versions[to], "versions": versions, "shown": to})
    await conversation.bump_revision(h.store, h.owner)
    await h.publish("chat.switched")


async def conversation_model(h: Handle, entry: dict[str, Any]) -> str:
    """The model for a new version: the conversation's, else the answer's, if the server has it."""
    wanted = (await conversation.settings_of(h.store, h.owner)).get("model") or entry.get("model")
    return (await answers.llm_status(h).choose(wanted))[0]
