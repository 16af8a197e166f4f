"""QuandaToken: one entry of a message's append-only log."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK = "chunk"
OVERRIDE = "override"
WARNING = "warning"
IMMUTABLE = "immutable"
KINDS = (CHUNK, OVERRIDE, WARNING, IMMUTABLE)


@dataclass(frozen=True, slots=True)
class QuandaToken:
    """A log entry. `seq` is its 1-based position in the message's log (0 only before it is stored)."""

    kind: str
    text: str = ""
    estimate: str | None = None
    seq: int = 0

    def as_stream_piece(self) -> str:
        """What a plain-text stream shows for this token: text plus the transient estimate for a chunk."""
        if self.kind == CHUNK and self.estimate:
            return self.text + self.estimate
        return self.text
