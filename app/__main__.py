"""The command line (`quanda …`, or `python -m quanda …`), on the store QUANDA_DB_URL names:

    quanda serve [--host H] [--port P]                  the app (what `python main.py` does in a checkout)
    quanda tui [--url URL] [--token T]                  the terminal client (the `tui` extra)
    quanda show ID | tail ID [--after SEQ]              a message (the core's CLI)
    quanda users add|passwd NAME [--password-stdin]     accounts (QUANDA_AUTH=accounts)
    quanda users remove|disable|enable NAME | list        (passwd, remove, disable: open tabs close at once)
    quanda users adopt NAME (--all | --session SID …)   data of browser sessions from before accounts
    quanda tokens create NAME [--label L] | list NAME | revoke NAME TOKEN_ID
    quanda migrate [--check]                            apply the store's pending schema migrations (--check:
                                                        only say where the database stands; exit 1 if some
                                                        are pending, 2 if it is newer than this version)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time

from quanda.accounts import AccountError, Accounts
from quanda.config import Settings
from quanda.core import QuandaError, QuandaSchemaError, open_store
from quanda.core.__main__ import main as core_main


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AccountError("the two passwords differ")
    return first


async def users(args: argparse.Namespace, settings: Settings) -> None:
    from quanda.migrate import adopt, legacy_sessions
    async with await open_store(settings.db_url, **settings.store_options()) as store:
        accounts = Accounts(store)
        if args.action == "add":
            user = await accounts.add(args.name, read_password(args))
            print(f"added {user.name}")
        elif args.action == "passwd":
            await accounts.set_password(args.name, read_password(args))
            print(f"changed the password of {args.name}: their sessions ended (every server closes their open tabs)")
        elif args.action == "remove":
            await accounts.remove(args.name)
            print(f"removed {args.name}: their data stays in the store, unreachable (every server closes their open "
                  "tabs)")
        elif args.action == "disable":
            await accounts.disable(args.name)
            print(f"disabled {args.name}: they cannot sign in, their sessions ended and their tokens are refused "
                  "until `users enable`")
        elif args.action == "enable":
            await accounts.enable(args.name)
            print(f"enabled {args.name}: they can sign in again, and their tokens work again")
        elif args.action == "list":
            for user in await accounts.users():
                print(f"{user.name} (disabled)" if user.disabled else user.name)
        else:
            user = await accounts.user(args.name)
            if user is None:
                raise AccountError(f"there is no user named {args.name!r}")
            sessions = await legacy_sessions(store)
            chosen = sessions if args.all else set(args.session or ()) & sessions
            await adopt(store, chosen, user.workspace)
            print(f"gave {user.name} the data of {len(chosen)} browser session(s)")


async def tokens(args: argparse.Namespace, settings: Settings) -> None:
    async with await open_store(settings.db_url, **settings.store_options()) as store:
        accounts = Accounts(store)
        if args.action == "create":
            token_id, token = await accounts.create_token(args.name, args.label or "")
            print(f"token {token_id} for {args.name} (shown once; keep it secret):\n{token}")
        elif args.action == "list":
            for token in await accounts.tokens(args.name):
                made = time.strftime("%Y-%m-%d %H:%M", time.localtime(token["created"]))
                print(f"{token['id']}  {made}  {token['label']}")
        else:
            await accounts.revoke_token(args.name, args.token_id)
            print(f"revoked token {args.token_id} of {args.name}")


def migrate(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="quanda migrate", description="The store's schema migrations "
                                     "(QUANDA_DB_URL): apply what is pending, or --check where it stands.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when migrations are pending")
    args = parser.parse_args(argv)

    async def run() -> int:
        async with await open_store(settings.db_url, **settings.store_options(), migrate=not args.check) as store:
            print(store.schema.describe())
            return 1 if store.schema.pending else 0
    try:
        return asyncio.run(run())
    except QuandaSchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QuandaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    if argv[:1] == ["serve"]:
        from quanda.serve import main as serve
        serve(argv[1:])
        return 0
    if argv[:1] == ["tui"]:
        from quanda.tui.__main__ import main as tui
        return tui(argv[1:], prog="quanda tui")
    settings = Settings.from_env()
    if argv[:1] == ["migrate"]:
        return migrate(argv[1:], settings)
    if argv[:1] not in (["users"], ["tokens"]):
        return core_main(argv, default_db=settings.db_url, prog="python -m quanda")
    parser = argparse.ArgumentParser(prog="python -m quanda", description="Accounts and API tokens.")
    groups = parser.add_subparsers(dest="group", required=True)
    user_cmds = groups.add_parser("users").add_subparsers(dest="action", required=True)
    for action in ("add", "passwd"):
        p = user_cmds.add_parser(action)
        p.add_argument("name")
        p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    for action in ("remove", "disable", "enable"):
        user_cmds.add_parser(action).add_argument("name")
    user_cmds.add_parser("list")
    adopt = user_cmds.add_parser("adopt", help="give a user the data of browser sessions from before accounts")
    adopt.add_argument("name")
    which = adopt.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true")
    which.add_argument("--session", action="append")
    token_cmds = groups.add_parser("tokens").add_subparsers(dest="action", required=True)
    create = token_cmds.add_parser("create")
    create.add_argument("name")
    create.add_argument("--label", default="")
    token_cmds.add_parser("list").add_argument("name")
    revoke = token_cmds.add_parser("revoke")
    revoke.add_argument("name")
    revoke.add_argument("token_id")
    args = parser.parse_args(argv)
    try:
        asyncio.run((users if args.group == "users" else tokens)(args, settings))
    except QuandaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
