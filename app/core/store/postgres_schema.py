"""The PostgreSQL store's first schema (migration 1, as shipped before migrations existed: never changed, a
newer migration replaces what it must) and the query that reads a message, as SQL text formatted with the
(quoted) schema name `{s}`; and the contract of the functions with the Python side (the status codes of
`quanda_append2`, the SQLSTATEs of `quanda_commit_records2`; both in `postgres_migrations.py`).

User text is stored as UTF-8 in `bytea` columns: PostgreSQL's `text` cannot hold U+0000, which the core
accepts, and bytewise order is code point order (Python's), whatever the database's collation.
"""

from __future__ import annotations

CLAIM_TAKEN = "QU001"  # SQLSTATE raised by quanda_commit_records when an insert finds its key taken
FENCED = "QU002"  # SQLSTATE raised by quanda_commit_records2 when the job's lease has another fence
RETRIED = ("40P01", "40001")  # deadlock, serialization failure: the unit is tried again

# status codes of quanda_append2, one per write
STATUS_OK, STATUS_NOT_FOUND, STATUS_IMMUTABLE, STATUS_OVER_LIMIT, STATUS_SEALED, STATUS_FENCED_OUT = 0, 1, 2, 3, 4, 5

V1_DDL = """
CREATE TABLE IF NOT EXISTS {s}.quanda_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.quanda_messages (
    id text COLLATE "C" PRIMARY KEY,
    role bytea NOT NULL,
    content bytea NOT NULL,
    content_bytes bigint NOT NULL,
    content_seq bigint NOT NULL DEFAULT 0,
    estimate bytea,
    warning bytea NOT NULL DEFAULT '',
    immutable boolean NOT NULL DEFAULT false,
    last_seq bigint NOT NULL DEFAULT 0,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX IF NOT EXISTS quanda_messages_created ON {s}.quanda_messages (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS quanda_messages_role ON {s}.quanda_messages (role, immutable);
CREATE TABLE IF NOT EXISTS {s}.quanda_tokens (
    message_id text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    text bytea NOT NULL,
    estimate bytea,
    PRIMARY KEY (message_id, seq)
);
CREATE TABLE IF NOT EXISTS {s}.quanda_records (
    kind text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    data text NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS {s}.quanda_counters (key bytea PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.quanda_facts (
    id bigserial PRIMARY KEY,
    origin text NOT NULL,
    topic bytea NOT NULL,
    data text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION {s}.quanda_append(
    p_channel text, p_origin text, p_ids text[], p_kinds text[], p_texts bytea[], p_estimates bytea[],
    p_max_bytes bigint, p_checkpoint_every bigint, p_now double precision,
    OUT statuses smallint[], OUT vals bigint[])
LANGUAGE plpgsql AS $fn$
-- Appends a batch of tokens, ordered by message id (so rows are locked in id order). Per write: status 0
-- and its seq, 1 unknown message, 2 immutable, 3 over the size limit (and the size), 4 already sealed
-- (an `immutable` write on an immutable message: the existing seal's seq).
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
        SELECT m.last_seq, m.immutable, m.content_bytes, m.content_seq INTO v_last, v_sealed, v_bytes, v_cseq
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
            IF v_sealed THEN
                IF v_kind = 'immutable' THEN
                    statuses[v_i] := 4;
                    vals[v_i] := v_last;
                ELSE
                    statuses[v_i] := 2;
                END IF;
            ELSE
                v_size := CASE v_kind WHEN 'chunk' THEN v_bytes + octet_length(p_texts[v_i])
                                      WHEN 'override' THEN octet_length(p_texts[v_i])
                                      ELSE v_bytes END;
                IF v_size > p_max_bytes THEN
                    statuses[v_i] := 3;
                    vals[v_i] := v_size;
                ELSE
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
            v_checkpoint := v_sealed OR v_last - v_cseq >= p_checkpoint_every;
            UPDATE {s}.quanda_messages m SET
                last_seq = v_last,
                content_bytes = v_bytes,
                immutable = v_sealed,
                updated_at = p_now,
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

CREATE OR REPLACE FUNCTION {s}.quanda_commit_records(
    p_verbs text[], p_kinds text[], p_keys bytea[], p_datas text[], p_now double precision)
RETURNS void LANGUAGE plpgsql AS $fn$
-- One unit of record operations, all in the caller's transaction; an insert whose key exists raises
-- SQLSTATE QU001, which rolls the whole unit back.
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_verbs), 0) LOOP
        IF p_verbs[i] = 'delete' THEN
            DELETE FROM {s}.quanda_records WHERE kind = p_kinds[i] AND key = p_keys[i];
        ELSIF p_verbs[i] = 'put' THEN
            INSERT INTO {s}.quanda_records AS r (kind, key, data, updated_at)
            VALUES (p_kinds[i], p_keys[i], p_datas[i], p_now)
            ON CONFLICT (kind, key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at;
        ELSE
            INSERT INTO {s}.quanda_records (kind, key, data, updated_at)
            VALUES (p_kinds[i], p_keys[i], p_datas[i], p_now) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'record %/% exists', p_kinds[i], p_keys[i] USING ERRCODE = 'QU001';
            END IF;
        END IF;
    END LOOP;
END
$fn$;
"""

MESSAGE_SELECT = """
SELECT m.id, m.role, m.content, m.estimate, m.warning, m.immutable, m.last_seq, m.created_at, m.updated_at,
       CASE WHEN m.last_seq > m.content_seq THEN
           (SELECT string_agg(t.text, ''::bytea ORDER BY t.seq) FROM {s}.quanda_tokens t
             WHERE t.message_id = m.id AND t.seq > m.content_seq AND t.kind = 'chunk') END AS tail
  FROM {s}.quanda_messages m"""
