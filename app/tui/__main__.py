"""`python -m quanda.tui [--url URL] [--token TOKEN]`: the terminal client (needs the `tui` extra: Textual)."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_URL = f"http://127.0.0.1:{os.environ.get('QUANDA_PORT', '5001')}"


def parse_args(argv: list[str] | None = None, prog: str = "python -m quanda.tui") -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=(
        "Follow a Quanda workspace's conversation in the terminal: ask, watch answers stream, Stop, Retry. "
        "The browser tabs of the same workspace see the same conversation, live."))
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the Quanda server (default {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("QUANDA_API_TOKEN") or None,
                        help="an API token: the server's QUANDA_API_TOKEN (local mode), or a user's qk_… token "
                             "(accounts mode; `python -m quanda tokens create NAME`). Default: $QUANDA_API_TOKEN; "
                             "without one, local mode's workspace is used as a browser tab uses it")
    parser.add_argument("--history", type=int, default=200, help="entries kept on screen (default 200)")
    parser.add_argument("--fps", type=int, default=30, help="at most this many redraws a second (default 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m quanda.tui") -> int:
    args = parse_args(argv, prog)
    try:
        from quanda.tui.app import QuandaTUI
    except ImportError as exc:
        print(f"the terminal client needs Textual ({exc}): pip install -e '.[tui]'", file=sys.stderr)
        return 2
    if args.history < 1 or args.fps < 1:
        print("--history and --fps must be at least 1", file=sys.stderr)
        return 2
    QuandaTUI(args.url, args.token, history=args.history, fps=args.fps, freeze_gc=True).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
