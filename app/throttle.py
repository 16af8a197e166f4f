"""Failed logins slow down the next attempts of whoever failed, never the real user somewhere else.

Two counts, in each server's memory: per (user name, address) and per address. Past a number of free failures
(3 for a name from one address; 20 for an address, which many people behind one NAT may share), each further
attempt of that pair, or from that address, must wait twice as long as the one before: 1 s, 2 s, 4 s … up to
MAX_WAIT_S. A count is forgotten after FORGET_S of quiet; a good login clears its pair (not its address's
count, or one account of the attacker's would wash an address clean).

There is no lockout of a user everywhere: failures anyone can cause from elsewhere would lock the real user
out. Guesses at one name from many addresses are bounded by each address's count and, over all of them, by
the password checks a server runs at once (app/hashpool.py); operators see them in the log (a warning per
FAILURES_LOGGED_EVERY failures on a name, with how many addresses they came from).
"""

from __future__ import annotations

import time

MAX_ENTRIES = 10_000  # counts kept; beyond it the oldest half is forgotten


class LoginThrottle:
    FREE = {"pair": 3, "addr": 20}
    MAX_WAIT_S = 300.0
    FORGET_S = 3600.0
    FAILURES_LOGGED_EVERY = 100

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, last failure, monotonic)
        self._per_name: dict[str, tuple[int, set[str]]] = {}  # name -> (failures, addresses), for the log

    @staticmethod
    def keys(name: str, address: str) -> tuple[str, str]:
        return f"pair:{name.strip().lower()}|{address}", f"addr:{address}"

    def wait_s(self, name: str, address: str) -> float:
        """Seconds before another attempt of `name` from `address` is allowed; 0: now."""
        now = time.monotonic()
        waits = [0.0]
        for key in self.keys(name, address):
            count, last = self._failures.get(key, (0, 0.0))
            free = self.FREE[key.split(":", 1)[0]]
            if count >= free and now - last < self.FORGET_S:
                waits.append(last + min(2.0 ** (count - free), self.MAX_WAIT_S) - now)
        return max(waits)

    def address_failures(self, address: str) -> int:
        count, last = self._failures.get(f"addr:{address}", (0, 0.0))
        return count if time.monotonic() - last < self.FORGET_S else 0

    def failed(self, name: str, address: str) -> tuple[int, int, str | None]:
        """Count a failure: (the pair's failures, the address's, a warning for operators or None)."""
        now = time.monotonic()
        counts = []
        for key in self.keys(name, address):
            count, last = self._failures.get(key, (0, 0.0))
            count = 1 if now - last > self.FORGET_S else count + 1
            self._failures[key] = (count, now)
            counts.append(count)
        if len(self._failures) > MAX_ENTRIES:
            for key, _ in sorted(self._failures.items(), key=lambda kv: kv[1][1])[:MAX_ENTRIES // 2]:
                del self._failures[key]
        return counts[0], counts[1], self._count_name(name.strip().lower(), address)

    def _count_name(self, name: str, address: str) -> str | None:
        if len(self._per_name) > MAX_ENTRIES:
            self._per_name.clear()
        failures, addresses = self._per_name.get(name, (0, set()))
        if len(addresses) < 1000:
            addresses.add(address)
        self._per_name[name] = (failures + 1, addresses)
        if (failures + 1) % self.FAILURES_LOGGED_EVERY:
            return None
        return (f"{failures + 1} failed logins for the name {name[:40]!r} from {len(addresses)} address(es) "
                "since this server started or the count was reset")

    def succeeded(self, name: str, address: str) -> None:
        self._failures.pop(self.keys(name, address)[0], None)
        self._per_name.pop(name.strip().lower(), None)
