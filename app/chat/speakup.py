"""Speaking up: after ambient events, the assistant may answer on its own (opt-in per workspace), and a plugin
or a host may ask it to speak, with a reason the conversation shows (seed 001's `chatq`).

Limits, each tested: off unless the workspace turned it on (and a press turns it off again: silenced); at most
one unprompted answer per QUANDA_SPEAK_UP_EVENTS ambient events (an atomic counter per workspace) and per
QUANDA_SPEAK_UP_INTERVAL_S (a claim per workspace and interval, insert-if-absent, so two servers never both
speak; and no sooner than the interval after the last one); never while an answer is being written, while the
user types (a draft with text touched in the last TYPING_S seconds) or while the LLM is unreachable. The
assistant's own result lines (✓/✗) and its speaking up are not events that count.
"""

from __future__ import annotations

import time

from quanda.context import Handle

from . import answers, conversation, drafts

KIND = "speak_up"  # per workspace: {"on": bool, "last_at": when it last spoke unprompted}
CLAIM = "speak_up_once"
TOPIC = "chat.speak_up"
TYPING_S = 20.0
SPOKE = "The assistant speaks up: "


async def enabled(h: Handle) -> bool:
    return bool((await h.store.get_record(KIND, h.owner) or {}).get("on"))


async def set_enabled(h: Handle, on: bool) -> None:
    state = await h.store.get_record(KIND, h.owner) or {}
    await h.store.put_record(KIND, h.owner, {**state, "on": bool(on)})
    await h.publish(TOPIC, on=bool(on))


def counts(text: str) -> bool:
    """Whether an ambient event counts towards speaking up (not the assistant's own doing)."""
    return not text.startswith(("✓ ", "✗ ", SPOKE))


async def after_event(h: Handle, text: str) -> bool:
    """Maybe answer on its own after an ambient event; whether it did."""
    if not counts(text) or not await enabled(h):
        return False
    every = max(1, h.settings.speak_up_events)
    if await h.store.bump_counter(f"speak_up:{h.owner}") % every:
        return False
    return await speak(h, f"{every} thing{'s' if every > 1 else ''} happened since it last could", limited=True)


async def holding_back(h: Handle) -> str:
    """Why it must not speak now ("" when it may)."""
    if await answering(h):
        return "an answer is being written"
    found = await drafts.live(h)
    if found is not None and found[1].content.strip() and time.time() - found[1].updated_at < TYPING_S:
        return "the user is typing"
    if not (await answers.llm_status(h).check()).ok:
        return "the LLM is unreachable"
    return ""


async def answering(h: Handle) -> bool:
    for _key, entry in reversed(await conversation.entries(h.store, h.owner, limit=8)):
        if entry.get("type") == answers.ROLE and entry.get("status") == "generating":
            return await h.job_running(entry["message_id"])
    return False


async def speak(h: Handle, reason: str, limited: bool = False) -> bool:
    """Post the reason as an ambient event and start an answer; whether it did. `limited` (unprompted): at
    most once per interval, across servers."""
    if await holding_back(h):
        return False
    if limited:
        interval = h.settings.speak_up_interval_s
        now = time.time()
        state = await h.store.get_record(KIND, h.owner) or {}
        if now - state.get("last_at", 0) < interval:
            return False
        if interval > 0 and not await h.store.insert_record(CLAIM, f"{h.owner}:{int(now // interval)}", {"at": now}):
            return False
        await h.store.put_record(KIND, h.owner, {**state, "last_at": now})
    await answers.seal_unfinished(h)
    await h.post_event(SPOKE + reason)
    model = (await answers.llm_status(h).choose())[0]
    await answers.start_answer(h, model)
    return True
