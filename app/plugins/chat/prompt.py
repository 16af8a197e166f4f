"""What the LLM is sent: the layered system prompt, then the conversation before the answer (bounded).

Layers: the base prompt (QUANDA_SYSTEM_PROMPT_FILE replaces it), each plugin's text, the command syntax of
every plugin's commands (or, when they are offered as native tools, one line saying to call them), then each
plugin's live state (e.g. the todo list).
"""

from __future__ import annotations

from pathlib import Path

from quanda.commands import describe
from quanda.plugins import Handle
from quanda.core import QuandaError

from . import conversation

HISTORY_ENTRIES = 60
HISTORY_CHARS = 24_000
BASE_PROMPT = ("You are the assistant inside Quanda, a local app with a todo list and a stream simulator. "
               "You see the user's actions as [UI event] lines; when they press Poke, react briefly to what they just "
               "did. Answer briefly, in Markdown.")


TOOLS_PROMPT = ("To change the user's data, call the tools you are given, one call per change. Each call runs "
                "once, and its result comes back to you before you go on.")


async def system_prompt(h: Handle, tools_offered: bool = False) -> str:
    """The layered prompt. With tools offered, the commands are described by the tools themselves and the
    prompt only says to use them; without, it teaches the JSON commands' syntax."""
    settings, plugins = h.settings, h.ctx.plugins
    base = Path(settings.system_prompt_file).read_text() if settings.system_prompt_file else BASE_PROMPT
    layers = [base] + [p.system_prompt for p in plugins if p.system_prompt]
    specs = [spec for p in plugins for spec in p.commands]
    if specs:
        layers.append(TOOLS_PROMPT if tools_offered else describe(specs))
    for plugin in plugins:
        if plugin.prompt_context is not None:
            layers.append(await plugin.prompt_context(h))
    return "\n\n".join(layers)


async def history(h: Handle, answer_id: str) -> list[dict]:
    """The conversation before `answer_id`, oldest first, trimmed to HISTORY_CHARS."""
    turns: list[dict] = []
    for _key, entry in await conversation.entries(h.store, h.owner, limit=HISTORY_ENTRIES):
        if entry.get("message_id") == answer_id:
            break
        if entry["type"] == "event":
            turns.append({"role": "user", "content": f"[UI event] {entry['text']}"})
            continue
        try:
            record = await h.store.get_message(entry["message_id"])
        except QuandaError:
            continue
        if record.content:
            turns.append({"role": "user" if entry["type"] == "q" else "assistant", "content": record.content})
    while sum(len(m["content"]) for m in turns) > HISTORY_CHARS and len(turns) > 1:
        turns.pop(0)
    return turns


async def messages_for(h: Handle, answer_id: str, tools_offered: bool = False) -> list[dict]:
    return [{"role": "system", "content": await system_prompt(h, tools_offered)}, *await history(h, answer_id)]
