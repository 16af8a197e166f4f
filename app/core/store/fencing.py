"""Fencing: the writes of a job that lost its lease are refused by the store.

A job holds a lease (`QuandaStore.acquire_lease`) whose fence, a number no earlier lease of any key had, is
taken for every later holder. The job runs inside `fenced(lease key, fence)`: a context variable, so every
write made from the job's task (and from tasks it starts) carries the fence without the job's code passing
it on — it is the store that checks, not the job's good manners:

- every write — an append, a record's insert, put or delete, a unit — goes through only while the job's lease
  still has this fence (`QuandaFencedError` otherwise, nothing written), checked in the write's own
  transaction on SQLite and PostgreSQL (there under a share lock of the lease: a taker waits for the write's
  commit) and in a MongoDB replica set's transaction for records; so from the moment another server has
  taken the lease, the old job cannot add a word;
- an append also carries the fence to the message, which remembers the highest fence that wrote it and
  refuses a lower one. On MongoDB an append is one document's atomic update, with no room for the lease: the
  message's fence is what refuses it there, from the moment the new holder has written the message (a
  recovery marks it at once; a Retry's first write is its override) — until then a job that lost its lease
  may still add a chunk. Records without transactions (a standalone MongoDB) are checked just before the
  writes, not with them: a window, documented in the README.

Writes outside any `fenced` block (a person's action, the HTTP API, a script) carry no fence and are not
checked. A fence never goes back: a message written under fence 7 refuses 6 for ever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

LEASE_FENCE_KIND = "lease"  # the `check` op of a unit of records: ("check", "lease", key, {"fence": n})


@dataclass(frozen=True, slots=True)
class Fence:
    lease_key: str
    fence: int


_current: ContextVar[Fence | None] = ContextVar("quanda_fence", default=None)


def current_fence() -> Fence | None:
    """The fence the writes of this task carry, if it runs a job."""
    return _current.get()


@contextlib.contextmanager
def fenced(lease_key: str, fence: int) -> Iterator[None]:
    """Every write made within (from this task, and from tasks it starts) carries `fence`."""
    token = _current.set(Fence(lease_key, fence))
    try:
        yield
    finally:
        _current.reset(token)


@contextlib.contextmanager
def unfenced() -> Iterator[None]:
    """Writes within carry no fence (a job's own bookkeeping of its lease)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)
