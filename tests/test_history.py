"""What a server reads does not grow with its history (issue 21, item 10), on every backend: reading the last N
entries of a conversation reads N records, not the whole conversation; finished command claims of final
answers, and what versions before leases left behind, are deleted once older than the retention window."""

from __future__ import annotations

import time

from quanda.core import QuandaMessage, QuandaWriter
from quanda.chat import conversation
from quanda.retention import sweep

OWNER = "local"


class Counting:
    """The store, counting the records its listings return."""

    def __init__(self, store):
        self._store, self.read = store, 0

    async def list_records(self, *args, **kwargs):
        found = await self._store.list_records(*args, **kwargs)
        self.read += len(found)
        return found

    async def list_last_records(self, *args, **kwargs):
        found = await self._store.list_last_records(*args, **kwargs)
        self.read += len(found)
        return found

    def __getattr__(self, name):
        return getattr(self._store, name)


async def test_the_last_entries_of_a_long_conversation_are_read_alone(store):
    cid = await conversation.current(store, OWNER)
    await store.commit_records([("put", conversation.KIND, conversation.entry_key(cid, n), {"type": "event", "n": n})
                                for n in range(1, 301)])
    await store.put_record(conversation.KIND, conversation.entry_key(cid, 299), {"type": "event", "n": 299,
                                                                                "superseded": True})
    counting = Counting(store)
    last = await conversation.entries(counting, OWNER, limit=20)
    assert [e["n"] for _k, e in last] == [n for n in range(280, 301) if n != 299]
    assert counting.read <= 2 * 50, f"{counting.read} records read for the last 20 entries of 300"
    counting.read = 0
    question = await QuandaMessage.create(store, role="q", content="?")
    await conversation.add_entry(store, OWNER, {"type": "q", "message_id": question.id})
    assert await conversation.last_question(counting, OWNER) == question.id and counting.read <= 50


async def test_finished_claims_of_final_answers_are_deleted_after_the_retention_window(store):
    now = time.time()
    final = await QuandaMessage.create(store, role="assistant", content="done")
    await QuandaWriter(final).make_immutable()
    live = await QuandaMessage.create(store, role="assistant", content="being retried")
    day = 86400
    claims = {
        f"{final.id}:0": {"message_id": final.id, "state": "done", "claimed_at": now - 9 * day},  # goes
        f"{final.id}:1": {"message_id": final.id, "state": "done", "claimed_at": now - 1 * day},  # too recent
        f"{final.id}:2": {"message_id": final.id, "state": "applying", "claimed_at": now - 9 * day},  # unfinished
        f"{live.id}:0": {"message_id": live.id, "state": "done", "claimed_at": now - 9 * day},  # Retry may need it
    }
    for key, claim in claims.items():
        await store.put_record("command", key, claim)
    for n in range(3):  # what versions before leases left behind
        await store.put_record("job_reaped", f"{final.id}:{n}", {"by": "x", "at": now - 9 * day, "attempt": n})
    await store.put_record("job", live.id, {"kind": "assistant", "owner": OWNER, "server": "x", "expires": now - 9 * day})
    await store.put_record("health", "an-old-process", {"at": now - 9 * day, "nonce": "x"})
    await store.put_record("health", store.origin, {"at": now, "nonce": "y"})
    deleted = await sweep(store, retention_s=7 * day, now=now)
    assert deleted == {"command": 1, "health": 1, "job_reaped": 3, "job": 1}
    assert sorted(k for k, _ in await store.list_records("command")) == sorted(set(claims) - {f"{final.id}:0"})
    assert await store.list_records("job_reaped") == [] and await store.list_records("job") == []
    assert [k for k, _ in await store.list_records("health")] == [store.origin]
    assert await sweep(store, retention_s=7 * day, now=now) == {"command": 0, "health": 0, "job_reaped": 0, "job": 0}
