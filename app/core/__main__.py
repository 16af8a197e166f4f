"""The core without the web app: `python -m quanda.core show ID` prints a message's state and token count;
`python -m quanda.core tail ID [--after SEQ]` prints its snapshot, then follows it live until it is immutable.
The store is --db URL (default sqlite:///data/quanda.db); `python -m quanda show|tail` takes QUANDA_DB_URL."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from . import DEFAULT_URL, QuandaError, QuandaMessage, QuandaReader, open_store


async def show(url: str, message_id: str) -> None:
    async with await open_store(url) as store:
        msg = await QuandaMessage.from_id(store, message_id)
        print(json.dumps({"id": msg.id, "role": msg.role, "content": msg.content, "estimate": msg.estimate,
                          "warning": msg.warning, "immutable": msg.immutable, "tokens": msg.last_seq},
                         ensure_ascii=False, indent=2))


async def tail(url: str, message_id: str, after: int | None) -> None:
    async with await open_store(url) as store:
        msg = await QuandaMessage.from_id(store, message_id)
        first = after is None
        async for token in QuandaReader(msg, after_seq=after):
            if token.kind == "chunk" or (token.kind == "override" and first):
                sys.stdout.write(token.text)
            elif token.kind == "override":
                sys.stdout.write(f"\n--- override (seq {token.seq}) ---\n{token.text}")
            elif token.kind == "warning" and token.text:
                sys.stderr.write(f"\n[warning] {token.text}\n")
            first = False
            sys.stdout.flush()
        sys.stdout.write("\n")


def main(argv: list[str] | None = None, default_db: str = DEFAULT_URL, prog: str = "python -m quanda.core") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=default_db, help=f"store URL (default: {default_db})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="print a message's state and token count").add_argument("id")
    tail_parser = commands.add_parser("tail", help="print a message, then follow it until immutable")
    tail_parser.add_argument("id")
    tail_parser.add_argument("--after", type=int, default=None, help="resume after this seq (no snapshot)")
    args = parser.parse_args(argv)
    try:
        if args.command == "show":
            asyncio.run(show(args.db, args.id))
        else:
            asyncio.run(tail(args.db, args.id, args.after))
    except QuandaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
