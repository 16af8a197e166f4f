"""The app's command line: `python -m app show|tail ID` (the core's CLI on QUANDA_DB_URL)."""

from __future__ import annotations

import sys

from app.config import Settings
from app.quanda.__main__ import main as core_main


def main(argv: list[str] | None = None) -> int:
    return core_main(argv, default_db=Settings.from_env().db_url, prog="python -m app")


if __name__ == "__main__":
    sys.exit(main())
