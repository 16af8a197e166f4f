"""A clock offset for one server process: libfaketime preloaded (`FAKETIME=+90s`), the wall clock only — the
monotonic clock, which asyncio's timers use, is left alone, as it is on a machine whose clock is simply
wrong. `.ci/run` installs it (Debian's libfaketime); without it the test skips, saying so."""

from __future__ import annotations

import glob

import pytest


def skewed(offset_s: int) -> dict[str, str]:
    """The environment that puts a server's wall clock `offset_s` seconds off."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1") + glob.glob("/usr/lib/faketime/libfaketimeMT.so.1"))
    if not found:
        pytest.skip("a clock offset per server needs libfaketime (apt-get install libfaketime)")
    return {"LD_PRELOAD": found[0], "FAKETIME": f"{offset_s:+d}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1"}
