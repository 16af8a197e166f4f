"""Errors shown next to what caused them, for the built-in plugins' WebSocket actions.

`@near(notice_id)` wraps an action: a refusal (`ClientError`) or a failure of the core (`QuandaError`) is
shown in the notice element `notice_id` beside the form that sent it (app/components/notice.py) instead of
at the top of the page, and a success empties that notice, since what it said is no longer true.
"""

from __future__ import annotations

import functools
import logging
from typing import Awaitable, Callable

from quanda.components.notice import FieldNotice
from quanda.context import ClientError, Handle
from quanda.core import QuandaError, QuandaStoreError

log = logging.getLogger("quanda.plugins")

Action = Callable[[Handle, dict], Awaitable[None]]


def problem_text(exc: Exception) -> str:
    if isinstance(exc, QuandaStoreError):
        return "the database is unavailable right now; try again in a moment"
    return str(exc)


def near(notice_id: str, clear_on_success: bool = True) -> Callable[[Action], Action]:
    def wrap(action: Action) -> Action:
        @functools.wraps(action)
        async def run(h: Handle, data: dict) -> None:
            try:
                await action(h, data)
            except (ClientError, QuandaError) as exc:
                log.info("refused %s (%s): %s", action.__name__, h.owner[:8], exc)
                await h.send(FieldNotice(notice_id, problem_text(exc)))
                return
            if clear_on_success:
                await h.send(FieldNotice(notice_id))
        return run
    return wrap
