"""Forward-only, numbered schema migrations, the same rules on every backend.

Each backend has a list of migrations numbered 1, 2, 3, … (`sqlite_migrations.py`, `postgres_migrations.py`,
`mongo_migrations.py`); the database records the number of the last one applied (0: none, a new database).
When a store opens, the first server of a new version applies what is pending, once, under a lock the
database holds (SQLite's write lock, a PostgreSQL advisory lock, a lock document on MongoDB), each migration
with its number in one transaction where the backend has them; the others wait for the lock, then find
nothing left to do. A migration is never undone and never applied twice; a database whose number is higher
than any this code knows was migrated by a newer version: the store refuses to open, saying so, rather
than run old code against a schema it does not know (`QuandaSchemaError`).

`quanda migrate --check` prints where a database stands (`SchemaStatus.describe`); `quanda migrate` applies
what is pending without starting the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import QuandaSchemaError


@dataclass(frozen=True)
class Migration:
    number: int
    what: str  # one line: what it changes
    change: Any  # the backend's form: SQL statements, or a function of the database


@dataclass(frozen=True)
class SchemaStatus:
    backend: str
    version: int  # the last migration the database has
    known: int  # the last migration this code knows
    pending: list[Migration] = field(default_factory=list)
    applied: list[Migration] = field(default_factory=list)  # by this call

    @property
    def newer(self) -> bool:
        return self.version > self.known

    def describe(self) -> str:
        lines = [f"{self.backend} schema at version {self.version}; this version of Quanda knows up to {self.known}."]
        lines += [f"  applied now: {m.number}. {m.what}" for m in self.applied]
        if self.newer:
            lines.append("  The database was migrated by a newer version of Quanda: upgrade this one to use it.")
        elif self.pending:
            lines += [f"  pending: {m.number}. {m.what}" for m in self.pending]
            lines.append("  Run `quanda migrate` (or start the server) to apply them.")
        else:
            lines.append("  Up to date.")
        return "\n".join(lines)


def plan(backend: str, migrations: list[Migration], version: int) -> SchemaStatus:
    """Where a database at `version` stands against `migrations` (numbered 1, 2, … in order)."""
    assert [m.number for m in migrations] == list(range(1, len(migrations) + 1)), "migrations are numbered 1, 2, …"
    return SchemaStatus(backend, version, len(migrations), [m for m in migrations if m.number > version])


def refuse_newer(status: SchemaStatus) -> None:
    if status.newer:
        raise QuandaSchemaError(
            f"the {status.backend} database's schema is at version {status.version}, newer than this version of "
            f"Quanda knows ({status.known}): it was migrated by a newer Quanda. Upgrade this server (or point it "
            f"at another database); it will not run old code against a schema it does not know.")


def pending_refused(status: SchemaStatus) -> QuandaSchemaError:
    return QuandaSchemaError(f"the {status.backend} database's schema is at version {status.version} and needs "
                             f"migrations {', '.join(str(m.number) for m in status.pending)}: run `quanda migrate`")
