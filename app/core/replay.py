"""The reducer: the one definition of a message's state, as a pure function of its token log."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable

from .token import CHUNK, IMMUTABLE, OVERRIDE, WARNING, QuandaToken

MUTABLE_NOTICE = "WARNING: message is still mutable."


@dataclass(frozen=True, slots=True)
class MessageState:
    content: str = ""
    estimate: str | None = None
    warning: str = ""
    immutable: bool = False
    last_seq: int = 0

    @property
    def display(self) -> str:
        return self.content + (self.estimate or "")

    def __str__(self) -> str:
        if self.immutable:
            return self.content
        return (self.warning or MUTABLE_NOTICE) + "\n\n" + self.content


def apply(state: MessageState, token: QuandaToken) -> MessageState:
    """Apply one token.

    An `override` sets the estimate to the token's own (always None for a written override; a reader's
    opening snapshot carries the estimate current at that moment, so replaying a reader's output
    reproduces the stored state exactly).
    """
    seq = max(state.last_seq, token.seq)
    if token.kind == CHUNK:
        return replace(state, content=state.content + token.text, estimate=token.estimate, last_seq=seq)
    if token.kind == OVERRIDE:
        return replace(state, content=token.text, estimate=token.estimate, last_seq=seq)
    if token.kind == WARNING:
        return replace(state, warning=token.text, last_seq=seq)
    if token.kind == IMMUTABLE:
        return replace(state, immutable=True, warning="", estimate=None, last_seq=seq)
    raise ValueError(f"unknown token kind {token.kind!r}")


def replay(tokens: Iterable[QuandaToken], state: MessageState | None = None) -> MessageState:
    """Fold tokens into a state, from an empty message unless `state` is given."""
    state = state or MessageState()
    for token in tokens:
        state = apply(state, token)
    return state
