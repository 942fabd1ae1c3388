-- Citus: every tenant table distributed by main account, 0.2 -> 0.3 (as in
-- 29_security.sql, 303_identity_sub_users.sql, 304_identity_invitations.sql,
-- 37_outbox_delivery.sql, 50_voice.sql, 52_security_settings.sql,
-- 53_transcript_protection.sql, 54_usage.sql and 95_citus.sql; see
-- docs/operations/scale-out.md).

-- Policies without subqueries (Citus refuses them on distributed tables).
CREATE FUNCTION tenancy._subtree_member(user_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN tenancy.may('members', 'read')
           AND EXISTS (SELECT 1 FROM tenancy.memberships m
                       WHERE m.main_id = tenancy.root_id(tenancy.current_path())
                         AND m.user_id = _subtree_member.user_id
                         AND m.account_path OPERATOR(tenancy.<@) tenancy.current_path());
END $$;

CREATE FUNCTION tenancy._api_key_visible(main_id bigint, key_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN tenancy.may('api_keys', 'read')
           AND EXISTS (SELECT 1 FROM tenancy.api_keys k
                       WHERE k.main_id = _api_key_visible.main_id AND k.id = _api_key_visible.key_id
                         AND k.account_path OPERATOR(tenancy.<@) tenancy.current_path());
END $$;

ALTER POLICY member_in_subtree ON tenancy.users
    USING (tenancy._is_own_user(id) OR tenancy._subtree_member(id));
ALTER POLICY key_visible ON tenancy.api_key_usage
    USING (tenancy._api_key_visible(main_id, key_id));

-- usage_totals carries its main account, the distribution column.
ALTER TABLE tenancy.usage_totals ADD COLUMN main_id bigint NOT NULL
    GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED;

-- Writers and readers that name main_id as a value (Citus routes by it), or
-- a key that gains it in front there.

CREATE OR REPLACE FUNCTION tenancy.mail_failed(id bigint, claimer text, error text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    o tenancy.outbox;
    msg text := left(coalesce(error, 'unknown error'), 1000);
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_failed()');
    UPDATE tenancy.outbox x
    SET failed_at = now(), attempts = x.attempts + 1, last_error = msg
    WHERE x.id = mail_failed.id AND x.claimed_by = claimer AND x.sent_at IS NULL AND x.failed_at IS NULL
    RETURNING x.* INTO o;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- The mail's account, or its main account once the account is gone.
    IF o.account_path IS NULL THEN
        SELECT a.path INTO o.account_path FROM tenancy.accounts a WHERE a.main_id = o.main_id AND a.id = o.main_id;
    END IF;
    IF o.account_path IS NULL THEN
        RETURN true;
    END IF;
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.outbox_failures (main_id, outbox_id, account_path, recipient, subject, error, failed_at)
        VALUES (tenancy.root_id(o.account_path), o.id, o.account_path, o.recipient, o.subject, msg, o.failed_at);
    ELSE
        INSERT INTO tenancy.outbox_failures (outbox_id, account_path, recipient, subject, error, failed_at)
        VALUES (o.id, o.account_path, o.recipient, o.subject, msg, o.failed_at);
    END IF;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION tenancy._voice_row() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    ref record;
    target regclass;
    visible boolean;
BEGIN
    -- Not a generated column: a composite foreign key holding one cannot SET
    -- NULL on delete, and a deleted agent must leave its call history.
    -- A new row's main_id, when given (on Citus the coordinator sends its
    -- default, the active main account, which routed the row), must be its
    -- path's: a row never sits in another main account's shard.
    IF TG_OP = 'INSERT' AND NEW.main_id IS DISTINCT FROM tenancy.root_id(NEW.account_path)
       AND NEW.main_id IS NOT NULL THEN
        RAISE EXCEPTION 'main_id % is not the main account of the row''s account', NEW.main_id
            USING ERRCODE = '23514';
    END IF;
    NEW.main_id := tenancy.root_id(NEW.account_path);
    IF TG_OP = 'INSERT' THEN
        NEW.id := coalesce(NEW.id, nextval('tenancy.voice_id_seq'));
        NEW.public_id := tenancy._voice_public_id(TG_ARGV[0], NEW.main_id, NEW.id);
        NEW.created_at := now();
    ELSE
        NEW.id := OLD.id;
        NEW.public_id := OLD.public_id;
        NEW.created_at := OLD.created_at;
    END IF;
    NEW.updated_at := now();
    FOR ref IN SELECT r.col, r.tbl FROM (VALUES
            ('conversations', 'agent_id', 'tenancy.agents'), ('conversations', 'contact_id', 'tenancy.contacts'),
            ('conversations', 'channel_id', 'tenancy.channels'), ('channels', 'agent_id', 'tenancy.agents'),
            ('campaigns', 'agent_id', 'tenancy.agents'),
            ('knowledge_documents', 'knowledge_base_id', 'tenancy.knowledge_bases')) r(owner_tbl, col, tbl)
        WHERE r.owner_tbl = TG_TABLE_NAME
    LOOP
        CONTINUE WHEN (to_jsonb(NEW) ->> ref.col) IS NULL
                      OR (TG_OP = 'UPDATE' AND (to_jsonb(NEW) ->> ref.col) IS NOT DISTINCT FROM (to_jsonb(OLD) ->> ref.col)
                          AND NEW.account_path = OLD.account_path);
        target := ref.tbl::regclass;
        EXECUTE format('SELECT EXISTS (SELECT FROM %s x WHERE x.main_id = $1 AND x.id = $2)', target)
            INTO visible USING tenancy.root_id(NEW.account_path), (to_jsonb(NEW) ->> ref.col)::bigint;
        IF NOT visible THEN
            RAISE EXCEPTION '% % not found', replace(replace(ref.col, '_id', ''), '_', ' '), to_jsonb(NEW) ->> ref.col
                USING ERRCODE = '23503';
        END IF;
    END LOOP;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tenancy._effective_security(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    result jsonb;
    -- The main account as a value: Citus routes by it to one shard (the
    -- triggers run this on the shard, where only co-located shards are read).
    mid bigint := tenancy.root_id(p);
BEGIN
    -- (PL/pgSQL, not SQL: its plan is cached for the session; the triggers call it per row)
    SELECT jsonb_build_object(
        'phi_protection', pl.phi_protection AND coalesce(bool_or(x.phi), false),
        'call_recording', pl.call_recording AND coalesce(bool_or(x.rec) FILTER (WHERE x.lvl = 1), false)
                          AND NOT coalesce(bool_or(NOT x.rec), false),
        'transcript_encryption', pl.transcript_encryption AND coalesce(bool_or(x.enc), false),
        'audit_log', pl.audit_log AND (coalesce(bool_or(x.aud) FILTER (WHERE x.lvl = 1), true)
                                       OR coalesce(bool_or(x.aud) FILTER (WHERE x.lvl > 1), false)))
    FROM tenancy.accounts m
    JOIN tenancy.plans pl ON pl.name = m.plan
    LEFT JOIN LATERAL (
        SELECT tenancy.nlevel(a.path) AS lvl,
               (a.settings #>> '{security,phi_protection}')::boolean AS phi,
               (a.settings #>> '{security,call_recording}')::boolean AS rec,
               (a.settings #>> '{security,transcript_encryption}')::boolean AS enc,
               (a.settings #>> '{security,audit_log}')::boolean AS aud
        FROM tenancy.accounts a
        WHERE a.main_id = mid AND a.id = ANY (tenancy.labels(p))) x ON true
    WHERE m.main_id = mid AND m.id = mid
    GROUP BY pl.phi_protection, pl.call_recording, pl.transcript_encryption, pl.audit_log
    INTO result;
    RETURN result;
END $$;

CREATE OR REPLACE FUNCTION tenancy._queue_redaction(p tenancy.account_path) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    t regclass;
    n bigint;
    queued boolean := false;
BEGIN
    FOR t IN SELECT x.tbl FROM tenancy.transcript_tables x LOOP
        -- (main_id named: on Citus this runs in a trigger on the account's
        -- shard, which may read only co-located shards of its node.)
        CONTINUE WHEN EXISTS (SELECT FROM tenancy.phi_redaction_jobs j
                              WHERE j.main_id = tenancy.root_id(p) AND j.tbl = t AND j.finished_at IS NULL
                                AND j.account_path @> p);
        EXECUTE format('SELECT count(*) FROM %s c WHERE c.main_id = $1 AND c.account_path <@ $2', t)
            INTO n USING tenancy.root_id(p), p;
        -- On Citus main_id is a plain column that routes the row (95_citus.sql).
        IF tenancy._citus_distributed() THEN
            INSERT INTO tenancy.phi_redaction_jobs (main_id, account_path, tbl, total)
            VALUES (tenancy.root_id(p), p, t, n);
        ELSE
            INSERT INTO tenancy.phi_redaction_jobs (account_path, tbl, total) VALUES (p, t, n);
        END IF;
        queued := true;
    END LOOP;
    IF queued THEN
        PERFORM tenancy._start_phi_redactor();
    END IF;
END $$;

CREATE OR REPLACE FUNCTION tenancy._usage_fold() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    tot record;
BEGIN
    IF TG_OP = 'INSERT' AND tenancy._citus_distributed() THEN
        -- On Citus this runs on the records' shard, where a transition table
        -- cannot feed a distributed INSERT: one row at a time, by main_id,
        -- into the co-located totals (95_citus.sql).
        FOR tot IN SELECT tenancy.root_id(n.account_path) AS main_id, g.grain,
                        date_trunc(g.grain, n.at, 'UTC') AS bucket, n.account_path, n.kind,
                        sum(n.quantity) AS quantity, count(*) AS records
                 FROM new_rows n CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
                 GROUP BY 1, 2, 3, 4, 5
                 ORDER BY 1, 2, 3, 4, 5
        LOOP
            INSERT INTO tenancy.usage_totals AS t (main_id, grain, bucket, account_path, kind, quantity, records)
            VALUES (tot.main_id, tot.grain, tot.bucket, tot.account_path, tot.kind, tot.quantity, tot.records)
            ON CONFLICT ON CONSTRAINT usage_totals_pkey DO UPDATE
                SET quantity = t.quantity + excluded.quantity, records = t.records + excluded.records;
        END LOOP;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO tenancy.usage_totals AS t (grain, bucket, account_path, kind, quantity, records)
        SELECT g.grain, date_trunc(g.grain, n.at, 'UTC'), n.account_path, n.kind, sum(n.quantity), count(*)
        FROM new_rows n CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4  -- one lock order for every writer: no deadlocks
        -- (By name: on Citus the key gains main_id in front.)
        ON CONFLICT ON CONSTRAINT usage_totals_pkey DO UPDATE
            SET quantity = t.quantity + excluded.quantity, records = t.records + excluded.records;
    ELSE
        -- A DBA's DELETE (clients have no DELETE): the totals follow.
        UPDATE tenancy.usage_totals t SET quantity = t.quantity - o.quantity, records = t.records - o.records
        FROM (SELECT g.grain, date_trunc(g.grain, r.at, 'UTC') AS bucket, r.account_path, r.kind,
                     sum(r.quantity) AS quantity, count(*) AS records
              FROM old_rows r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
              GROUP BY 1, 2, 3, 4) o
        WHERE t.grain = o.grain AND t.bucket = o.bucket AND t.account_path = o.account_path
          AND t.kind = o.kind;
        DELETE FROM tenancy.usage_totals t WHERE t.records <= 0;
    END IF;
    RETURN NULL;
END $$;

-- distribute(): which tables, and how they are reshaped.

