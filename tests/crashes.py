"""Crashes at the points of a command's run where one matters (`quanda.commands.crash_point`: "after_claim",
"after_effect", "before_result_line"), for the exactly-once tests. The app has no switch for this: the tests
install `quanda.commands.crash_hook` themselves —

- in a server process: `python -m tests.crashes` is `python main.py` with QUANDA_TEST_CRASH_AT=<point> read
  here, killing the process (exit 137) at that point (tests/servers.py's AppServer runs it when that is set);
- in-process: `with crash_at(point, SomeError):` raises SomeError there instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import sys
from typing import Iterator

from quanda import commands
from tests.servers import ROOT

ENV = "QUANDA_TEST_CRASH_AT"


def killing_at(point: str):
    def hook(name: str) -> None:
        if name == point:
            logging.getLogger("quanda.commands").warning("%s=%s: killing the process", ENV, point)
            os._exit(137)
    return hook


@contextlib.contextmanager
def crash_at(point: str, error: type[BaseException]) -> Iterator[None]:
    def hook(name: str) -> None:
        if name == point:
            raise error()
    previous, commands.crash_hook = commands.crash_hook, hook
    try:
        yield
    finally:
        commands.crash_hook = previous


if __name__ == "__main__":
    commands.crash_hook = killing_at(os.environ[ENV])
    sys.argv = [str(ROOT / "main.py")]
    runpy.run_path(str(ROOT / "main.py"), run_name="__main__")
