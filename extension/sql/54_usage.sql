-- Usage records (call minutes, LLM tokens, ...) per account, and the roll-up
-- that answers reports per account and per subtree for billing.
--
-- Design (measured in bench/usage, bench/RESULTS.md "## Usage roll-up"):
-- - usage_records holds every record, append-only (clients write through
--   record_usage() and get no UPDATE or DELETE). It is protected like any tenant table (protect(): RLS, the FK
--   that carries rows on a move, the audit trigger).
-- - usage_totals holds sums per (grain, bucket, account, kind) for two UTC
--   grains: day and month. A statement-level trigger folds each INSERT's
--   rows into it with one INSERT ... ON CONFLICT DO UPDATE (a batch costs one
--   upsert per bucket, not per row). Totals are per account, never per
--   ancestor: a write locks only its own account's bucket rows, so a busy
--   subtree never queues on its main account's row (the hot-row problem of
--   rolled-up counters). The roll-up happens at read time instead:
-- - A report splits [from, to) into whole months, then whole days, and reads
--   the raw records only for the partial days at the two ends. Each grain is one index scan of usage_totals' primary key
--   (grain, bucket = ANY(...), account_path in [path, subtree_upper(path))):
--   a subtree is one contiguous range in account_path's btree order, so a
--   calendar month for a main account reads one row per account and kind.
-- - Buckets are UTC. A range not aligned to UTC days reads raw rows for its
--   ragged ends (a subtree of more than 100 accounts through (main_id, at),
--   a smaller one through (account_path, at)). No hour grain:
--   with a record or two per account and hour (the benchmark's 10 M rows over
--   10,000 accounts and 3 months), hour totals would be as many rows as the
--   records themselves, and as slow to sum.
-- - Contention: concurrent writers to the same account, kind and day wait on
--   that bucket row until the first commits (upserts are made in key order, so
--   they never deadlock). Record usage in short transactions, or in batches
--   (one INSERT of many rows folds them in one statement).

-- Kinds of usage: extensible by the DBA (INSERT, as tenancy_admin) without a
-- release; records reference them, so a typo is refused, not billed.
CREATE TABLE tenancy.usage_kinds (
    kind text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]*$' AND length(kind) <= 63),
    unit text NOT NULL CHECK (length(unit) BETWEEN 1 AND 40),
    description text NOT NULL
);
INSERT INTO tenancy.usage_kinds (kind, unit, description) VALUES
    ('call_minutes', 'minute', 'Voice call time'),
    ('llm_tokens', 'token', 'Language-model tokens, prompt and completion'),
    ('tts_characters', 'character', 'Text-to-speech characters synthesised'),
    ('stt_minutes', 'minute', 'Speech-to-text audio transcribed'),
    ('sms_messages', 'message', 'Text messages sent');

CREATE SEQUENCE tenancy.usage_record_id_seq;

CREATE TABLE tenancy.usage_records (
    account_path tenancy.account_path NOT NULL,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    id bigint NOT NULL DEFAULT nextval('tenancy.usage_record_id_seq'),
    kind text NOT NULL REFERENCES tenancy.usage_kinds (kind),
    -- Non-negative, at most 10^12, at most 6 decimals (NaN and infinities fail the bound).
    quantity numeric NOT NULL CHECK (quantity >= 0 AND quantity <= 1e12 AND scale(quantity) <= 6),
    at timestamptz NOT NULL DEFAULT now(),
    -- The platform's own reference (a call id...): a retry with the same ref
    -- records nothing new. Unique per account and kind only, so that it tells
    -- nothing about other accounts.
    ref text CHECK (ref IS NULL OR length(ref) BETWEEN 1 AND 200),
    recorded_by text,  -- principal kind:id of the writer
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);
-- protect() adopts this index for subtree scans (account_path first).
CREATE INDEX usage_records_path_at ON tenancy.usage_records (account_path, at);
-- The ragged ends of a report over a large subtree: a time slice of one tenant.
CREATE INDEX usage_records_main_at ON tenancy.usage_records (main_id, at);
CREATE UNIQUE INDEX usage_records_ref ON tenancy.usage_records (account_path, kind, ref)
    WHERE ref IS NOT NULL;

CREATE TABLE tenancy.usage_totals (
    grain text NOT NULL CHECK (grain IN ('day', 'month')),
    bucket timestamptz NOT NULL,  -- start of the UTC day or month
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE,
    kind text NOT NULL,
    quantity numeric NOT NULL,
    records bigint NOT NULL,
    PRIMARY KEY (grain, bucket, account_path, kind)
) WITH (fillfactor = 80);  -- room for HOT updates of the sums
-- The main account, by which Citus distributes the totals with their records
-- (95_citus.sql; it then leads the primary key).
ALTER TABLE tenancy.usage_totals ADD COLUMN main_id bigint NOT NULL
    GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED;

-- ---- folding records into totals ------------------------------------------------

CREATE FUNCTION tenancy._usage_fold() RETURNS trigger
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
REVOKE ALL ON FUNCTION tenancy._usage_fold() FROM PUBLIC;
CREATE TRIGGER usage_fold_insert AFTER INSERT ON tenancy.usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION tenancy._usage_fold();
CREATE TRIGGER usage_fold_delete AFTER DELETE ON tenancy.usage_records
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION tenancy._usage_fold();

-- A record's values never change (a move's cascade changes only its path).
CREATE FUNCTION tenancy._usage_immutable() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE EXCEPTION 'usage records are append-only' USING ERRCODE = '55000',
        HINT = 'Record a correction as a new record; a DBA may delete records (totals follow).';
END $$;
REVOKE ALL ON FUNCTION tenancy._usage_immutable() FROM PUBLIC;
CREATE TRIGGER usage_immutable BEFORE UPDATE OF id, kind, quantity, at, ref, recorded_by, recorded_at
    ON tenancy.usage_records FOR EACH ROW EXECUTE FUNCTION tenancy._usage_immutable();

-- DBA: recompute every total from the records (after a bulk load with
-- triggers off, a restore of records alone, or to check the fold).
-- Returns the number of total rows.
CREATE FUNCTION tenancy.usage_rebuild() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE tenancy.usage_records IN SHARE MODE;
    DELETE FROM tenancy.usage_totals;
    IF tenancy._citus_distributed() THEN
        -- On Citus main_id is a plain column that routes each total (95_citus.sql):
        -- named, the records' and totals' co-located shards fold in place.
        INSERT INTO tenancy.usage_totals (main_id, grain, bucket, account_path, kind, quantity, records)
        SELECT r.main_id, g.grain, date_trunc(g.grain, r.at, 'UTC'), r.account_path, r.kind, sum(r.quantity),
               count(*)
        FROM tenancy.usage_records r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4, 5;
    ELSE
        INSERT INTO tenancy.usage_totals (grain, bucket, account_path, kind, quantity, records)
        SELECT g.grain, date_trunc(g.grain, r.at, 'UTC'), r.account_path, r.kind, sum(r.quantity), count(*)
        FROM tenancy.usage_records r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- ---- recording ------------------------------------------------------------------------

-- record_usage(account, kind, quantity, at, ref): one usage record in an
-- account of the active subtree, by a role that may write `usage` (owner,
-- admin: the platform's API key). Returns the record's id (usg_<main>_<id>).
-- A ref already recorded for the account and kind returns that record's id
-- and records nothing (a retried call, whatever its time: a retry that let
-- `at` default to now() is still the same call), unless its quantity differs
-- (23505: the ref names another record).
CREATE FUNCTION tenancy.record_usage(account text, kind text, quantity numeric,
                                     at timestamptz DEFAULT now(), ref text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
#variable_conflict use_column
DECLARE
    a tenancy.accounts;
    new_id bigint;
    prior tenancy.usage_records;
    when_at timestamptz := coalesce(record_usage.at, now());
BEGIN
    PERFORM tenancy._require('usage', 'write');
    a := tenancy._visible_account(account);
    IF kind IS NULL OR NOT EXISTS (SELECT FROM tenancy.usage_kinds k WHERE k.kind = record_usage.kind) THEN
        RAISE EXCEPTION 'unknown usage kind "%"', kind USING ERRCODE = '22023',
            HINT = (SELECT 'Known kinds: ' || string_agg(k.kind, ', ' ORDER BY k.kind) FROM tenancy.usage_kinds k);
    END IF;
    IF quantity IS NULL OR quantity = 'NaN' OR quantity < 0 OR quantity > 1e12 OR scale(quantity) > 6 THEN
        RAISE EXCEPTION 'usage quantity must be a number from 0 to 10^12 with at most 6 decimals'
            USING ERRCODE = '22023';
    END IF;
    IF when_at > now() + interval '5 minutes' OR when_at < '2000-01-01' THEN
        RAISE EXCEPTION 'usage time must not be in the future (beyond 5 minutes of clock skew) nor before 2000'
            USING ERRCODE = '22023';
    END IF;
    IF ref IS NOT NULL AND (length(ref) = 0 OR length(ref) > 200) THEN
        RAISE EXCEPTION 'usage ref must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.usage_records AS r (account_path, kind, quantity, at, ref, recorded_by)
    VALUES (a.path, record_usage.kind, record_usage.quantity, when_at, record_usage.ref,
            tenancy._context_field('principal_kind') || ':' || tenancy._context_field('principal_id'))
    -- Only usage_records_ref can conflict (ids come from a sequence); no
    -- conflict target, as on Citus that index gains main_id in front.
    ON CONFLICT DO NOTHING
    RETURNING r.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT * INTO prior FROM tenancy.usage_records r
        WHERE r.main_id = a.main_id AND r.account_path = a.path AND r.kind = record_usage.kind
          AND r.ref = record_usage.ref;
        IF prior.quantity <> record_usage.quantity THEN
            RAISE EXCEPTION 'usage ref "%" is already recorded with another quantity', ref
                USING ERRCODE = '23505';
        END IF;
        new_id := prior.id;
    END IF;
    RETURN format('usg_%s_%s', a.main_id, new_id);
END $$;

-- usage_record(id): one usage record as the gateway answers it ({id,
-- account, kind, quantity, at, ref}), or NULL where usage_records' policies
-- would hide it (outside the active subtree, or a role that may not read
-- usage). It reads as its owner: on Citus the transaction that recorded
-- (record_usage() writes as its owner) can read the new row back only as
-- that same role.
CREATE FUNCTION tenancy.usage_record(id text) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    found_json jsonb;
BEGIN
    IF usage_record.id IS NULL OR usage_record.id !~ '^usg_[0-9]{1,18}_[0-9]{1,18}$'
       OR tenancy.current_path() IS NULL OR NOT tenancy.may('usage', 'read') THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object('id', usage_record.id, 'account', a.public_id, 'kind', u.kind,
                              'quantity', u.quantity::text, 'at', u.at, 'ref', u.ref)
    INTO found_json
    FROM tenancy.usage_records u JOIN tenancy.accounts a ON a.main_id = u.main_id AND a.path = u.account_path
    WHERE u.main_id = split_part(usage_record.id, '_', 2)::bigint
      AND u.id = split_part(usage_record.id, '_', 3)::bigint
      AND u.account_path OPERATOR(tenancy.<@) tenancy.current_path();
    RETURN found_json;
END $$;

-- ---- reports ------------------------------------------------------------------------------

-- The pieces of [lo, hi) by grain: whole UTC months, then whole days, and
-- what is left (at most two ragged ends) for the raw rows.
CREATE FUNCTION tenancy._usage_cover(lo timestamptz, hi timestamptz,
                                     OUT months timestamptz[], OUT days timestamptz[],
                                     OUT raw_from timestamptz[],
                                     OUT raw_to timestamptz[])
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    todo_from timestamptz[] := ARRAY[lo];
    todo_to timestamptz[] := ARRAY[hi];
    next_from timestamptz[];
    next_to timestamptz[];
    g text;
    l timestamptz;
    h timestamptz;
    a timestamp;  -- first whole bucket (UTC wall time)
    b timestamp;  -- end of the last whole bucket
    step interval;
    found_buckets timestamptz[];
BEGIN
    FOREACH g IN ARRAY ARRAY['month', 'day'] LOOP
        step := ('1 ' || g)::interval;
        next_from := '{}';
        next_to := '{}';
        found_buckets := '{}';
        FOR i IN 1 .. coalesce(cardinality(todo_from), 0) LOOP
            l := todo_from[i];
            h := todo_to[i];
            a := date_trunc(g, l AT TIME ZONE 'UTC');
            IF a < l AT TIME ZONE 'UTC' THEN
                a := a + step;
            END IF;
            b := date_trunc(g, h AT TIME ZONE 'UTC');
            IF a < b THEN
                found_buckets := found_buckets
                    || ARRAY(SELECT s AT TIME ZONE 'UTC' FROM generate_series(a, b - step, step) s);
                IF l < a AT TIME ZONE 'UTC' THEN
                    next_from := next_from || l;
                    next_to := next_to || (a AT TIME ZONE 'UTC');
                END IF;
                IF b AT TIME ZONE 'UTC' < h THEN
                    next_from := next_from || (b AT TIME ZONE 'UTC');
                    next_to := next_to || h;
                END IF;
            ELSE
                next_from := next_from || l;
                next_to := next_to || h;
            END IF;
        END LOOP;
        IF g = 'month' THEN
            months := found_buckets;
        ELSE
            days := found_buckets;
        END IF;
        todo_from := next_from;
        todo_to := next_to;
    END LOOP;
    raw_from := todo_from;
    raw_to := todo_to;
END $$;
REVOKE ALL ON FUNCTION tenancy._usage_cover(timestamptz, timestamptz) FROM PUBLIC;

-- usage_report(account, from, to, subtree): totals per kind over [from, to)
-- for the account alone (subtree false) or with its whole subtree (billing
-- rolls up: the main account's report with subtree is the bill). In context:
-- the account must lie in the active subtree (else "not found", as for a
-- missing one) and the role must read `usage`.
CREATE FUNCTION tenancy.usage_report(account text, "from" timestamptz, "to" timestamptz,
                                     subtree boolean DEFAULT true)
    RETURNS TABLE (kind text, quantity numeric)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    c record;
    use_slice boolean;
BEGIN
    PERFORM tenancy._require('usage', 'read');
    a := tenancy._visible_account(account);
    IF usage_report."from" IS NULL OR usage_report."to" IS NULL
       OR NOT isfinite(usage_report."from") OR NOT isfinite(usage_report."to") THEN
        RAISE EXCEPTION 'usage report range needs finite "from" and "to"' USING ERRCODE = '22023';
    END IF;
    IF usage_report."to" <= usage_report."from" THEN
        RAISE EXCEPTION 'usage report range: "to" must be after "from"' USING ERRCODE = '22023';
    END IF;
    IF usage_report."to" - usage_report."from" > interval '100 years' THEN
        RAISE EXCEPTION 'usage report range is longer than 100 years' USING ERRCODE = '22023';
    END IF;
    c := tenancy._usage_cover(usage_report."from", usage_report."to");
    -- Dynamic SQL: each report is planned for its own path range, so that a
    -- main account's and a leaf's take the plans that suit them. The account
    -- alone: its path; with its subtree: [path, subtree_upper(path)).
    -- The ragged ends: read through (account_path, at), a subtree's ends cost
    -- an index entry per record of the subtree; through (main_id, at), one per
    -- record of the main account in those hours. The planner cannot tell a big
    -- subtree from a small one once <@ has become a btree range, so the choice
    -- is made here: a subtree of more than 100 accounts (counted up to 101)
    -- reads the main account's time slice, filtered by path.
    -- Every table is named with its main_id ($8): on Citus the whole report
    -- is then one router query on the main account's shard (without it, a
    -- union of multi-shard reads that Citus cannot plan); on one node it is
    -- the value main_id is generated from anyway.
    use_slice := coalesce(subtree, true) AND cardinality(c.raw_from) > 0
                 AND (SELECT count(*) FROM (SELECT FROM tenancy.accounts x
                                            WHERE x.main_id = a.main_id AND x.path OPERATOR(tenancy.<@) a.path
                                            LIMIT 101) n) > 100;
    RETURN QUERY EXECUTE replace($q$
        WITH slice AS MATERIALIZED (
            SELECT r.kind, r.quantity, r.account_path FROM tenancy.usage_records r
            WHERE r.main_id = $8 AND $7
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2])))
        SELECT s.kind, sum(s.quantity) FROM (
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.main_id = $8 AND t.grain = 'month' AND t.bucket = ANY ($3)
              AND t.@PATH@
            UNION ALL
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.main_id = $8 AND t.grain = 'day' AND t.bucket = ANY ($4)
              AND t.@PATH@
            UNION ALL
            SELECT r.kind, r.quantity FROM tenancy.usage_records r
            WHERE NOT $7 AND r.main_id = $8 AND r.@PATH@
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2]))
            UNION ALL
            SELECT r.kind, r.quantity FROM slice r WHERE r.@PATH@
        ) s
        GROUP BY s.kind
        ORDER BY s.kind
    $q$, '@PATH@', CASE WHEN NOT coalesce(subtree, true) THEN 'account_path OPERATOR(tenancy.=) $1'
                         ELSE 'account_path OPERATOR(tenancy.>=) $1 AND account_path OPERATOR(tenancy.<) $2' END)
    USING a.path, tenancy.subtree_upper(a.path), c.months, c.days, c.raw_from, c.raw_to, use_slice, a.main_id;
END $$;

-- ---- ownership, row-level security, grants ----------------------------------------------

-- Recording usage is the platform's job: its API key holds owner or admin.
-- (admin reads usage in 20_roles.sql; writing it is not billing.)
INSERT INTO tenancy.role_permissions (role, resource, action) VALUES ('admin', 'usage', 'write')
ON CONFLICT DO NOTHING;

SELECT tenancy.protect('tenancy.usage_records', 'usage');
-- Clients write through record_usage() only (it checks the kind, the range
-- and the ref, and names the writer), and never change a record; reading
-- needs the role's `usage` read as well as the subtree.
REVOKE INSERT, UPDATE, DELETE ON tenancy.usage_records FROM tenancy_app;
CREATE POLICY usage_readers ON tenancy.usage_records AS RESTRICTIVE FOR SELECT
    USING (tenancy.may('usage', 'read'));

ALTER TABLE tenancy.usage_kinds OWNER TO tenancy_owner;
ALTER TABLE tenancy.usage_records OWNER TO tenancy_owner;
ALTER TABLE tenancy.usage_totals OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.usage_record_id_seq OWNER TO tenancy_owner;
ALTER TABLE tenancy.usage_kinds ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.usage_totals ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.usage_kinds, tenancy.usage_totals FROM PUBLIC;
CREATE POLICY readable ON tenancy.usage_kinds FOR SELECT USING (true);
GRANT SELECT ON tenancy.usage_kinds TO tenancy_app;
GRANT SELECT, INSERT, UPDATE ON tenancy.usage_kinds TO tenancy_admin;
CREATE POLICY subtree_read ON tenancy.usage_totals FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('usage', 'read'));
GRANT SELECT ON tenancy.usage_totals TO tenancy_app;
GRANT SELECT ON tenancy.usage_records, tenancy.usage_totals TO tenancy_admin;
REVOKE ALL ON SEQUENCE tenancy.usage_record_id_seq FROM tenancy_app;
REVOKE ALL ON FUNCTION tenancy.usage_rebuild() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.usage_rebuild() TO tenancy_admin;
