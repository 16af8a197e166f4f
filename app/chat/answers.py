"""Answers: the LLM's stream written into a QuandaMessage, and what happens around it — Stop, Retry, failures,
the thinking section, the commands in a finished answer, recovery of answers whose server died.

The producer writes tokens and nothing else: the answer's text as chunks (the renderer closes open
structures itself), the reasoning into a separate `thinking` message, a warning when something goes wrong.

An answer is one or more rounds (`tools`): when the model calls native tools, they run exactly once, their
result lines are written into the answer and the model goes on in it.

When an answer becomes final: an answer the LLM finished normally is sealed (immutable) at once, then its
JSON commands run (none when it made native tool calls). A stopped, failed or interrupted answer stays
mutable, with its warning, so Retry can regenerate it in place (by `override`; the tool rounds it recorded
are kept, not asked or run again); it is sealed as it is when the next question is sent. Only answers
finished normally are `done`, and only their JSON commands run.
"""

from __future__ import annotations

import asyncio
import logging

from quanda import approvals, metrics
from quanda.commands import CLAIM_KIND, Change, command_specs, plan_command, run_answer_commands, run_once
from quanda.context import ClientError, Handle
from quanda.jobs import Job, JobBusy
from quanda.core import QuandaError, QuandaFencedError, QuandaMessage, QuandaWriter

from . import conversation, prompt, tools
from .requests import looks_like_request

log = logging.getLogger("quanda.chat")

ROLE = "assistant"
INTERRUPTED = ("interrupted: the server writing this answer stopped, or lost the database, before it was done. "
               "Press Retry to regenerate it.")
UNFINISHED = ("stopped", "failed", "cut", "interrupted")


def llm_status(h: Handle):
    return h.ctx.state["chat"].status


async def start_answer(h: Handle, model: str, setup=None) -> str:
    """A new answer at the end of the conversation, generated in the background; returns its id. `setup`
    (the answer's id) runs before anything else sees the answer (e.g. a client's tools, client_tools.py)."""
    answer = await QuandaMessage.create(h.store, role=ROLE)
    await h.own(answer.id, ROLE)
    if setup is not None:
        await setup(answer.id)
    key = await conversation.add_entry(h.store, h.owner, {"type": ROLE, "message_id": answer.id,
                                                          "status": "generating", "model": model})
    await h.publish("chat.message", message_id=answer.id, state="generating")
    await h.start_job(ROLE, answer.id, generate(h, key, answer.id, model))
    return answer.id


async def generate(h: Handle, key: str, answer_id: str, model: str, resume: bool = False) -> None:
    """Write the answer (its rounds of text and tool calls, see `tools`); with `resume` (Retry), first rebuild
    it from the rounds recorded, whose calls never run again."""
    writer = QuandaWriter(await QuandaMessage.from_id(h.store, answer_id))
    rounds = tools.RoundLoop(h, answer_id, model, writer, lambda: start_thinking(h, key, answer_id), key)
    status, problem = "failed", ""
    try:
        if resume:
            entry = await h.store.get_record(conversation.KIND, key) or {}
            await rounds.resume(entry.get("thinking_id"))
        status, problem = await rounds.run()
        await rounds.flush()  # every piece of text written before the seal or the warning
        if status == "done":
            if rounds.thinking is not None:
                await rounds.thinking.make_immutable()
            await writer.make_immutable()
        elif status == "waiting":
            await conversation.update_entry(h.store, key, approvals=True)  # its cards are read from then on
        else:
            await writer.warning(problem)
            log.warning("answer %s failed: %s", answer_id, problem)
    except asyncio.CancelledError:
        await asyncio.shield(stopped(h, key, answer_id, writer, rounds))
        raise
    except QuandaError as exc:
        status = "failed"
        log.error("answer %s could not be written: %s", answer_id, exc)
        problem = ("the answer could not be stored; Retry, and check the server's log if it "
                   "happens again")
        # unmarked, the answer is left to its lease: whichever server recovers the job marks it (Retry works)
        await writer.warning(problem)
    await finish(h, key, answer_id, writer, status, None, {**rounds.details(), "reason": problem})


async def stopped(h: Handle, key: str, answer_id: str, writer: QuandaWriter, rounds: "tools.RoundLoop") -> None:
    try:
        await rounds.flush()  # what the LLM sent before Stop is kept, before the warning
    except QuandaError as exc:
        log.warning("answer %s: text before Stop could not be written: %s", answer_id, exc)
    await finish(h, key, answer_id, writer, "stopped", "stopped", {**rounds.details(), "reason": "stopped"})


async def finish(h: Handle, key: str, answer_id: str, writer: QuandaWriter, status: str,
                 warning: str | None, details: dict | None = None) -> None:
    """The answer's outcome, kept in its entry (`status`, and in `details` its `reason`, `usage`, `model`): the
    seal clears the message's warning, the entry keeps why it ended."""
    if warning is not None:
        try:
            await writer.warning(warning)
        except QuandaFencedError:
            raise  # another server holds the answer now: nothing more is ours to write
        except QuandaError as exc:
            log.warning("could not mark answer %s %s: %s", answer_id, status, exc)
    metrics.ANSWERS.labels(status).inc()
    acted = status in ("done", "waiting") and await ran_actions(h, answer_id)
    entry = await conversation.update_entry(h.store, key, status=status,
                                            commands="pending" if status == "done" else None, **(details or {}),
                                            **({"acted": True} if acted else {}))
    if status == "done" and entry:
        llm_status(h).answered(entry.get("model"))
    if status == "done":  # commands run only in answers the LLM finished normally
        await run_commands(h, key, answer_id)
    if status == "waiting":  # a decision made while this job was ending could not resume it: do it now
        h.ctx.state["chat"].in_background(resume_if_decided(h, answer_id))
    await h.publish("chat.state", message_id=answer_id, state=status)  # last: Retry is offered once it is over
    h.ctx.state["chat"].in_background(refresh_badge(h))  # not part of the job: the LLM may be slow to list


async def ran_actions(h: Handle, answer_id: str) -> bool:
    """Whether the answer ran actions (their result cards show under it)."""
    return bool(await h.store.list_records(CLAIM_KIND, prefix=f"{answer_id}:", limit=1))


async def refresh_badge(h: Handle) -> None:
    await llm_status(h).check(fresh=True)
    await h.publish("chat.badge")


async def run_commands(h: Handle, key: str, answer_id: str) -> None:
    """The JSON commands in a finished answer's text; none in an answer that made native tool calls (those
    ran already, and a model that does both must not act twice). An answer to a request that ran no command
    and said nothing of one is marked `unchanged` (its footer says "Nothing was changed."); one that sent no
    text and did nothing is marked `empty` (its footer says so, rather than showing an empty bubble)."""
    record = await h.store.get_message(answer_id)
    acted = await tools.used_tools(h, answer_id)
    if not acted:
        acted = bool(await run_answer_commands(h, answer_id, record.content))
    asked = bool(await h.store.list_records(approvals.KIND, prefix=f"{answer_id}:", limit=1))
    ran = await ran_actions(h, answer_id)
    empty = not record.content.strip() and not acted and not asked and not ran
    unchanged = not acted and not asked and not empty and await asked_for_change(h, key)
    await conversation.update_entry(h.store, key, commands="done", **({"unchanged": True} if unchanged else {}),
                                    **({"empty": True} if empty else {}),
                                    **({"approvals": True} if asked else {}), **({"acted": True} if ran else {}))
    if asked or ran:
        await h.publish("chat.state", message_id=answer_id, state="done")


async def asked_for_change(h: Handle, key: str) -> bool:
    """Whether the question this answer answers (the entry right before it; none for a Poke) asked for one."""
    found = await conversation.entries(h.store, h.owner, limit=8)
    at = next((i for i, (k, _) in enumerate(found) if k == key), None)
    if not at or found[at - 1][1].get("type") != "q":
        return False
    try:
        question = await h.store.get_message(found[at - 1][1]["message_id"])
    except QuandaError:
        return False
    specs = command_specs(h.ctx.plugins)
    return looks_like_request(question.content, {a for _, a in specs}, {t for t, _ in specs})


async def start_thinking(h: Handle, key: str, answer_id: str) -> QuandaWriter:
    message = await QuandaMessage.create(h.store, role="thinking")
    await h.own(message.id, "thinking")
    await conversation.update_entry(h.store, key, thinking_id=message.id)
    await h.publish("chat.thinking", answer_id=answer_id, thinking_id=message.id)
    return QuandaWriter(message)


async def stop(h: Handle, message_id: object) -> None:
    record = await owned_answer(h, message_id)
    found = await conversation.find_answer(h.store, h.owner, record.id)
    ended = found is not None and found[1].get("status") != "generating"  # its job may still be winding up
    if ended or not await h.stop_job(record.id):
        raise ClientError("that answer is not being written")


async def retry(h: Handle, message_id: object) -> None:
    record = await owned_answer(h, message_id)
    if await h.job_running(record.id, settle_s=2.0):  # a job that just said "failed" may still be ending
        raise ClientError("that answer is still being written")
    found = await conversation.find_answer(h.store, h.owner, record.id)
    if found is None or record.immutable:
        raise ClientError("that answer is final and cannot be retried")
    key, entry = found
    writer = QuandaWriter(await QuandaMessage.from_id(h.store, record.id))
    await writer.warning("")  # the job rebuilds the content: empty, or the tool rounds that were recorded
    await conversation.update_entry(h.store, key, status="generating")
    await h.publish("chat.state", message_id=record.id, state="generating")
    model = entry.get("model") or (await llm_status(h).choose())[0]
    await h.start_job(ROLE, record.id, generate(h, key, record.id, model, resume=True))


async def go_on(h: Handle, answer_id: str) -> None:
    """Resume an answer that waits for an approval once it is decided (or a resumed one whose server died):
    its recorded rounds are replayed, the decided call is settled, and the model goes on. ClientError when
    its job is running (it settles the decision itself)."""
    found = await conversation.find_answer(h.store, h.owner, answer_id)
    record = await h.store.get_message(answer_id)
    if found is None or record.immutable:  # gone or final: nothing can run there any more
        for question in await approvals.of_answer(h, answer_id):
            await approvals.settle(h, question["key"])
        return
    if await h.job_running(answer_id):
        raise ClientError("that answer is being written")
    key, entry = found
    await conversation.update_entry(h.store, key, status="generating")
    await h.publish("chat.state", message_id=answer_id, state="generating")
    model = entry.get("model") or (await llm_status(h).choose())[0]
    try:
        await h.start_job(ROLE, answer_id, generate(h, key, answer_id, model, resume=True))
    except JobBusy:
        raise ClientError("that answer is being written") from None


async def resume_if_decided(h: Handle, answer_id: str) -> None:
    await h.ctx.jobs.settle(answer_id, h.settings.job_lease_s)
    try:
        questions = await approvals.of_answer(h, answer_id)
        if any(q["decision"] and not q["settled"] for q in questions):
            await go_on(h, answer_id)
    except (ClientError, QuandaError):
        pass  # resumed meanwhile, or the app is stopping: the sweeper does it


async def run_approved_command(h: Handle, key: str, question: dict) -> None:
    """A JSON command that waited for approval: run under its claim once approved, else refused (its ✓/✗
    line is posted once, as any command's)."""
    decided = await approvals.decision(h, key)
    command = question["command"]
    if decided == "approved":
        plan = await plan_command(h, command, "", command_specs(h.ctx.plugins))
    else:
        plan = Change.refused(f"command not run: {approvals.REFUSED.get(decided, 'not approved')}")
    await run_once(h, key, question["answer_id"], command, plan)
    found = await conversation.find_answer(h.store, h.owner, question["answer_id"])
    if found is not None and not found[1].get("acted"):
        await conversation.update_entry(h.store, found[0], acted=True)
    await approvals.settle(h, key)


async def owned_answer(h: Handle, message_id: object):
    try:
        return await h.owned(message_id, roles=(ROLE,))
    except QuandaError:
        raise ClientError("no such answer here") from None


async def seal_unfinished(h: Handle) -> None:
    """Stopped, failed and interrupted answers become final as they are when the next question comes."""
    for _key, entry in await conversation.entries(h.store, h.owner, limit=prompt.HISTORY_ENTRIES):
        if entry["type"] == ROLE and entry.get("status") in UNFINISHED:
            try:
                record = await h.store.get_message(entry["message_id"])
                if not record.immutable:
                    await QuandaWriter(QuandaMessage(h.store, record)).make_immutable()
                    await h.publish("chat.state", message_id=record.id, state="final")
            except QuandaError as exc:
                log.warning("could not seal answer %s: %s", entry.get("message_id"), exc)


async def recover(h: Handle, job: Job) -> None:
    """An answer whose server died: mark it interrupted (Retry works), or, if it was finished and sealed,
    run what is left of its commands."""
    record = await h.store.get_message(job.message_id)
    found = await conversation.find_answer(h.store, h.owner, record.id)
    if not record.immutable and found and any(not q["settled"] for q in await approvals.of_answer(h, record.id)):
        # it waits for a decision, or one was made: the sweeper resumes it (this recovery holds its lease)
        await conversation.update_entry(h.store, found[0], status="waiting", approvals=True)
        await h.publish("chat.state", message_id=record.id, state="waiting")
        return
    if record.immutable:  # sealed during generation means finished normally: finish its commands
        if found and found[1].get("status") in ("generating", "done") and found[1].get("commands") != "done":
            await conversation.update_entry(h.store, found[0], status="done")
            await h.publish("chat.state", message_id=record.id, state="done")
            await run_commands(h, found[0], record.id)
        return
    if record.warning:  # stopped or failed before its server died: nothing was running; say so if it could not
        if found and found[1].get("status") == "generating":
            await conversation.update_entry(h.store, found[0], status="failed")
            await h.publish("chat.state", message_id=record.id, state="failed")
        return
    await QuandaWriter(QuandaMessage(h.store, record)).warning(INTERRUPTED)
    metrics.ANSWERS.labels("interrupted").inc()
    if found:
        await conversation.update_entry(h.store, found[0], status="interrupted", reason=INTERRUPTED)
    await h.publish("chat.state", message_id=record.id, state="interrupted")
