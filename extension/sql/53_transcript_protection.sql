-- What enforces the security settings (52_security_settings.sql) on transcripts:
-- PHI re-redaction jobs, encryption at rest, the transcript triggers.

-- One job per account whose PHI protection was turned on: the transcripts of
-- its subtree in the table `tbl`, walked by id in bounded batches by
-- tenancy.redact_pending() (the phi redactor background worker, or a DBA/cron).
CREATE TABLE tenancy.phi_redaction_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    tbl regclass NOT NULL,
    total bigint NOT NULL,              -- rows in the subtree when queued
    done bigint NOT NULL DEFAULT 0,     -- rows examined so far
    redacted bigint NOT NULL DEFAULT 0, -- rows that changed
    last_id bigint NOT NULL DEFAULT 0,  -- the walk's position (ids of main_id's rows)
    queued_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX phi_redaction_jobs_pending ON tenancy.phi_redaction_jobs (id) WHERE finished_at IS NULL;
CREATE INDEX phi_redaction_jobs_account ON tenancy.phi_redaction_jobs (account_path);
ALTER TABLE tenancy.phi_redaction_jobs OWNER TO tenancy_owner;
ALTER TABLE tenancy.phi_redaction_jobs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.phi_redaction_jobs FROM PUBLIC;
CREATE POLICY subtree_read ON tenancy.phi_redaction_jobs FOR SELECT
    USING (account_path OPERATOR(tenancy.<@) tenancy.current_path());
GRANT SELECT ON tenancy.phi_redaction_jobs TO tenancy_app, tenancy_admin;

-- Progress per job, for the subtree's readers (RLS) and the DBA.
CREATE VIEW tenancy.phi_redaction_progress WITH (security_invoker = true) AS
    SELECT j.id AS job, a.public_id AS account, j.tbl::text AS "table", j.done, j.total, j.redacted,
           CASE WHEN j.finished_at IS NOT NULL OR j.total = 0 THEN 100.0
                ELSE round(100.0 * least(j.done, j.total) / j.total, 1) END AS percent,
           j.queued_at, j.finished_at
    FROM tenancy.phi_redaction_jobs j
    JOIN tenancy.accounts a ON a.path = j.account_path;
GRANT SELECT ON tenancy.phi_redaction_progress TO tenancy_app, tenancy_admin;

-- The tables whose transcripts the settings govern (tenancy._secure_transcripts()).
CREATE TABLE tenancy.transcript_tables (
    tbl regclass PRIMARY KEY
);
ALTER TABLE tenancy.transcript_tables OWNER TO tenancy_owner;
ALTER TABLE tenancy.transcript_tables ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.transcript_tables FROM PUBLIC;

-- Queue a job per transcript table for the subtree at p, unless one for p or
-- an ancestor is still pending (it covers p's rows).
CREATE FUNCTION tenancy._queue_redaction(p tenancy.account_path) RETURNS void
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
REVOKE ALL ON FUNCTION tenancy._queue_redaction(tenancy.account_path) FROM PUBLIC;

-- ---- encryption at rest ---------------------------------------------------------------

-- One data key per main account, stored sealed (secretbox) under a key derived
-- from the server key (32_gateway_support.sql's _derived_key). Rows name the
-- key they were sealed with, so a promoted subtree's rows still open.
CREATE TABLE tenancy.transcript_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    main_id bigint NOT NULL UNIQUE,
    wrapped bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE tenancy.transcript_keys OWNER TO tenancy_owner;
ALTER TABLE tenancy.transcript_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.transcript_keys FROM PUBLIC;

CREATE FUNCTION tenancy._transcript_kek() RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT tenancy._derived_key('tenancy transcript data keys v1') $$;

CREATE FUNCTION tenancy._transcript_key(key_id bigint) RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT decode(tenancy._secretbox_open(tenancy._transcript_kek(), k.wrapped), 'hex')
    FROM tenancy.transcript_keys k WHERE k.id = key_id
$$;

-- The main account's key id, made on first use.
CREATE FUNCTION tenancy._transcript_key_id(main bigint) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    kid bigint;
BEGIN
    SELECT k.id INTO kid FROM tenancy.transcript_keys k WHERE k.main_id = main;
    IF kid IS NULL THEN
        INSERT INTO tenancy.transcript_keys (main_id, wrapped)
        VALUES (main, tenancy._secretbox_seal(tenancy._transcript_kek(),
                                              encode(tenancy._random_bytes(32), 'hex')))
        ON CONFLICT (main_id) DO NOTHING;
        SELECT k.id INTO kid FROM tenancy.transcript_keys k WHERE k.main_id = main;
    END IF;
    RETURN kid;
END $$;

-- Stored form: 8-byte key id || secretbox(transcript as JSON text).
CREATE FUNCTION tenancy._transcript_seal(main bigint, transcript jsonb) RETURNS bytea
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    kid bigint := tenancy._transcript_key_id(main);
BEGIN
    RETURN int8send(kid) || tenancy._secretbox_seal(tenancy._transcript_key(kid), transcript::text);
END $$;

CREATE FUNCTION tenancy._transcript_open(sealed bytea) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT tenancy._secretbox_open(
               tenancy._transcript_key(('x' || encode(substring(sealed FROM 1 FOR 8), 'hex'))::bit(64)::bigint),
               substring(sealed FROM 9))::jsonb
$$;
REVOKE ALL ON FUNCTION tenancy._transcript_kek(), tenancy._transcript_key(bigint),
    tenancy._transcript_key_id(bigint), tenancy._transcript_seal(bigint, jsonb),
    tenancy._transcript_open(bytea) FROM PUBLIC;

-- What a sealed row keeps in its transcript column: one marker turn (a turn
-- with a "text", as conversations' CHECK wants). An
-- UPDATE that appends turns to it (transcript || '[...]') appends them to the
-- decrypted transcript.
CREATE FUNCTION tenancy._sealed_marker() RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '[{"text": "[sealed]", "sealed": true}]'::jsonb $$;
REVOKE ALL ON FUNCTION tenancy._sealed_marker() FROM PUBLIC;

-- transcript_of(account_path, transcript, transcript_sealed): the transcript
-- of a row in clear, for a context that may read the row (the row's path lies
-- in the active subtree, as the read policy of a protected table demands);
-- NULL for everyone else, the DBA included. Pass the row's own columns:
--     SELECT tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed)
--     FROM tenancy.conversations c WHERE ...
CREATE FUNCTION tenancy.transcript_of(account_path tenancy.account_path, transcript jsonb,
                                      transcript_sealed bytea) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF transcript_sealed IS NULL THEN
        RETURN transcript;
    END IF;
    IF tenancy._context_field('account') IS NULL OR tenancy._context_field('role') IN ('mfa_pending', 'password_change')
       OR tenancy.current_path() IS NULL OR NOT (account_path OPERATOR(tenancy.<@) tenancy.current_path()) THEN
        RETURN NULL;
    END IF;
    RETURN tenancy._transcript_open(transcript_sealed);
END $$;

-- ---- the transcript triggers ----------------------------------------------------------

CREATE FUNCTION tenancy.redact_transcript(transcript jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'tenancy_redact_transcript' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.redact_transcript(jsonb) IS
    'redact_phi() applied to every "text" member and string element of a transcript';

CREATE FUNCTION tenancy._transcript_phi_redact() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tenancy_transcript_phi_redact' LANGUAGE C;

-- tenancy_10_recording: a recording reference where call recording is off is
-- refused, not dropped. An update that keeps the reference is not refused
-- (recording may have been switched off since).
CREATE FUNCTION tenancy._transcript_recording() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s jsonb;
BEGIN
    IF NEW.recording_ref IS NULL OR (TG_OP = 'UPDATE' AND NEW.recording_ref IS NOT DISTINCT FROM OLD.recording_ref) THEN
        RETURN NEW;
    END IF;
    s := tenancy._security_at(NEW.account_path);
    IF s IS NOT NULL AND NOT (s ->> 'call_recording')::boolean THEN
        RAISE EXCEPTION 'call recording is off for this account: recording_ref must be null'
            USING ERRCODE = '55000',
                  HINT = 'An owner turns call recording on with tenancy.set_security_setting() where the plan includes it.';
    END IF;
    RETURN NEW;
END $$;

-- tenancy_30_encrypt: where transcript encryption is on, the transcript goes
-- into transcript_sealed and the transcript column keeps the marker. A row
-- sealed before keeps its sealed transcript when the statement left the
-- transcript alone; turns appended to the marker join the decrypted ones.
-- Where encryption is off, a rewritten sealed row is stored in clear.
CREATE FUNCTION tenancy._transcript_encrypt() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s jsonb := tenancy._security_at(NEW.account_path);
    plain jsonb := NEW.transcript;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.transcript_sealed IS NOT NULL THEN
        IF NEW.transcript_sealed IS DISTINCT FROM OLD.transcript_sealed THEN
            RAISE EXCEPTION 'transcript_sealed is written by tenancy only' USING ERRCODE = '42501';
        END IF;
        IF NEW.transcript IS NOT DISTINCT FROM OLD.transcript THEN
            RETURN NEW;  -- transcript untouched (e.g. only recording_ref changed)
        END IF;
        IF jsonb_typeof(plain) = 'array' AND plain -> 0 = tenancy._sealed_marker() -> 0 THEN
            plain := tenancy._transcript_open(OLD.transcript_sealed) || (plain - 0);
        END IF;
    ELSIF NEW.transcript_sealed IS NOT NULL THEN
        RAISE EXCEPTION 'transcript_sealed is written by tenancy only' USING ERRCODE = '42501';
    END IF;
    IF s IS NULL OR (s ->> 'transcript_encryption')::boolean THEN
        NEW.transcript_sealed := tenancy._transcript_seal(tenancy.root_id(NEW.account_path), plain);
        NEW.transcript := tenancy._sealed_marker();
    ELSE
        NEW.transcript_sealed := NULL;
        NEW.transcript := plain;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._transcript_phi_redact(), tenancy._transcript_recording(),
    tenancy._transcript_encrypt() FROM PUBLIC;

-- Is the row audit on for rows at p (the audit_log setting)? Unknown (a path
-- outside the caller's subtree, refused by RLS anyway): audited. PL/pgSQL
-- (cached plans): as SQL functions in a trigger's WHEN they cost ~1.5 ms a row.
CREATE FUNCTION tenancy._audited_at(p tenancy.account_path) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN coalesce((tenancy._security_at(p) ->> 'audit_log')::boolean, true);
END $$;
CREATE FUNCTION tenancy._phi_protected_at(p tenancy.account_path) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN coalesce((tenancy._security_at(p) ->> 'phi_protection')::boolean, true);
END $$;
-- Every role executes them (PUBLIC, the default): a trigger's WHEN runs as
-- the writer, or as the table's owner when a foreign key cascades an account
-- move into the rows; _security_at answers NULL outside the caller's subtree.

-- _secure_transcripts(tbl): puts a protected table with transcript turns
-- (columns account_path, main_id, id, transcript jsonb, recording_ref text)
-- under the security settings: adds transcript_sealed, the three triggers in
-- their order (10 recording, 20 PHI redaction, 30 encryption; BEFORE triggers
-- fire by name), and makes its row audit follow the audit_log setting.
CREATE FUNCTION tenancy._secure_transcripts(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS transcript_sealed bytea', tbl);
    -- Readable where the row is (transcript_of() takes it), written by no client:
    -- tables with column privileges (50_voice.sql) get SELECT on it only.
    EXECUTE format('GRANT SELECT (transcript_sealed) ON %s TO tenancy_app', tbl);
    EXECUTE format('DROP TRIGGER IF EXISTS tenancy_10_recording ON %1$s; '
                   'DROP TRIGGER IF EXISTS tenancy_20_phi_redact ON %1$s; '
                   'DROP TRIGGER IF EXISTS tenancy_30_encrypt ON %1$s', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_10_recording BEFORE INSERT OR UPDATE OF transcript, recording_ref '
                   'ON %s FOR EACH ROW WHEN (NEW.recording_ref IS NOT NULL) '
                   'EXECUTE FUNCTION tenancy._transcript_recording()', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_20_phi_redact BEFORE INSERT OR UPDATE OF transcript, recording_ref '
                   'ON %s FOR EACH ROW WHEN (tenancy._phi_protected_at(NEW.account_path)) '
                   'EXECUTE FUNCTION tenancy._transcript_phi_redact(''transcript'')', tbl);
    -- (also on transcript_sealed, so that nobody writes it but this trigger)
    EXECUTE format('CREATE TRIGGER tenancy_30_encrypt BEFORE INSERT OR UPDATE OF transcript, recording_ref, '
                   'transcript_sealed ON %s FOR EACH ROW EXECUTE FUNCTION tenancy._transcript_encrypt()', tbl);
    -- The row audit (40_audit.sql) only where audit_log is on: a trigger's
    -- WHEN may name NEW for INSERT/UPDATE and OLD for DELETE, not both.
    EXECUTE format('DROP TRIGGER IF EXISTS tenancy_audit ON %1$s; '
                   'DROP TRIGGER IF EXISTS tenancy_audit_delete ON %1$s', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_audit AFTER INSERT OR UPDATE ON %s FOR EACH ROW '
                   'WHEN (tenancy._audited_at(NEW.account_path)) '
                   'EXECUTE FUNCTION tenancy._audit_trigger(''account_path'')', tbl);
    EXECUTE format('CREATE TRIGGER tenancy_audit_delete AFTER DELETE ON %s FOR EACH ROW '
                   'WHEN (tenancy._audited_at(OLD.account_path)) '
                   'EXECUTE FUNCTION tenancy._audit_trigger(''account_path'')', tbl);
    INSERT INTO tenancy.transcript_tables (tbl) VALUES (tbl) ON CONFLICT DO NOTHING;
END $$;
REVOKE ALL ON FUNCTION tenancy._secure_transcripts(regclass) FROM PUBLIC;

-- redact_pending(batch): one bounded step of the oldest pending re-redaction
-- job (the phi redactor worker calls it in a loop, each call its own
-- transaction; a DBA or cron may call it too). Rows whose redacted transcript
-- differs are rewritten through the triggers (redacted, sealed again where
-- encryption is on). Returns the rows examined (0: nothing pending).
CREATE FUNCTION tenancy.redact_pending(batch integer DEFAULT 500) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    j tenancy.phi_redaction_jobs;
    examined integer;
    changed integer;
    top bigint;
BEGIN
    IF batch IS NULL OR batch < 1 OR batch > 100000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 100000' USING ERRCODE = '22023';
    END IF;
    -- A job with nothing (left) to examine is finished and the next one taken,
    -- so that a call examines rows whenever some are pending.
    LOOP
        SELECT * INTO j FROM tenancy.phi_redaction_jobs x WHERE x.finished_at IS NULL
        ORDER BY x.id LIMIT 1 FOR UPDATE SKIP LOCKED;
        IF j.id IS NULL THEN
            RETURN 0;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = j.tbl) THEN  -- the table was dropped
            UPDATE tenancy.phi_redaction_jobs x SET finished_at = clock_timestamp() WHERE x.id = j.id;
            CONTINUE;
        END IF;
        EXECUTE format($q$
            WITH todo AS (
                SELECT c.id, CASE WHEN c.transcript_sealed IS NULL THEN c.transcript
                                  ELSE tenancy._transcript_open(c.transcript_sealed) END AS plain
                FROM %1$s c
                WHERE c.main_id = $1 AND c.id > $2 AND c.account_path OPERATOR(tenancy.<@) $3
                ORDER BY c.id LIMIT $4),
            redacted AS (
                SELECT t.id, tenancy.redact_transcript(t.plain) AS new FROM todo t
                WHERE tenancy.redact_transcript(t.plain) IS DISTINCT FROM t.plain),
            written AS (
                UPDATE %1$s c SET transcript = r.new FROM redacted r
                WHERE c.main_id = $1 AND c.id = r.id RETURNING c.id)
            SELECT (SELECT count(*) FROM todo), (SELECT count(*) FROM written), (SELECT max(id) FROM todo)$q$,
            j.tbl)
            INTO examined, changed, top USING j.main_id, j.last_id, j.account_path, batch;
        UPDATE tenancy.phi_redaction_jobs x
        SET done = x.done + examined, redacted = x.redacted + changed, last_id = coalesce(top, x.last_id),
            finished_at = CASE WHEN examined < batch THEN clock_timestamp() END
        WHERE x.id = j.id;
        IF examined > 0 THEN
            RETURN examined;
        END IF;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION tenancy.redact_pending(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.redact_pending(integer) TO tenancy_admin;

-- Start the phi redactor background worker for this database (transcript_worker.cpp)
-- unless one runs; it waits for the calling transaction to end, then works
-- through redact_pending() until nothing is pending.
CREATE FUNCTION tenancy._start_phi_redactor() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_start_phi_redactor' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._start_phi_redactor() FROM PUBLIC;

-- The conversations table (50_voice.sql) when it is installed.
SELECT tenancy._secure_transcripts(c.oid) FROM pg_class c
WHERE c.oid = to_regclass('tenancy.conversations');
