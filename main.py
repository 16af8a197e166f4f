"""Run Quanda: `python main.py` serves http://127.0.0.1:5001 on the embedded SQLite store."""

import logging

import uvicorn

from app.config import Settings
from app.server import create_app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    main()
