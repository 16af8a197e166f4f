"""The conversation cursor (app/chat/timeline.py) on every backend: a diff from any cursor sends each
change once, including entries whose writers committed out of the order of their keys; what it cannot bring
up to date starts over with a snapshot; a cursor is self-contained and bounded."""

import time

import pytest

from quanda.config import Settings
from quanda.context import AppContext
from quanda.chat import conversation, timeline
from quanda.core import QuandaMessage, QuandaWriter


@pytest.fixture
def h(store):
    return AppContext(Settings(), store).handle("owner-a")


async def changes(h, view, limit=50):
    return [(name, data.get("message_id") or data.get("text"), data.get("status"))
            async for name, data in timeline.changes(h, view, limit)]


async def answer(h, status="generating", at_ns=None):
    message = await QuandaMessage.create(h.store, role="assistant")
    key = await conversation.add_entry(h.store, h.owner, {"type": "assistant", "message_id": message.id,
                                                          "status": status}, at_ns=at_ns)
    return key, message


async def test_cursor_round_trip_and_bad_cursors():
    view = timeline.View("0123456789ab", 1_000, {1_000, 1_500}, {900: ("generating", True), 950: ("stopped", False)})
    assert view.cursor() == "v1.0123456789ab.1000.0,500.900=generating+t,950=stopped"
    assert timeline.View.parse(view.cursor()) == view
    for bad in [None, "", "v2.0123456789ab.1.2.", "v1.0123456789ab.1..5=done", "v1.0123456789ab.1..5=weird",
                "v1.0123456789ab.x..", "v1.0123456789AB.1..", "v1.0123456789ab.1." + "1," * 3000 + "1.",
                "v1.0123456789ab.1..\n"]:
        assert timeline.View.parse(bad) is None, bad


def test_the_window_slides_and_stays_bounded():
    view = timeline.View("0123456789ab")
    base = 10**18
    for i in range(200):
        view.add(base + i * 10**8)  # ten entries a second
    assert len(view.seen) <= timeline.MAX_SEEN and min(view.seen) >= view.since
    assert max(view.seen) - view.since <= timeline.WINDOW_NS
    for i in range(100):
        view.track(i, "generating", False)
    assert len(view.open) == timeline.MAX_OPEN and min(view.open) == 100 - timeline.MAX_OPEN
    assert len(view.cursor()) < 4096 and timeline.View.parse(view.cursor()) == view


async def test_a_diff_sends_each_change_once_in_order(h):
    view, items = await timeline.snapshot(h, 50)
    assert items == []
    await conversation.add_entry(h.store, h.owner, {"type": "event", "text": "You opened Todos."})
    key, message = await answer(h)
    assert await changes(h, view) == [("chat.entry", "You opened Todos.", None),
                                      ("chat.entry", message.id, "generating")]
    assert await changes(h, view) == []  # nothing new: nothing sent
    thinking = await QuandaMessage.create(h.store, role="thinking")
    await conversation.update_entry(h.store, key, thinking_id=thinking.id)
    await conversation.update_entry(h.store, key, status="stopped")
    assert await changes(h, view) == [("chat.thinking", message.id, None), ("chat.state", message.id, "stopped")]
    resumed = timeline.View.parse(view.cursor())
    await QuandaWriter(message).make_immutable()  # sealed when the next question came: final
    assert await changes(h, resumed) == [("chat.state", message.id, "final")]
    assert resumed.open == {} and await changes(h, resumed) == []


async def test_an_entry_committed_after_a_later_key_is_still_sent_once(h):
    now = time.time_ns()
    view, _items = await timeline.snapshot(h, 50)
    await conversation.add_entry(h.store, h.owner, {"type": "event", "text": "later key"}, at_ns=now)
    assert await changes(h, view) == [("chat.entry", "later key", None)]
    cursor = view.cursor()
    # a writer that took its key 2 s earlier commits only now
    await conversation.add_entry(h.store, h.owner, {"type": "event", "text": "earlier key"}, at_ns=now - 2 * 10**9)
    assert await changes(h, timeline.View.parse(cursor)) == [("chat.entry", "earlier key", None)]
    assert await changes(h, view) == [("chat.entry", "earlier key", None)]
    assert await changes(h, view) == []


async def test_what_a_diff_cannot_do_starts_over(h):
    key, message = await answer(h)
    view, items = await timeline.snapshot(h, 50)
    assert [i["message_id"] for i in items] == [message.id]
    other = timeline.View.parse(view.cursor().replace(view.conversation, "f" * 12))
    with pytest.raises(timeline.Reset, match="conversation changed"):
        await changes(h, other)
    for i in range(5):
        await conversation.add_entry(h.store, h.owner, {"type": "event", "text": f"e{i}"})
    with pytest.raises(timeline.Reset, match="more new entries"):
        await changes(h, timeline.View.parse(view.cursor()), limit=3)
    await h.store.delete_record(conversation.KIND, key)  # an answer followed left the conversation
    with pytest.raises(timeline.Reset, match="left the conversation"):
        await changes(h, view)


async def test_a_snapshot_of_the_last_entries_does_not_resend_the_older_ones(h):
    for i in range(4):
        await conversation.add_entry(h.store, h.owner, {"type": "event", "text": f"e{i}"})
    view, items = await timeline.snapshot(h, 2)
    assert [i["text"] for i in items] == ["e2", "e3"]
    assert await changes(h, view) == []
    await conversation.add_entry(h.store, h.owner, {"type": "event", "text": "e4"})
    assert await changes(h, view) == [("chat.entry", "e4", None)]


async def test_owners_see_their_own_conversation_only(h, store):
    await conversation.add_entry(store, "owner-b", {"type": "event", "text": "b's"})
    view, items = await timeline.snapshot(h, 50)
    assert items == []
    await conversation.add_entry(store, "owner-b", {"type": "event", "text": "b's again"})
    assert await changes(h, view) == []
