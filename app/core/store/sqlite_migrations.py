"""The SQLite store's migrations (the rules: `migrations.py`), applied by the writer's connection when the store
opens, inside one `BEGIN IMMEDIATE` transaction: SQLite's write lock is the migration lock, and DDL is
transactional, so a migration is applied whole or not at all. The version is the row `schema` of
`quanda_meta` (none: 0 — a new file, or one written before migrations existed, whose tables migration 1
creates only if they are missing)."""

from __future__ import annotations

import dataclasses
import sqlite3

from .migrations import Migration, SchemaStatus, plan, refuse_newer

V1_TABLES = (
    """CREATE TABLE IF NOT EXISTS quanda_messages (
        id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        content_bytes INTEGER NOT NULL,
        content_seq INTEGER NOT NULL DEFAULT 0,
        estimate TEXT,
        warning TEXT NOT NULL DEFAULT '',
        immutable INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS quanda_messages_role ON quanda_messages(role, immutable)",
    """CREATE TABLE IF NOT EXISTS quanda_tokens (
        message_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        estimate TEXT,
        PRIMARY KEY (message_id, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS quanda_content (
        message_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        content TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS quanda_counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    """CREATE TABLE IF NOT EXISTS quanda_facts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        origin TEXT NOT NULL,
        topic TEXT NOT NULL,
        data TEXT NOT NULL,
        at REAL NOT NULL
    )""",
)

V2_LEASES = (
    """CREATE TABLE quanda_leases (
        key TEXT PRIMARY KEY,
        fence INTEGER NOT NULL,
        holder TEXT NOT NULL,
        expires_at REAL NOT NULL,
        data TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX quanda_leases_expiry ON quanda_leases(expires_at)",
    "ALTER TABLE quanda_messages ADD COLUMN fence INTEGER NOT NULL DEFAULT 0",
    "INSERT INTO quanda_meta (key, value) VALUES ('fence', 0)",
)

MIGRATIONS = [
    Migration(1, "messages, tokens, content checkpoints, counters, facts", V1_TABLES),
    Migration(2, "leases with fences on the database's clock; every message remembers the fence that wrote it",
              V2_LEASES),
]


def apply_migrations(conn: sqlite3.Connection, apply: bool = True) -> SchemaStatus:
    """Where the database stands, after applying what is pending (unless `apply` is False); refuses a
    database migrated by a newer version (QuandaSchemaError)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS quanda_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
        row = conn.execute("SELECT value FROM quanda_meta WHERE key = 'schema'").fetchone()
        status = plan("SQLite", MIGRATIONS, int(row[0]) if row else 0)
        refuse_newer(status)
        if apply and status.pending:
            for migration in status.pending:
                for statement in migration.change:
                    conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO quanda_meta (key, value) VALUES ('schema', ?)", (status.known,))
            status = dataclasses.replace(status, version=status.known, pending=[], applied=status.pending)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return status
