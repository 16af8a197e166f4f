"""The chat: drafts, questions, answers streamed from the LLM into QuandaMessages, Stop, Retry, failures.

When an answer becomes final: an answer the LLM finished normally is sealed (immutable) at once. A stopped,
failed or interrupted answer stays mutable, with its warning, so Retry can regenerate it in place (by
`override`); it is sealed as it is when the next question is sent. Only answers finished normally are
`done` (the status that lets plugins act on them, e.g. run the JSON commands in them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from pathlib import Path
from typing import Any

from app import conversation
from app.commands import describe, run_answer_commands
from app.components.chat import (AppendToList, ChatInput, ChatMessage, DraftPreview, EventLine, MessageActions,
                                 StatusBadge, ThinkingSection)
from app.llm import COMPLETED, DELTA, ERROR, REASONING, TOOL_CALL, LLMUnavailable
from app.quanda import QuandaError, QuandaMessage, QuandaWriter
from app.render import closing_suffix, render_markdown
from app.ws import ClientError, Connection

log = logging.getLogger("quanda.chat")

MAX_QUESTION_CHARS = 32_000
HISTORY_ENTRIES = 60
HISTORY_CHARS = 24_000
STATUS_TTL_S = 10.0
INTERRUPTED = "interrupted: the server stopped while writing this answer. Press Retry to regenerate it."
BASE_PROMPT = ("You are the assistant inside Quanda, a local app with a todo list and a stream simulator. "
               "You see the user's actions as [UI event] lines; when they press Poke, react briefly to what they just "
               "did. Answer briefly, in Markdown.")


class ChatService:
    def __init__(self, ctx: Any):
        self.ctx = ctx
        self._status: tuple[float, bool, str, list[str]] | None = None


    # -- the LLM's reachability, shown as a badge ----------------------------------------------------------

    async def status(self, fresh: bool = False) -> tuple[bool, str, list[str]]:
        if not fresh and self._status and time.monotonic() - self._status[0] < STATUS_TTL_S:
            return self._status[1:]
        model = self.ctx.settings.default_model
        try:
            models = await asyncio.wait_for(self.ctx.llm.list_models(), 5)
        except (LLMUnavailable, asyncio.TimeoutError) as exc:
            ok, text, models = False, str(exc) or "LLM server not reachable", []
            if "ollama serve" not in text:
                text += (" — start Ollama with `ollama serve` and `ollama pull <model>`, or set QUANDA_LLM_URL")
        else:
            if model in models or f"{model}:latest" in models:
                ok, text = True, f"LLM ready: {model}"
            elif models:
                ok, text = False, (f"model '{model}' is not installed; pick one of {', '.join(models[:8])}"
                                   f" or run `ollama pull {model}`")
            else:
                ok, text = False, f"the LLM server has no models: run `ollama pull {model}`"
        self._status = (time.monotonic(), ok, text, models)
        return ok, text, models

    async def badge(self, fresh: bool = False, oob: bool = False):
        ok, text, _ = await self.status(fresh)
        return StatusBadge(ok, text, oob=oob)

    async def chat_input(self, sid: str, data: dict | None = None, oob: bool = False):
        model, models = await self._model_and_models(data or {})
        return ChatInput(model, models, await self._turn(sid), oob=oob)

    async def _turn(self, sid: str) -> int:
        return (await self.ctx.store.get_record("chat_turn", sid) or {"turn": 0})["turn"]

    # -- the conversation as the page shows it --------------------------------------------------------------

    async def history(self, sid: str) -> list:
        items = []
        for _key, entry in await conversation.entries(self.ctx.store, sid, limit=HISTORY_ENTRIES * 2):
            if entry["type"] == "event":
                items.append(EventLine(entry["text"]))
                continue
            try:
                record = await self.ctx.store.get_message(entry["message_id"])
                thinking = (await self.ctx.store.get_message(entry["thinking_id"])
                            if entry.get("thinking_id") else None)
            except QuandaError:
                continue
            state = entry.get("status", "final") if record.role == "assistant" else "final"
            if state == "generating" and record.id not in self.ctx.jobs:
                state = "interrupted"
            items.append(ChatMessage(record, state, thinking))
        return items

    # -- what the user does --------------------------------------------------------------------------------

    async def on_draft(self, conn: Connection, data: dict) -> None:
        text = _text(data)
        if str(data.get("turn", "")) != str(await self._turn(conn.sid)):
            return  # typed before the last Send, arriving after it
        draft = await self.ctx.store.get_record("draft", conn.sid)
        if draft is None:
            if not text:
                return
            message = await QuandaMessage.create(self.ctx.store, role="q")
            await self.ctx.own(conn.sid, message.id, "q")
            draft = {"message_id": message.id}
            await self.ctx.store.put_record("draft", conn.sid, draft)
        await QuandaWriter(await QuandaMessage.from_id(self.ctx.store, draft["message_id"])).override(text)
        await self.ctx.hub.broadcast(conn.sid, DraftPreview(render_markdown(text) if text else ""))

    async def on_send(self, conn: Connection, data: dict) -> None:
        sid, store = conn.sid, self.ctx.store
        poke = bool(data.get("poke"))
        text = _text(data)
        if not text and not poke:
            raise ClientError("type a question first")
        if any(job.get_name() == f"answer-{sid}" for job in self.ctx.jobs.values()):
            raise ClientError("an answer is still being written: wait for it or press Stop")
        await self._seal_unfinished(sid)
        await store.put_record("chat_turn", sid, {"turn": await self._turn(sid) + 1})
        fragments = [await self.chat_input(sid, data, oob=True), DraftPreview("")]
        if text:
            draft = await store.get_record("draft", sid)
            await store.delete_record("draft", sid)
            if draft is not None:
                question = await QuandaMessage.from_id(store, draft["message_id"])
            else:
                question = await QuandaMessage.create(store, role="q")
                await self.ctx.own(sid, question.id, "q")
            writer = QuandaWriter(question)
            if (await question.refresh()).content != text:
                await writer.override(text)
            await writer.make_immutable()
            await conversation.add_entry(store, sid, {"type": "q", "message_id": question.id})
            fragments.insert(0, AppendToList(ChatMessage(await store.get_message(question.id))))
        else:
            await conversation.add_entry(store, sid, {"type": "event", "text": "You pressed Poke."})
            fragments.insert(0, EventLine("You pressed Poke.", oob=True))
        await self.ctx.hub.broadcast(sid, *fragments)
        model = (await self._model_and_models(data))[0]
        await self.answer(sid, model)

    async def answer(self, sid: str, model: str | None = None) -> str:
        """Start an answer to the conversation so far; returns its message id."""
        store = self.ctx.store
        model = model or self.ctx.settings.default_model
        answer = await QuandaMessage.create(store, role="assistant")
        await self.ctx.own(sid, answer.id, "assistant")
        key = await conversation.add_entry(store, sid, {"type": "assistant", "message_id": answer.id,
                                                        "status": "generating", "model": model})
        await self.ctx.hub.broadcast(sid, AppendToList(ChatMessage(await store.get_message(answer.id), "generating")))
        self.ctx.start_job(answer.id, self.generate(sid, key, answer.id, model), name=f"answer-{sid}")
        return answer.id

    async def on_stop(self, conn: Connection, data: dict) -> None:
        message_id = await self._own_answer(conn.sid, data)
        job = self.ctx.jobs.get(message_id)
        if job is None:
            raise ClientError("that answer is not being written")
        job.cancel()

    async def on_retry(self, conn: Connection, data: dict) -> None:
        message_id = await self._own_answer(conn.sid, data)
        if message_id in self.ctx.jobs:
            raise ClientError("that answer is still being written")
        found = await conversation.find_answer(self.ctx.store, conn.sid, message_id)
        record = await self.ctx.store.get_message(message_id)
        if found is None or record.immutable:
            raise ClientError("that answer is final and cannot be retried")
        key, entry = found
        writer = QuandaWriter(await QuandaMessage.from_id(self.ctx.store, message_id))
        await writer.override("")
        await writer.warning("")
        if entry.get("thinking_id"):
            await QuandaWriter(await QuandaMessage.from_id(self.ctx.store, entry["thinking_id"])).override("")
        await conversation.update_entry(self.ctx.store, key, status="generating")
        await self.ctx.hub.broadcast(conn.sid, MessageActions(message_id, "generating", oob=True))
        self.ctx.start_job(message_id, self.generate(conn.sid, key, message_id,
                                                     entry.get("model") or self.ctx.settings.default_model),
                           name=f"answer-{conn.sid}")

    # -- generation ----------------------------------------------------------------------------------------

    async def answer_question(self, question, model: str | None, owner: str) -> str:
        """An answer to one question message on its own (the HTTP API), outside any conversation."""
        store = self.ctx.store
        answer = await QuandaMessage.create(store, role="assistant")
        sid = "api" if owner == "*" else owner
        await self.ctx.own(sid, answer.id, "assistant")
        messages = [{"role": "system", "content": BASE_PROMPT}, {"role": "user", "content": question.content}]
        self.ctx.start_job(answer.id, self.generate(sid, None, answer.id, model or self.ctx.settings.default_model,
                                                    messages))
        return answer.id

    async def generate(self, sid: str, key: str | None, answer_id: str, model: str,
                       messages: list[dict] | None = None) -> None:
        store = self.ctx.store
        writer = QuandaWriter(await QuandaMessage.from_id(store, answer_id))
        thinking: QuandaWriter | None = None
        content = ""
        status, problem = "failed", ""
        try:
            messages = messages or await self.prompt(sid, answer_id)
            async with aclosing(self.ctx.llm.stream_chat(messages, model)) as events:
                async for event in events:
                    if event.type == DELTA and event.text:
                        content += event.text
                        await writer.chunk(event.text, estimate=closing_suffix(content) or None)
                    elif event.type == REASONING and event.text:
                        if thinking is None:
                            thinking = await self._start_thinking(sid, key, answer_id)
                        await thinking.chunk(event.text)
                    elif event.type == TOOL_CALL:
                        await self.ctx.post_event(sid, f"The model asked for tool {event.data.get('name')!r}; "
                                                       "tool calls are not run.")
                    elif event.type == COMPLETED:
                        status = "done"
                    elif event.type == ERROR:
                        problem = event.text
            if status == "done":
                if thinking is not None:
                    await thinking.make_immutable()
                await writer.make_immutable()
            else:
                await writer.warning(problem or "the LLM stream ended without finishing")
                log.warning("answer %s failed: %s", answer_id, problem)
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(sid, key, answer_id, writer, "stopped", "stopped"))
            raise
        except QuandaError as exc:
            status = "failed"
            log.error("answer %s could not be written: %s", answer_id, exc)
            try:
                await writer.warning(f"the answer could not be stored: {exc}")
            except QuandaError:
                pass
        await self._finish(sid, key, answer_id, writer, status, None)

    async def _finish(self, sid: str, key: str | None, answer_id: str, writer: QuandaWriter, status: str,
                      warning: str | None) -> None:
        if warning is not None:
            try:
                await writer.warning(warning)
            except QuandaError as exc:
                log.warning("could not mark answer %s %s: %s", answer_id, status, exc)
        if key:
            await conversation.update_entry(self.ctx.store, key, status=status)
        fragments = [MessageActions(answer_id, status, oob=True)]
        if status == "failed":
            fragments.append(await self.badge(fresh=True, oob=True))
        await self.ctx.hub.broadcast(sid, *fragments)
        if status == "done" and key is not None:  # commands run only in answers the LLM finished normally
            record = await self.ctx.store.get_message(answer_id)
            await run_answer_commands(self.ctx, sid, answer_id, record.content)

    async def _start_thinking(self, sid: str, key: str, answer_id: str) -> QuandaWriter:
        message = await QuandaMessage.create(self.ctx.store, role="thinking")
        await self.ctx.own(sid, message.id, "thinking")
        await conversation.update_entry(self.ctx.store, key, thinking_id=message.id)
        await self.ctx.hub.broadcast(sid, ThinkingSection(answer_id, await self.ctx.store.get_message(message.id),
                                                          oob=True))
        return QuandaWriter(message)

    async def prompt(self, sid: str, answer_id: str) -> list[dict]:
        """The layered system prompt, then the conversation before this answer (bounded)."""
        settings = self.ctx.settings
        base = BASE_PROMPT
        if settings.system_prompt_file:
            base = Path(settings.system_prompt_file).read_text()
        layers = [base] + [p.system_prompt for p in self.ctx.plugins if p.system_prompt]
        specs = [spec for p in self.ctx.plugins for spec in p.commands]
        if specs:
            layers.append(describe(specs))
        for plugin in self.ctx.plugins:
            if plugin.prompt_context is not None:
                layers.append(await plugin.prompt_context(self.ctx, sid))
        history: list[dict] = []
        for _key, entry in await conversation.entries(self.ctx.store, sid, limit=HISTORY_ENTRIES):
            if entry.get("message_id") == answer_id:
                break
            if entry["type"] == "event":
                history.append({"role": "user", "content": f"[UI event] {entry['text']}"})
                continue
            try:
                record = await self.ctx.store.get_message(entry["message_id"])
            except QuandaError:
                continue
            if record.content:
                history.append({"role": "user" if entry["type"] == "q" else "assistant", "content": record.content})
        while sum(len(m["content"]) for m in history) > HISTORY_CHARS and len(history) > 1:
            history.pop(0)
        return [{"role": "system", "content": "\n\n".join(layers)}] + history

    # -- housekeeping --------------------------------------------------------------------------------------

    async def mark_interrupted(self) -> None:
        """Answers left mutable and unmarked by a server that died are marked interrupted (Retry works)."""
        for record in await self.ctx.store.select_messages(role="assistant", immutable=False):
            if record.id in self.ctx.jobs or record.warning:
                continue
            try:
                await QuandaWriter(QuandaMessage(self.ctx.store, record)).warning(INTERRUPTED)
                owner = await self.ctx.store.get_record("owner", record.id)
                found = owner and await conversation.find_answer(self.ctx.store, owner["sid"], record.id)
                if found:
                    await conversation.update_entry(self.ctx.store, found[0], status="interrupted")
            except QuandaError as exc:
                log.warning("could not mark answer %s interrupted: %s", record.id, exc)

    async def _seal_unfinished(self, sid: str) -> None:
        """Stopped, failed and interrupted answers become final as they are when the next question comes."""
        for _key, entry in await conversation.entries(self.ctx.store, sid, limit=HISTORY_ENTRIES):
            if entry["type"] == "assistant" and entry.get("status") in ("stopped", "failed", "interrupted"):
                try:
                    record = await self.ctx.store.get_message(entry["message_id"])
                    if not record.immutable:
                        await QuandaWriter(QuandaMessage(self.ctx.store, record)).make_immutable()
                        await self.ctx.hub.broadcast(sid, MessageActions(record.id, "final", oob=True))
                except QuandaError as exc:
                    log.warning("could not seal answer %s: %s", entry.get("message_id"), exc)

    async def _model_and_models(self, data: dict) -> tuple[str, list[str]]:
        _, _, models = await self.status()
        wanted = data.get("model")
        default = self.ctx.settings.default_model
        if isinstance(wanted, str) and wanted in models:
            return wanted, models
        if models and default not in models and f"{default}:latest" not in models:
            return models[0], models
        return default, models or [default]

    async def _own_answer(self, sid: str, data: dict) -> str:
        message_id = data.get("message_id")
        owner = await self.ctx.store.get_record("owner", message_id) if isinstance(message_id, str) else None
        if owner is None or owner.get("sid") != sid or owner.get("role") != "assistant":
            raise ClientError("no such answer in this session")
        return message_id


def _text(data: dict) -> str:
    text = data.get("text", "")
    if not isinstance(text, str):
        raise ClientError("text must be a string")
    if len(text) > MAX_QUESTION_CHARS:
        raise ClientError(f"the question is too long ({len(text):,} characters; at most {MAX_QUESTION_CHARS:,})")
    return text.strip()
