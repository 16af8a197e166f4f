"""Limits on what one client may ask of the WebSocket transport. The numbers are settings (app/config.py,
README); app/ws.py applies them.

Frames: each connection, and each owner over all of their connections on this server, has a pace — a rate
and a burst of twice the rate (the generic cell rate algorithm: each frame is due 1/rate after the one
before, and may come up to a burst early). A frame ahead of its time waits before it is handled; meanwhile
its socket is not read, so a flooding client is held back by TCP's own flow control and nothing it sent is
dropped or reordered (the server holds only uvicorn's short queue of frames per connection). The client is
told once in a notice, again after NOTICE_EVERY_S; a connection whose frames have had to wait for STRAINED_S
on end is closed (1008: the page's ws extension does not reconnect by itself).

The owner's pace is shared fairly: each of the owner's tabs active lately (a frame within ACTIVE_S) has a share
of it (the owner's rate divided among them); a frame within its tab's share never waits for the owner's pace
(it still counts in it), a frame beyond it waits for the owner's pace. So a tab flooding is held back by its
own rate and by its share — the waits, and the closing, charged to it — and a tab within its share goes on as
if alone, never held back nor closed for another tab's flood.

Connections: at most `per_owner` per owner and `per_address` per client address are open at once on this
server; one more is told why in a notice and closed with 1013 (try again later: the ws extension reconnects
with backoff, so a tab refused while too many were open comes back once others close). Before any of that,
WebSocket handshakes are paced per client address (a rate, bursts of HANDSHAKE_BURST_S seconds' worth): one
over is answered 429 at the door, before a session is read or the socket accepted, so a client opening
hundreds at once costs the server little more than reading their requests.
"""

from __future__ import annotations

from collections import Counter

NOTICE_EVERY_S = 5.0
STRAINED_S = 10.0
BURST_S = 2.0  # a burst is this many seconds' worth of frames
ACTIVE_S = 2.0  # a tab that sent a frame this recently shares its owner's rate
HANDSHAKE_BURST_S = 3.0


class Pace:
    """One sender's frames: when each may be handled."""

    __slots__ = ("interval", "tolerance", "due")

    def __init__(self, rate: float, burst: float):
        self.due = 0.0
        self.set_rate(rate, burst)

    def set_rate(self, rate: float, burst: float) -> None:
        self.interval = 1.0 / rate
        self.tolerance = max(burst - 1.0, 0.0) * self.interval

    def wait_s(self, now: float) -> float:
        """Take the next frame's slot; how long the frame must wait for it (0 within the burst)."""
        due = max(self.due, now)
        self.due = due + self.interval
        return max(0.0, due - self.tolerance - now)


class Handshakes:
    """WebSocket handshakes per client address."""

    def __init__(self, rate: float, burst: float | None = None):
        self.rate, self.burst = rate, burst if burst is not None else rate * HANDSHAKE_BURST_S
        self.paces: dict[str, Pace] = {}

    def allow(self, address: str, now: float) -> bool:
        pace = self.paces.get(address)
        if pace is None:
            if len(self.paces) > 1000:  # forget addresses that are back within their burst
                self.paces = {a: p for a, p in self.paces.items() if p.due > now}
            pace = self.paces[address] = Pace(self.rate, self.burst)
        due = max(pace.due, now)
        if due - pace.tolerance > now:
            return False
        pace.due = due + pace.interval
        return True


class TabPaces:
    """One connection's paces: its own rate, and its share of its owner's."""

    __slots__ = ("own", "share")

    def __init__(self, rate: float, share: float):
        self.own = Pace(rate, rate * BURST_S)
        self.share = Pace(share, share * BURST_S)


class Limits:
    """Connections open per owner and per address, and the owners' paces, on this server."""

    def __init__(self, frames_per_s: float, owner_frames_per_s: float, per_owner: int, per_address: int):
        self.frames_per_s, self.owner_frames_per_s = frames_per_s, owner_frames_per_s
        self.per_owner, self.per_address = per_owner, per_address
        self.by_owner: Counter[str] = Counter()
        self.by_address: Counter[str] = Counter()
        self.owner_paces: dict[str, Pace] = {}
        self.active: dict[str, dict[int, float]] = {}  # owner -> {tab: its last frame}

    def admit(self, owner: str, address: str) -> str | None:
        """Count one more connection, or say why it is refused."""
        if self.by_owner[owner] >= self.per_owner:
            return (f"too many open tabs ({self.per_owner} at most): close some; this one connects again "
                    "by itself once others close")
        if self.by_address[address] >= self.per_address:
            return f"too many connections from your address ({self.per_address} at most): close some"
        self.by_owner[owner] += 1
        self.by_address[address] += 1
        if owner not in self.owner_paces:
            self.owner_paces[owner] = Pace(self.owner_frames_per_s, self.owner_frames_per_s * BURST_S)
        return None

    def release(self, owner: str, address: str) -> None:
        for counts, key in ((self.by_owner, owner), (self.by_address, address)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
        if owner not in self.by_owner:
            self.owner_paces.pop(owner, None)
            self.active.pop(owner, None)

    def connection_pace(self) -> TabPaces:
        return TabPaces(self.frames_per_s, self.owner_frames_per_s)

    def frame_waits(self, paces: TabPaces, owner: str | None, now: float) -> tuple[float, float]:
        """How long a connection's next frame waits: (for its own pace, for its owner's beyond its share)."""
        own = paces.own.wait_s(now)
        owner_pace = self.owner_paces.get(owner) if owner is not None else None
        if owner_pace is None:
            return own, 0.0
        active = self.active.setdefault(owner, {})
        active[id(paces)] = now
        if len(active) > 1:
            for tab in [t for t, last in active.items() if now - last > ACTIVE_S]:
                del active[tab]
        share = self.owner_frames_per_s / len(active)
        paces.share.set_rate(share, share * BURST_S)
        within_share = paces.share.wait_s(now) <= 0
        shared = owner_pace.wait_s(now)  # every frame counts in the owner's pace
        return own, 0.0 if within_share else shared

    def frame_wait_s(self, paces: TabPaces, owner: str | None, now: float) -> float:
        return max(self.frame_waits(paces, owner, now))

    def slow_down(self) -> str:
        return (f"slow down: at most {self.frames_per_s:g} messages a second from a tab "
                f"({self.owner_frames_per_s:g} from all of yours); the rest wait their turn")

    def strained(self) -> str:
        return (f"closed: over {self.frames_per_s:g} messages a second for {STRAINED_S:g} s on end; "
                "reload the page")
