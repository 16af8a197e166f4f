"""The MongoDB store's migrations (the rules: `migrations.py`). MongoDB builds indexes and rewrites documents
outside transactions, so each migration here is idempotent (creating an index that exists, or updating only
the documents still lacking what it adds, changes nothing), and they run under a lock document: the first
server to insert `{_id: "migrating"}` into `quanda_meta` applies them and deletes it; the others wait for it
(a lock older than LOCK_STALE_S was left by a server that died, and is taken over). The version is the
document `{_id: "schema", version}` of `quanda_meta` (none: 0; a database written before migrations has
migration 1's indexes already, and creating them again changes nothing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from bson import Int64

from ..errors import QuandaSchemaError
from .migrations import Migration, SchemaStatus, plan, refuse_newer
from .mongo_facts import FACTS_KEPT_S

META = "quanda_meta"
LEASES = "quanda_leases"
LOCK_STALE_S = 120.0
LOCK_POLL_S = 0.2
FENCE_FIELD_BSON = 1 + len("fence") + 1 + 8  # type byte, "fence\0", an int64


async def _v1_indexes(db: Any) -> None:
    messages = db["quanda_messages"]
    await messages.create_index([("role", 1), ("immutable", 1), ("created_at", -1), ("_id", -1)],
                                name="role_immutable_newest")
    await messages.create_index([("immutable", 1), ("created_at", -1), ("_id", -1)], name="immutable_newest")
    await db["quanda_facts"].create_index("at", name="prune", expireAfterSeconds=FACTS_KEPT_S)


async def _v2_leases(db: Any) -> None:
    await db[LEASES].create_index("expires_at", name="expiry")
    # every message gets the fence field it will keep (an int64, so its size never changes), its size counted
    await db["quanda_messages"].update_many({"fence": {"$exists": False}}, [{"$set": {
        "fence": {"$literal": Int64(0)}, "bson_size": {"$add": ["$bson_size", FENCE_FIELD_BSON]}}}])


MIGRATIONS = [
    Migration(1, "indexes of messages (by role, mutability, age) and the facts' TTL", _v1_indexes),
    Migration(2, "leases with fences on the database's clock (`$$NOW`); every message remembers the fence that "
                 "wrote it", _v2_leases),
]


async def apply_migrations(db: Any, holder: str, timeout_s: float, apply: bool = True) -> SchemaStatus:
    """Where the database stands, after applying what is pending (unless `apply` is False), under the lock
    document; refuses a database migrated by a newer version (QuandaSchemaError)."""
    from pymongo.errors import DuplicateKeyError
    meta = db[META]
    status = plan("MongoDB", MIGRATIONS, await _version(meta))
    refuse_newer(status)
    if not apply or not status.pending:
        return status
    waited_from = time.monotonic()
    while True:
        try:
            await meta.insert_one({"_id": "migrating", "holder": holder, "at": time.time()})
            break
        except DuplicateKeyError:
            lock = await meta.find_one({"_id": "migrating"})
            if lock is not None and lock.get("at", 0) < time.time() - LOCK_STALE_S:
                await meta.delete_one({"_id": "migrating", "holder": lock.get("holder")})  # its server died
                continue
        status = plan("MongoDB", MIGRATIONS, await _version(meta))
        refuse_newer(status)
        if not status.pending:
            return status  # another server applied them while this one waited
        if time.monotonic() - waited_from > LOCK_STALE_S + timeout_s:
            raise QuandaSchemaError("another server has been migrating this MongoDB database for too long")
        await asyncio.sleep(LOCK_POLL_S)  # waiting for another process's lock: there is no event to wait on
    try:
        status = plan("MongoDB", MIGRATIONS, await _version(meta))  # under the lock: where it stands now
        refuse_newer(status)
        for migration in status.pending:
            await migration.change(db)
            await meta.replace_one({"_id": "schema"}, {"_id": "schema", "version": migration.number}, upsert=True)
    finally:
        await meta.delete_one({"_id": "migrating", "holder": holder})
    return dataclasses.replace(status, version=status.known, pending=[], applied=status.pending)


async def _version(meta: Any) -> int:
    doc = await meta.find_one({"_id": "schema"})
    return int(doc["version"]) if doc else 0
