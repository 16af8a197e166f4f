"""Every setting, read from the environment in one place. The README's configuration table lists each one
(a test checks it)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    db_url: str = field(default="sqlite:///data/quanda.db", metadata={"env": "QUANDA_DB_URL",
                        "doc": "Store: sqlite:///path (embedded default) or mongodb://host:port/db"})
    mongo_driver: str = field(default="motor", metadata={"env": "QUANDA_MONGO_DRIVER",
                              "doc": "MongoDB client: motor or pymongo (PyMongo's AsyncMongoClient)"})
    host: str = field(default="127.0.0.1", metadata={"env": "QUANDA_HOST",
                      "doc": "Address to bind; anything but loopback requires QUANDA_SECRET"})
    port: int = field(default=5001, metadata={"env": "QUANDA_PORT", "doc": "Port to serve on"})
    secret: str = field(default="", metadata={"env": "QUANDA_SECRET",
                        "doc": "Session-signing key (required when not bound to loopback)"})
    max_token_bytes: int = field(default=1 << 20, metadata={"env": "QUANDA_MAX_TOKEN_BYTES",
                                 "doc": "Largest token a writer may append (bytes)"})
    max_message_bytes: int = field(default=16 << 20, metadata={"env": "QUANDA_MAX_MESSAGE_BYTES",
                                   "doc": "Largest content a message may reach (bytes)"})

    @classmethod
    def from_env(cls, **overrides: object) -> "Settings":
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = type(f.default)(raw) if not isinstance(f.default, str) else raw
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting."""
        return [(f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(cls)]
