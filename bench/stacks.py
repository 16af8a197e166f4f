"""Sum a py-spy sample of the server (collapsed stacks, `py-spy record --format raw`) by function and by area.

    python bench/stacks.py /tmp/chat.txt [--top 30]

"self" is the share of samples whose innermost frame is the function; "incl." the share whose stack holds it
anywhere. Areas (by the innermost frame whose file matches, first match wins) say where the CPU goes: the
LLM driver's HTTP read, the store's write path, the follower and its view, rendering, the WebSocket send…

Shares are of the *busy* samples: a stack whose innermost frame is a wait (the event loop in `epoll_pwait`,
a thread blocked on a lock or a queue) is idle and only counted apart. py-spy tells those apart only with
`--native` (which the benchmarks' `--py-spy` use): without it, a thread asleep in uvloop's C code shows as
its last Python frame (`Runner.run`), indistinguishable from work.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table  # noqa: E402

FRAME_RE = re.compile(r"^(.*) \((.*?):(\d+)\)$")
NATIVE_RE = re.compile(r"^(.*) \((.*?)\)$")  # a C frame (`--native`): "function (library)"
WAITS = re.compile(r"^(epoll_pwait|epoll_wait|poll|select|pthread_cond_(timed)?wait|sem_(timed)?wait|__futex|futex)\b")
AREAS = [  # (area, pattern on "function (file)"), innermost matching frame decides
    ("render: markdown (mistune)", r"[(/]mistune/"),
    ("render: highlighting (pygments)", r"[(/]pygments/"),
    ("render: app/render/", r"app/render/"),
    ("view: ChatView", r"app/(components/chat|chat/stream_view)\.py"),
    ("FT -> HTML (fastcore to_xml)", r"[(/](fastcore|fasthtml)/"),
    ("store: SQLite (sqlite*.py, writer thread)", r"app/core/store/sqlite"),
    ("store: SQLite's C code (sqlite3, WAL writes)", r"^(_pysqlite|pysqlite|sqlite3|pwrite|fdatasync|pread)"),
    ("store: shared (base.py, subscription.py)", r"app/core/store/(base|subscription)\.py"),
    ("core: reader, writer, validation", r"app/core/"),
    ("follower (app/follow.py)", r"app/follow\.py"),
    ("LLM driver (app/llm)", r"app/llm/"),
    ("HTTP client (httpx, httpcore, h11, anyio)", r"[(/](httpx|httpcore|h11|anyio|sniffio)/"),
    ("WebSocket send (uvicorn, websockets, zlib)", r"[(/](uvicorn|websockets|wsproto)/|zlib"),
    ("app: ws, plugins, jobs", r"app/"),
    ("accounts: password hashing (scrypt, at login)", r"libcrypto"),
    ("sockets (read, write, send, recv)", r"^(read|write|send|recv|sendmsg|recvmsg|writev)\b"),
    ("asyncio event loop", r"[(/]asyncio/|_asynciomodule|uvloop|loop\.c"),
    ("threading / queue", r"[(/](threading|queue)\.py"),
]


def idle(frames: list[str]) -> bool:
    """A thread asleep: in a wait call, or in the unnamed libc frames under a lock's acquire."""
    inner = frames[-1]
    if WAITS.match(inner):
        return True
    return inner.startswith("0x") and any("acquire_lock" in f or "SimpleQueue_get" in f for f in frames[-4:])


def parse(path: str):
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if FRAME_RE.match(f) or NATIVE_RE.match(f)]
        yield frames, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    own, incl, areas = Counter(), Counter(), Counter()
    total = asleep = 0
    compiled = [(name, re.compile(p)) for name, p in AREAS]
    for frames, count in parse(args.path):
        if not frames or idle(frames):
            asleep += count
            continue
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
        for frame in reversed(frames):
            name = next((n for n, p in compiled if p.search(frame)), None)
            if name is not None:
                areas[name] += count
                break
        else:
            areas["other"] += count
    if not total:
        sys.exit("no samples")
    print(f"{total:,} busy samples (and {asleep:,} of threads asleep: not counted below)\n")
    print(table(["area (innermost matching frame)", "share"],
                [[a, f"{100 * c / total:.1f} %"] for a, c in areas.most_common()]))
    print()

    def short(frame: str) -> str:
        m = FRAME_RE.match(frame)
        if m is None:  # a C frame
            return frame[:110]
        path = m.group(2)
        for marker in ("site-packages/", "/lib/python3", "/work/wt/perf/", "/work/main/"):
            if marker in path:
                path = path.split(marker, 1)[1]
        return f"{m.group(1)} ({path}:{m.group(3)})"[:110]

    print(table(["function (self)", "self", "incl."],
                [[short(f), f"{100 * c / total:.1f} %", f"{100 * incl[f] / total:.1f} %"]
                 for f, c in own.most_common(args.top)]))


if __name__ == "__main__":
    main()
