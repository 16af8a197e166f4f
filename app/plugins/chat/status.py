"""Whether the LLM answers, and with which model: the status badge and the model picker's choices.

The default model is the configured one (QUANDA_LLM_MODEL or OLLAMA_MODEL), else the server's only or first
model. Each open tab asks for the status every QUANDA_LLM_CHECK_S seconds (static/chat.js); the server's
model list is fetched at most once per half of that, and again after every answer. A model that has just
answered is ready whatever the listing says (some servers list models under other names, or not at all);
the badge turns red again only when the server cannot be reached.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from quanda.llm import LLMUnavailable, pick_default_model

LIST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Status:
    ok: bool
    text: str
    model: str  # the default model
    models: list[str] = field(default_factory=list)


class LLMStatus:
    def __init__(self, llm, configured_model: str, check_s: float = 15.0):
        self.llm, self.configured = llm, configured_model
        self.ttl_s = max(check_s / 2, 0.1)
        self._last: tuple[float, Status] | None = None
        self._answered: set[str] = set()  # models that answered since the server was last unreachable

    async def check(self, fresh: bool = False) -> Status:
        if not fresh and self._last and time.monotonic() - self._last[0] < self.ttl_s:
            return self._last[1]
        try:
            models = await asyncio.wait_for(self.llm.list_models(), LIST_TIMEOUT_S)
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
        if not status.ok or not status.model:
            status = await self.check(fresh=True)
        if isinstance(wanted, str) and wanted in status.models:
            return wanted, status.models
        return status.model, status.models or ([status.model] if status.model else [])
