"""Suggested prompts under the chat's input: up to three, from what the plugins see in their state (the todo
app: "3 todos are open: which should I do first?"), one click to ask. They follow the state: redrawn after
every ambient event (a change by hand says one, an action's result line is one), when an answer ends and when
the LLM's status changes; there are none while the LLM is unreachable (a click could not be answered).
"""

from __future__ import annotations

import logging

from quanda.components.chat import Suggestions
from quanda.context import Handle

from . import answers

log = logging.getLogger("quanda.chat.suggest")

MAX_SUGGESTIONS = 3
MAX_CHARS = 200


async def suggestions(h: Handle) -> list[str]:
    """The prompts to offer now (none when the LLM does not answer)."""
    if not (await answers.llm_status(h).check()).ok:
        return []
    found: list[str] = []
    for plugin in h.ctx.plugins:
        if plugin.suggest is None:
            continue
        try:
            offered = await plugin.suggest(h)
        except Exception:  # noqa: BLE001 - one plugin's bug takes only its own suggestions away
            log.exception("suggestions of plugin %s failed", plugin.name)
            continue
        for text in offered or []:
            if isinstance(text, str) and text.strip() and len(text) <= MAX_CHARS and text not in found:
                found.append(text.strip())
    return found[:MAX_SUGGESTIONS]


async def view(h: Handle, oob: bool = True):
    return Suggestions(await suggestions(h), oob=oob)
