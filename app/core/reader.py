"""QuandaReader: follows one message, from a snapshot or from a seq, until it is immutable."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from .errors import QuandaError
from .message import QuandaMessage
from .token import IMMUTABLE, OVERRIDE, WARNING, QuandaToken
from .validation import check_seq

#: how long a reader trusts its wake-ups before asking the store anyway (a safety net, not a poll)
SAFETY_RECHECK_S = 5.0
FETCH_LIMIT = 512
#: a token not yet visible in order (another writer's commit still on its way): retry after this, doubling
GAP_RETRY_S = (0.0005, 0.05)


class QuandaReader:
    """`async for token in QuandaReader(msg)`: an `override` snapshot (content and estimate at seq =
    last seq), a `warning` token if one is set, then every later token once, in seq order, ending after
    the `immutable` token. With `after_seq=k`: exactly the tokens k+1, k+2, … (no snapshot)."""

    def __init__(self, message: QuandaMessage, after_seq: int | None = None):
        self.store = message.store
        self.message_id = message.id
        self.after_seq = None if after_seq is None else check_seq(after_seq, "after_seq")
        self.last_seq = after_seq or 0  # the seq of the last token yielded

    def __aiter__(self) -> AsyncIterator[QuandaToken]:
        return self._follow()

    async def _follow(self) -> AsyncIterator[QuandaToken]:
        store = self.store
        subscription = store.subscribe(self.message_id)  # before the snapshot: nothing falls in between
        try:
            if self.after_seq is None:
                subscription.stale = False  # a wake-up during the read below must stay noticed
                record = await store.get_message(self.message_id)
                self.last_seq = record.last_seq
                subscription.cursor = record.last_seq
                yield QuandaToken(OVERRIDE, record.content, record.estimate, record.last_seq)
                if record.warning:
                    yield QuandaToken(WARNING, record.warning, None, record.last_seq)
                if record.immutable:
                    yield QuandaToken(IMMUTABLE, "", None, record.last_seq)
                    return
            else:
                record = await store.get_message(self.message_id)  # unknown ids fail here, not by waiting
                if self.after_seq > record.last_seq:
                    raise QuandaError(f"cannot resume message {self.message_id} after seq {self.after_seq}: "
                                      f"its last seq is {record.last_seq}")
                if record.immutable and self.after_seq == record.last_seq:
                    return  # the reader already has the seal
                subscription.cursor = self.after_seq
            gap_delay = GAP_RETRY_S[0]
            while True:
                batch = subscription.take()
                if batch is None:
                    subscription.stale = False
                    batch = await store.select_tokens(self.message_id, gt=subscription.cursor, limit=FETCH_LIMIT)
                if not batch:
                    await subscription.wait(SAFETY_RECHECK_S)
                    continue
                if batch[0].seq != subscription.cursor + 1:
                    # not yet visible in order: ask the store again soon, never in a loop that does not wait
                    subscription.stale = True
                    await asyncio.sleep(gap_delay)
                    gap_delay = min(gap_delay * 2, GAP_RETRY_S[1])
                    continue
                gap_delay = GAP_RETRY_S[0]
                for token in batch:
                    if token.seq != subscription.cursor + 1:
                        subscription.stale = True
                        break
                    subscription.cursor = self.last_seq = token.seq
                    yield token
                    if token.kind == IMMUTABLE:
                        return
        finally:
            subscription.close()
