"""Whether the LLM answers, and with which model: the status badge and the model picker's choices.

The default model is the configured one (QUANDA_LLM_MODEL or OLLAMA_MODEL), else the server's only or first
model. Each open tab asks for the status every QUANDA_LLM_CHECK_S seconds (static/chat.js); the server's
model list is fetched at most once per half of that, and again after every answer. A model that has just
answered is ready whatever the listing says (some servers list models under other names, or not at all);
the badge turns red again only when the server cannot be reached.

While an answer streams from a server that serves one request at a time (on this app server or another one
sharing the database, see `turns`), the server is not asked: it would end that answer. The status then says
it is busy answering, with the models it listed last.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from quanda.llm import LLMBusy, LLMUnavailable, pick_default_model

LIST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Status:
    ok: bool
    text: str
    model: str  # the default model
    models: list[str] = field(default_factory=list)
    busy: bool = False  # answering, and serving one request at a time: not asked now


class LLMStatus:
    def __init__(self, llm, configured_model: str, check_s: float = 15.0, elsewhere=None):
        self.llm, self.configured = llm, configured_model
        self.ttl_s = max(check_s / 2, 0.1)
        self._last: tuple[float, Status] | None = None
        self._answered: set[str] = set()  # models that answered since the server was last unreachable
        self._elsewhere = elsewhere  # async () -> bool: another app server's answer holds the LLM (turns.py)
        self._known: Status | None = None  # the last status the server itself gave

    def _busy(self) -> Status:
        last = self._known
        model = last.model if last else self.configured
        models = last.models if last else []
        return Status(True, f"LLM busy answering{f' ({model})' if model else ''}: it serves one request at a "
                            "time, so it is not asked until the answer ends", model, models, busy=True)

    async def check(self, fresh: bool = False) -> Status:
        if not fresh and self._last and time.monotonic() - self._last[0] < self.ttl_s:
            return self._last[1]
        try:
            if self._elsewhere is not None and await self._elsewhere():
                raise LLMBusy("answering for another app server")
            models = await asyncio.wait_for(self.llm.list_models(), LIST_TIMEOUT_S)
        except LLMBusy:
            status = self._busy()
            self._last = (time.monotonic(), status)
            return status
        except LLMUnavailable as exc:
            self._answered.clear()
            status = Status(False, str(exc), self.configured)
        except asyncio.TimeoutError:
            self._answered.clear()
            status = Status(False, f"the LLM server did not list its models within {LIST_TIMEOUT_S:g} s: "
                                   f"{self.llm.unreachable_hint(self.configured)}", self.configured)
        else:
            model = pick_default_model(self.configured, models)
            ok, text = self.llm.model_status(model, models)
            if not ok and model in self._answered:
                ok, text = True, f"LLM ready: {model}"
            elif not ok and model:
                text += ". " + self.llm.missing_model_hint(model)
            status = Status(ok, text, model, models)
        self._last = (time.monotonic(), status)
        self._known = status
        return status

    def answered(self, model: str | None) -> None:
        """`model` just finished an answer: it is there, whatever the listing says."""
        if model:
            self._answered.add(model)

    async def choose(self, wanted: object = None) -> tuple[str, list[str]]:
        """(the model to use, the models to offer): `wanted` if the server has it, else the default. A status
        without a usable model is checked again first: the LLM server may have come up since (else a question
        sent right after starting Ollama went out with no model and failed)."""
        status = await self.check()
        if not status.ok or (not status.model and not status.busy):
            status = await self.check(fresh=True)
        if isinstance(wanted, str) and wanted in status.models:
            return wanted, status.models
        return status.model, status.models or ([status.model] if status.model else [])
