"""What the LLM is sent: the layered system prompt, then the conversation before the answer (fitted to the
model's window by `window.py`).

Layers: the base prompt (QUANDA_SYSTEM_PROMPT_FILE replaces it), each plugin's text, the command syntax of
every plugin's commands (or, when they are offered as native tools, one line saying to call them), the
conversation's own system prompt (its settings), then each plugin's live state (e.g. the todo list), which
is bounded to its share of the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quanda.commands import describe
from quanda.context import Handle
from quanda.core import QuandaError

from . import conversation

HISTORY_ENTRIES = 200  # the most a prompt looks back; the window usually keeps fewer (see window.py)
BASE_PROMPT = ("You are the assistant inside Quanda, a chat beside the user's app (its parts are described below). "
               "You see the user's actions as [UI event] lines; when they press Poke, react briefly to what they just "
               "did. Answer briefly, in Markdown.")


TOOLS_PROMPT = ("To change the user's data, call the tools you are given, one call per change. Each call runs "
                "once, and its result comes back to you before you go on.")
OWN_PROMPT = "Instructions for this conversation:\n"


@dataclass
class Turn:
    """One message of the conversation before the answer, and the entry it comes from."""

    key: str
    is_message: bool  # a question or an answer (not an ambient event)
    message: dict


async def system_layers(h: Handle, tools_offered: bool = False, own: str = "") -> tuple[str, list[str]]:
    """(the fixed layers, joined; each plugin's live state). With tools offered, the commands are described by
    the tools themselves and the prompt only says to use them; without, it teaches the JSON commands' syntax.
    `own`: the conversation's system prompt."""
    settings, plugins = h.settings, h.ctx.plugins
    base = Path(settings.system_prompt_file).read_text() if settings.system_prompt_file else BASE_PROMPT
    layers = [base] + [p.system_prompt for p in plugins if p.system_prompt]
    specs = [spec for p in plugins for spec in p.commands]
    if specs:
        layers.append(TOOLS_PROMPT if tools_offered else describe(specs))
    if own.strip():
        layers.append(OWN_PROMPT + own.strip())
    states = [await p.prompt_context(h) for p in plugins if p.prompt_context is not None]
    return "\n\n".join(layers), states


async def system_prompt(h: Handle, tools_offered: bool = False, own: str = "") -> str:
    """The whole system prompt, unbounded (what `window.fit` starts from)."""
    fixed, states = await system_layers(h, tools_offered, own)
    return "\n\n".join([fixed, *states])


async def history(h: Handle, answer_id: str) -> list[Turn]:
    """The conversation before `answer_id`, oldest first (the last HISTORY_ENTRIES entries at most)."""
    turns: list[Turn] = []
    for key, entry in await conversation.entries(h.store, h.owner, limit=HISTORY_ENTRIES):
        if entry.get("message_id") == answer_id:
            break
        if entry["type"] == "event":
            turns.append(Turn(key, False, {"role": "user", "content": f"[UI event] {entry['text']}"}))
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
        except QuandaError:
            continue
        if record.content:
            role = "user" if entry["type"] == "q" else "assistant"
            turns.append(Turn(key, True, {"role": role, "content": record.content}))
    return turns
