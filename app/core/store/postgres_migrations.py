"""The PostgreSQL store's migrations (the rules: `migrations.py`), applied when the store opens, in one
transaction under an advisory lock of the schema (`pg_advisory_xact_lock`): PostgreSQL's DDL is
transactional, so a migration is applied whole or not at all, and servers starting together take turns.
The version is the row `schema` of `quanda_meta`; a schema made before migrations existed has only the row
`version` = '1', which is migration 1.

Migration 2 adds leases (fenced, on the database's clock), a fence on every message, and new functions under
new names — `quanda_append2`, `quanda_commit_records2` — so that a server of the version before migrations,
which re-runs migration 1's `CREATE OR REPLACE` whenever it finds `version` unlike its own, can never
replace them. `quanda_append2` checkpoints the content at gaps that grow with the message (as on SQLite:
O(1) copying per chunk, a WAL linear in the message's length, where migration 1's `quanda_append` rewrote
the whole content every 64 chunks); `quanda_commit_records2` takes the records' row locks in (kind, key)
order, so two units never deadlock, and checks a job's lease under a share lock before writing anything.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .migrations import Migration, SchemaStatus, plan, refuse_newer
from .postgres_schema import V1_DDL

V2_DDL = r"""
CREATE TABLE {s}.quanda_leases (
    key text COLLATE "C" PRIMARY KEY,
    fence bigint NOT NULL,
    holder text NOT NULL,
    expires_at double precision NOT NULL,
    data text NOT NULL
);
CREATE INDEX quanda_leases_expiry ON {s}.quanda_leases (expires_at);
CREATE SEQUENCE {s}.quanda_fence;
ALTER TABLE {s}.quanda_messages ADD COLUMN fence bigint NOT NULL DEFAULT 0;

CREATE FUNCTION {s}.quanda_checkpoint_gap(p_seq bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $fn$
    -- chunks between two checkpoints of the content: half the message, a power of two from 64 to 8192
    SELECT least(8192, greatest(64, (2 ^ floor(log(2, greatest(p_seq / 2, 1)::numeric)))::bigint))
$fn$;

CREATE FUNCTION {s}.quanda_append2(
    p_channel text, p_origin text, p_ids text[], p_kinds text[], p_texts bytea[], p_estimates bytea[],
    p_leases text[], p_fences bigint[], p_max_bytes bigint, p_now double precision,
    OUT statuses smallint[], OUT vals bigint[])
LANGUAGE plpgsql AS $fn$
-- Appends a batch of tokens, ordered by message id (so rows are locked in id order). Per write: status 0
-- and its seq, 1 unknown message, 2 immutable, 3 over the size limit (and the size), 4 already sealed
-- (an `immutable` write on an immutable message: the existing seal's seq), 5 fenced out (a job's write
-- whose lease no longer has its fence — checked under a share lock, so a taker waits for this commit — or
-- whose fence is lower than the message's: a newer job has written it; nothing written). A write with a
-- higher fence raises the message's.
DECLARE
    v_n int := coalesce(cardinality(p_ids), 0);
    v_i int := 1;
    v_first int;
    v_id text;
    v_kind text;
    v_last bigint;
    v_start bigint;
    v_sealed boolean;
    v_bytes bigint;
    v_cseq bigint;
    v_size bigint;
    v_fence bigint;
    v_lease_fence bigint;
    v_content bytea;
    v_content_set boolean;
    v_estimate bytea;
    v_estimate_set boolean;
    v_warning bytea;
    v_warning_set boolean;
    v_checkpoint boolean;
BEGIN
    statuses := array_fill(0::smallint, ARRAY[v_n]);
    vals := array_fill(0::bigint, ARRAY[v_n]);
    WHILE v_i <= v_n LOOP
        v_id := p_ids[v_i];
        v_first := v_i;
        SELECT m.last_seq, m.immutable, m.content_bytes, m.content_seq, m.fence
          INTO v_last, v_sealed, v_bytes, v_cseq, v_fence
          FROM {s}.quanda_messages m WHERE m.id = v_id FOR UPDATE;
        IF NOT FOUND THEN
            WHILE v_i <= v_n AND p_ids[v_i] = v_id LOOP
                statuses[v_i] := 1;
                v_i := v_i + 1;
            END LOOP;
            CONTINUE;
        END IF;
        v_start := v_last;
        v_content_set := false;
        v_estimate_set := false;
        v_warning_set := false;
        WHILE v_i <= v_n AND p_ids[v_i] = v_id LOOP
            v_kind := p_kinds[v_i];
            v_size := CASE v_kind WHEN 'chunk' THEN v_bytes + octet_length(p_texts[v_i])
                                  WHEN 'override' THEN octet_length(p_texts[v_i])
                                  ELSE v_bytes END;
            IF p_fences[v_i] IS NOT NULL THEN
                SELECT l.fence INTO v_lease_fence FROM {s}.quanda_leases l WHERE l.key = p_leases[v_i] FOR SHARE;
            END IF;
            IF p_fences[v_i] IS NOT NULL AND (p_fences[v_i] < v_fence OR v_lease_fence IS DISTINCT FROM p_fences[v_i])
            THEN
                statuses[v_i] := 5;
            ELSIF v_sealed THEN
                IF v_kind = 'immutable' THEN
                    statuses[v_i] := 4;
                    vals[v_i] := v_last;
                ELSE
                    statuses[v_i] := 2;
                END IF;
            ELSIF v_size > p_max_bytes THEN
                statuses[v_i] := 3;
                vals[v_i] := v_size;
            ELSE
                v_fence := greatest(v_fence, coalesce(p_fences[v_i], v_fence));
                v_last := v_last + 1;
                v_bytes := v_size;
                vals[v_i] := v_last;
                IF v_kind = 'chunk' THEN
                    v_estimate := p_estimates[v_i];
                    v_estimate_set := true;
                ELSIF v_kind = 'override' THEN
                    v_content := p_texts[v_i];
                    v_content_set := true;
                    v_cseq := v_last;
                    v_estimate := NULL;
                    v_estimate_set := true;
                ELSIF v_kind = 'warning' THEN
                    v_warning := p_texts[v_i];
                    v_warning_set := true;
                ELSE
                    v_sealed := true;
                    v_estimate := NULL;
                    v_estimate_set := true;
                    v_warning := ''::bytea;
                    v_warning_set := true;
                END IF;
            END IF;
            v_i := v_i + 1;
        END LOOP;
        IF v_last > v_start THEN
            INSERT INTO {s}.quanda_tokens (message_id, seq, kind, text, estimate)
            SELECT v_id, u.seq, u.kind, u.text, u.estimate
              FROM unnest(vals[v_first:v_i - 1], statuses[v_first:v_i - 1], p_kinds[v_first:v_i - 1],
                          p_texts[v_first:v_i - 1], p_estimates[v_first:v_i - 1])
                   AS u(seq, status, kind, text, estimate)
             WHERE u.status = 0;
            v_checkpoint := v_sealed OR v_last - v_cseq >= {s}.quanda_checkpoint_gap(v_last);
            UPDATE {s}.quanda_messages m SET
                last_seq = v_last,
                content_bytes = v_bytes,
                immutable = v_sealed,
                updated_at = p_now,
                fence = v_fence,
                estimate = CASE WHEN v_estimate_set THEN v_estimate ELSE m.estimate END,
                warning = CASE WHEN v_warning_set THEN v_warning ELSE m.warning END,
                content = CASE
                    WHEN v_checkpoint THEN
                        (CASE WHEN v_content_set THEN v_content ELSE m.content END)
                        || coalesce((SELECT string_agg(t.text, ''::bytea ORDER BY t.seq) FROM {s}.quanda_tokens t
                                      WHERE t.message_id = v_id AND t.seq > v_cseq AND t.kind = 'chunk'), ''::bytea)
                    WHEN v_content_set THEN v_content
                    ELSE m.content END,
                content_seq = CASE WHEN v_checkpoint THEN v_last ELSE v_cseq END
             WHERE m.id = v_id;
            PERFORM pg_notify(p_channel, 'm' || p_origin || v_id || ':' || v_last);
        END IF;
    END LOOP;
END
$fn$;

CREATE FUNCTION {s}.quanda_commit_records2(
    p_verbs text[], p_kinds text[], p_keys bytea[], p_datas text[], p_now double precision,
    p_lease text, p_fence bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
-- One unit of record operations, all in the caller's transaction. With a lease: first, under a share lock of
-- the lease's row (a taker waits for this unit), SQLSTATE QU002 unless it still has this fence. Then the ops
-- in (kind, key) order — ops on one record keep theirs — so two units lock rows in one order and never
-- deadlock; an insert whose key exists raises SQLSTATE QU001, which rolls the whole unit back.
DECLARE
    op record;
    v_fence bigint;
BEGIN
    IF p_lease IS NOT NULL THEN
        SELECT fence INTO v_fence FROM {s}.quanda_leases WHERE key = p_lease FOR SHARE;
        IF v_fence IS DISTINCT FROM p_fence THEN
            RAISE EXCEPTION 'lease % is not held with fence %', p_lease, p_fence USING ERRCODE = 'QU002';
        END IF;
    END IF;
    FOR op IN SELECT u.verb, u.kind, u.key, u.data FROM unnest(p_verbs, p_kinds, p_keys, p_datas)
              WITH ORDINALITY AS u(verb, kind, key, data, n) ORDER BY u.kind, u.key, u.n LOOP
        IF op.verb = 'delete' THEN
            DELETE FROM {s}.quanda_records WHERE kind = op.kind AND key = op.key;
        ELSIF op.verb = 'put' THEN
            INSERT INTO {s}.quanda_records AS r (kind, key, data, updated_at)
            VALUES (op.kind, op.key, op.data, p_now)
            ON CONFLICT (kind, key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at;
        ELSE
            INSERT INTO {s}.quanda_records (kind, key, data, updated_at)
            VALUES (op.kind, op.key, op.data, p_now) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'record %/% exists', op.kind, op.key USING ERRCODE = 'QU001';
            END IF;
        END IF;
    END LOOP;
END
$fn$;
"""

MIGRATIONS = [
    Migration(1, "messages, tokens, records, counters, facts; quanda_append, quanda_commit_records", V1_DDL),
    Migration(2, "leases with fences on the database's clock, a fence on every message; quanda_append2 "
                 "(content checkpoints at growing gaps: linear WAL), quanda_commit_records2 (row locks in key "
                 "order, the job's lease checked)", V2_DDL),
]


async def apply_migrations(conn: Any, s: str, lock_key: int, apply: bool = True) -> SchemaStatus:
    """Where schema `s` stands, after applying what is pending (unless `apply` is False), in one transaction
    under the advisory lock `lock_key`; refuses a schema migrated by a newer version (QuandaSchemaError)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key)
        version = 0
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{s}.quanda_meta"):
            rows = dict(await conn.fetch(f"SELECT key, value FROM {s}.quanda_meta WHERE key IN ('schema', 'version')"))
            version = int(rows.get("schema") or rows.get("version") or 0)
        status = plan("PostgreSQL", MIGRATIONS, version)
        refuse_newer(status)
        if apply and status.pending:
            if not s.startswith('"public"'):
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            for migration in status.pending:
                await conn.execute(migration.change.format(s=s))
            await conn.execute(f"INSERT INTO {s}.quanda_meta VALUES ('schema', $1) ON CONFLICT (key) "
                               f"DO UPDATE SET value = EXCLUDED.value", str(status.known))
            status = dataclasses.replace(status, version=status.known, pending=[], applied=status.pending)
    return status
