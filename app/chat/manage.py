"""Conversations managed: rename, delete (with every message and record of theirs, in every store), search by
text, and a conversation's own settings (model, system prompt, temperature, context size).

Deleting removes the conversation's record, its entries, the messages they name (questions, every version of
every answer, thinking), their ownership and tool-round records. The current conversation cannot be deleted
while an answer is being written; deleting it makes the most recent other one current (or a new one).
"""

from __future__ import annotations

import math
from typing import Any

from quanda.components import ids
from quanda.components.answer import ConversationSettings
from quanda.components.conversations import ConversationView, SearchResults
from quanda.core import QuandaError
from quanda.context import ClientError, Handle
from quanda.notices import near

from . import actions, conversation

TITLE_CHARS = conversation.TITLE_CHARS
SEARCH_RESULTS = 30
SNIPPET_CHARS = 80
SYSTEM_PROMPT_CHARS = 8000


def title_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ClientError("type a title")
    title = " ".join(value.split())
    if len(title) > TITLE_CHARS:
        raise ClientError(f"a title has at most {TITLE_CHARS} characters")
    return title


async def rename(h: Handle, cid: object, title: object) -> None:
    found = await conversation.conversation(h.store, h.owner, cid)
    if found is None:
        raise ClientError("there is no such conversation")
    await h.store.put_record(conversation.CONV_KIND, f"{h.owner}:{found['cid']}", {**found, "title": title_text(title)})


def message_ids(entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every message an entry names: the message, every version, their thinking."""
    found: list[str] = []
    for _key, entry in entries:
        for each in [entry, *(entry.get("versions") or [])]:
            found += [each[k] for k in ("message_id", "thinking_id") if isinstance(each.get(k), str)]
    return list(dict.fromkeys(found))


async def delete(h: Handle, cid: str) -> int:
    """Delete one of the owner's conversations (the caller checked nothing is being written in it); returns how
    many messages went with it."""
    found = await conversation.conversation(h.store, h.owner, cid)
    if found is None:
        raise ClientError("there is no such conversation")
    entries = await conversation.entries(h.store, h.owner, cid=found["cid"], superseded=True)
    ids = message_ids(entries)
    if await conversation.current(h.store, h.owner) == found["cid"]:
        others = [c for c in await conversation.conversations(h.store, h.owner) if c["cid"] != found["cid"]]
        if others:
            await conversation.switch_to(h.store, h.owner, others[0]["cid"])
        else:
            await conversation.start_new(h.store, h.owner)
    ops: list = [("delete", conversation.KIND, key, None) for key, _ in entries]
    for message_id in ids:
        ops.append(("delete", "owner", message_id, None))
        for kind in ("tool_round", "command"):  # its tool rounds, its commands' claims and results
            ops += [("delete", kind, key, None) for key, _ in await h.store.list_records(kind, f"{message_id}:")]
    ops.append(("delete", conversation.CONV_KIND, f"{h.owner}:{found['cid']}", None))
    await h.store.commit_records(ops)
    return await h.store.delete_messages(ids)


async def search(h: Handle, text: object) -> list[dict[str, Any]]:
    """The owner's conversations whose title or messages hold `text` (case-insensitive), most recent first:
    `{"cid", "title", "updated", "snippet"}` (at most SEARCH_RESULTS)."""
    if not isinstance(text, str) or not text.strip():
        return []
    needle = text.strip().lower()[:200]
    results = []
    for conv in await conversation.conversations(h.store, h.owner):
        snippet = conv.get("title", "") if needle in (conv.get("title") or "").lower() else None
        if snippet is None:
            for _key, entry in await conversation.entries(h.store, h.owner, cid=conv["cid"]):
                snippet = await _match(h, entry, needle)
                if snippet is not None:
                    break
        if snippet is not None:
            results.append({"cid": conv["cid"], "title": conv.get("title") or "Untitled conversation",
                            "updated": conv.get("updated"), "snippet": snippet})
            if len(results) >= SEARCH_RESULTS:
                break
    return results


async def _match(h: Handle, entry: dict[str, Any], needle: str) -> str | None:
    if entry.get("type") == "event":
        text = entry.get("text", "")
    else:
        try:
            text = (await h.store.get_message(entry["message_id"])).content
        except QuandaError:
            return None
    at = text.lower().find(needle)
    if at < 0:
        return None
    start = max(0, at - SNIPPET_CHARS // 2)
    snippet = " ".join(text[start:start + SNIPPET_CHARS + len(needle)].split())
    return ("…" if start else "") + snippet + ("…" if start + SNIPPET_CHARS + len(needle) < len(text) else "")


def settings_from(data: dict) -> dict[str, Any]:
    """A conversation's settings from a form or JSON (empty fields unset them); ClientError when invalid."""
    out: dict[str, Any] = {}
    if "system_prompt" in data:
        prompt = data["system_prompt"]
        if not isinstance(prompt, str) or len(prompt) > SYSTEM_PROMPT_CHARS:
            raise ClientError(f"the system prompt is text of at most {SYSTEM_PROMPT_CHARS:,} characters")
        out["system_prompt"] = prompt.strip() or None
    if "temperature" in data:
        out["temperature"] = _number(data["temperature"], "temperature", 0.0, 2.0, float)
    if "context" in data:
        out["context"] = _number(data["context"], "context size", 512, 1 << 20, int)
    if "model" in data:
        model = data["model"]
        if model is not None and (not isinstance(model, str) or len(model) > 400):
            raise ClientError("the model is a name")
        out["model"] = model or None
    return out


def _number(value: object, what: str, low: float, high: float, kind: type) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = kind(float(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise ClientError(f"the {what} is a number from {low:g} to {high:g} (or empty for the default)")
    return number


# -- what the user does (WebSocket actions) ---------------------------------------------------------------

@near(ids.CHAT_NOTICE)
async def on_rename(h: Handle, data: dict) -> None:
    await rename(h, data.get("cid"), data.get("title"))
    await h.publish(actions.CONVERSATIONS)


@near(ids.CHAT_NOTICE)
async def on_delete(h: Handle, data: dict) -> None:
    cid = data.get("cid")
    current = await conversation.current(h.store, h.owner)
    if cid == current and await actions.answering(h):
        raise ClientError(actions.STILL_WRITING + ", then delete the conversation")
    await delete(h, cid if isinstance(cid, str) else "")
    if cid == current:
        await h.publish(actions.SWITCHED)
    await h.publish(actions.CONVERSATIONS)
    await h.send(ConversationView(None, oob=True))


@near(ids.CHAT_NOTICE)
async def on_search(h: Handle, data: dict) -> None:
    text = data.get("q")
    await h.send(SearchResults(await search(h, text), text if isinstance(text, str) else "", oob=True))


@near(ids.CHAT_NOTICE)
async def on_settings(h: Handle, data: dict) -> None:
    """The current conversation's settings form (every tab shows them again)."""
    changes = settings_from({k: data[k] for k in ("system_prompt", "temperature", "context") if k in data})
    await conversation.set_settings(h.store, h.owner, await conversation.current(h.store, h.owner), **changes)
    await h.publish("chat.settings")


async def settings_view(h: Handle, fact: dict | None = None):
    return ConversationSettings(await conversation.settings_of(h.store, h.owner), oob=fact is not None)
