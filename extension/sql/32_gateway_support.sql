-- What the REST gateway's route framework needs from the database (issue 18):
-- Idempotency-Key storage for POSTs, the batched record of GETs, the list-cursor key.
--
-- Every function here is for the gateway only (tenancy._require_gateway,
-- 20_roles.sql): EXECUTE goes to tenancy_app, which the gateway drops to
-- inside each request, and the function checks session_user itself.

-- ---- keys derived from the server secret ----------------------------------------
-- HMAC-SHA-256(context key 1, label): one subkey per purpose, so the key that
-- signs contexts (21_context.sql) never serves anything else directly. The
-- same in every session of the database, on its standbys, and after a restore
-- (the dump carries the context key over). Internal: callers are SECURITY
-- DEFINER functions.
CREATE FUNCTION tenancy._derived_key(label text) RETURNS bytea
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    derived bytea;
BEGIN
    SELECT tenancy._hmac_sha256(c.secret, 'tenancy derived key|' || label) INTO derived
    FROM tenancy.context_keys c WHERE c.id = 1;
    IF derived IS NULL THEN
        RAISE EXCEPTION 'tenancy has no server key (tenancy.context_keys)' USING ERRCODE = 'XX000';
    END IF;
    RETURN derived;
END $$;

-- Authenticated encryption (extension/src/secretbox.cpp): nonce || MAC ||
-- ciphertext under a 32-byte key; opening with another key or an altered
-- box raises XX001.
CREATE FUNCTION tenancy._secretbox_seal(key bytea, message text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_secretbox_seal' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy._secretbox_open(key bytea, sealed bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_secretbox_open' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- ---- Idempotency-Key ------------------------------------------------------------------
-- One row per POST that carried an Idempotency-Key, for 24 hours: who sent it
-- (scope), the key's SHA-256 (the key itself is never stored), the request's
-- hash (the gateway's SHA-256 over method, route, path, acting account and
-- body), and the first answer. The answer can carry secrets (a new API key,
-- a session token), so it is stored sealed under a key derived from the
-- server secret, the scope and the client's key: a DBA, a dump or a client
-- that does not present the same key sees only ciphertext.
--
-- The placeholder row (status NULL) is written by idempotency_begin in the
-- request's own transaction, filled by idempotency_finish before COMMIT, and
-- a deferred check refuses to commit it unfilled: a committed row always has
-- its answer, and a request that fails rolls its placeholder back with its
-- effect (a retry then runs it again). A second request with the same key
-- meanwhile waits on the first's transaction (the primary key's insert).
CREATE TABLE tenancy.idempotency_keys (
    scope text NOT NULL,              -- whoami()'s principal as kind:id, or 'anonymous'
    key_hash bytea NOT NULL CHECK (length(key_hash) = 32),
    request_hash bytea NOT NULL CHECK (length(request_hash) = 32),
    status integer CHECK (status BETWEEN 100 AND 599),
    response bytea,                   -- crypto_secretbox; NULL: no body
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key_hash)
);
-- No index on created_at: the purge (daily) scans a day of POSTs; an index
-- would cost every POST an index write.

-- Whose keys: the context's principal as whoami() names it (kind:id), or
-- 'anonymous' before any credential (login, sub-user login, accepting an
-- invitation). Keys of different principals never meet.
CREATE FUNCTION tenancy._idempotency_scope() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT coalesce((w.p ->> 'kind') || ':' || (w.p ->> 'id'), 'anonymous')
    FROM (SELECT tenancy.whoami() -> 'principal' AS p) w
$$;

-- The key that seals one row's answer: HMAC(idempotency subkey, scope|key).
-- A scope holds no '|', so the pair is unambiguous.
CREATE FUNCTION tenancy._idempotency_box_key(scope text, key text) RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._hmac_sha256(tenancy._derived_key('tenancy idempotency v1'), scope || '|' || key) $$;

-- 22023 unless key is 1 to 255 printable ASCII characters and request_hash a
-- SHA-256 (32 bytes).
CREATE FUNCTION tenancy._idempotency_check(key text, request_hash bytea) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF key IS NULL OR octet_length(key) NOT BETWEEN 1 AND 255 OR key !~ '^[ -~]+$' THEN
        RAISE EXCEPTION 'Idempotency-Key must be 1 to 255 printable ASCII characters' USING ERRCODE = '22023';
    END IF;
    IF request_hash IS NULL OR length(request_hash) <> 32 THEN
        RAISE EXCEPTION 'request_hash must be a SHA-256 digest (32 bytes)' USING ERRCODE = '22023';
    END IF;
END $$;

-- idempotency_begin(key, request_hash), in the request's transaction before
-- its effect. No row: proceed (a placeholder now holds the key until this
-- transaction ends; call idempotency_finish before COMMIT). One row: the
-- first request's answer (status, response) to send again instead of
-- running the request. Raises:
--   22T01  the key was used within 24 h for another request (another
--          request_hash): the gateway answers 422 idempotency_key_reused;
--   22023  a malformed key or hash;
--   55000  this transaction already holds the key unfinished (begin twice);
--   42501  not the gateway.
-- A concurrent request with the same key waits here until the first one's
-- transaction ends, then gets its answer (or proceeds if it rolled back).
-- Under READ COMMITTED (the gateway's level): each statement below sees
-- what committed before it started.
CREATE FUNCTION tenancy.idempotency_begin(key text, request_hash bytea)
    RETURNS TABLE (status integer, response text)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s text;
    h bytea;
    found_row tenancy.idempotency_keys;
BEGIN
    PERFORM tenancy._require_gateway('tenancy.idempotency_begin()');
    PERFORM tenancy._idempotency_check(key, request_hash);
    s := tenancy._idempotency_scope();
    h := tenancy.sha256(convert_to(key, 'UTF8'));
    DELETE FROM tenancy.idempotency_keys x
    WHERE x.scope = s AND x.key_hash = h AND x.created_at < now() - interval '24 hours';
    -- A row can vanish between the insert's conflict and the read (a purge,
    -- or another request deleting it as expired): try again.
    FOR attempt IN 1 .. 3 LOOP
        INSERT INTO tenancy.idempotency_keys (scope, key_hash, request_hash)
        VALUES (s, h, idempotency_begin.request_hash)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
        SELECT * INTO found_row FROM tenancy.idempotency_keys x WHERE x.scope = s AND x.key_hash = h;
        IF found_row.key_hash IS NOT NULL THEN
            EXIT;
        END IF;
    END LOOP;
    IF found_row.key_hash IS NULL THEN
        RAISE EXCEPTION 'Idempotency-Key could not be taken (its row keeps changing)' USING ERRCODE = '40001';
    END IF;
    IF found_row.request_hash <> idempotency_begin.request_hash THEN
        RAISE EXCEPTION 'Idempotency-Key was already used for another request'
            USING ERRCODE = '22T01',
                  HINT = 'Send a new key for a new request; a key is remembered for 24 hours.';
    END IF;
    -- A placeholder visible here is this transaction's own: another
    -- transaction's uncommitted one made the insert wait, and none commits
    -- unfilled (_idempotency_finished).
    IF found_row.status IS NULL THEN
        RAISE EXCEPTION 'this transaction already took this Idempotency-Key (idempotency_begin called twice)'
            USING ERRCODE = '55000';
    END IF;
    RETURN QUERY SELECT found_row.status,
        CASE WHEN found_row.response IS NOT NULL
             THEN tenancy._secretbox_open(tenancy._idempotency_box_key(s, key), found_row.response) END;
END $$;

-- idempotency_finish(key, request_hash, status, response), in the same
-- transaction after the effect: stores the answer (response NULL: no body)
-- sealed. The placeholder is found under the context's principal, or under
-- 'anonymous' when begin ran before a credential and the request itself
-- established one (login). Raises 55000 when this transaction holds no
-- placeholder for the key and hash, 22023 for malformed arguments.
CREATE FUNCTION tenancy.idempotency_finish(key text, request_hash bytea, status integer, response text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    h bytea;
    n integer;
BEGIN
    PERFORM tenancy._require_gateway('tenancy.idempotency_finish()');
    PERFORM tenancy._idempotency_check(key, request_hash);
    IF status IS NULL OR status NOT BETWEEN 100 AND 599 THEN
        RAISE EXCEPTION 'status must be an HTTP status (100 to 599)' USING ERRCODE = '22023';
    END IF;
    h := tenancy.sha256(convert_to(key, 'UTF8'));
    UPDATE tenancy.idempotency_keys x
    SET status = idempotency_finish.status,
        response = CASE WHEN idempotency_finish.response IS NOT NULL
                        THEN tenancy._secretbox_seal(tenancy._idempotency_box_key(x.scope, key),
                                                     idempotency_finish.response) END
    WHERE x.scope IN (tenancy._idempotency_scope(), 'anonymous') AND x.key_hash = h
      AND x.request_hash = idempotency_finish.request_hash AND x.status IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> 1 THEN
        RAISE EXCEPTION 'no Idempotency-Key of this request is open in this transaction'
            USING ERRCODE = '55000', HINT = 'Call tenancy.idempotency_begin() first, in the same transaction.';
    END IF;
END $$;

-- At COMMIT: no placeholder may outlive its transaction unfilled (else its
-- key would answer nothing for 24 hours). Quiet during a restore (replica
-- mode), whose rows are finished anyway.
CREATE FUNCTION tenancy._idempotency_finished() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM tenancy.idempotency_keys x
               WHERE x.scope = NEW.scope AND x.key_hash = NEW.key_hash AND x.status IS NULL) THEN
        RAISE EXCEPTION 'an Idempotency-Key taken by tenancy.idempotency_begin() was not finished'
            USING ERRCODE = '55000',
                  HINT = 'Call tenancy.idempotency_finish() before COMMIT, or roll back.';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER finished AFTER INSERT ON tenancy.idempotency_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tenancy._idempotency_finished();

-- Deletes the rows older than 24 hours; returns how many. For the DBA
-- (purge_identity calls it) and the gateway.
CREATE FUNCTION tenancy.purge_idempotency() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n bigint;
BEGIN
    IF NOT (tenancy._session_is_gateway() OR pg_has_role(session_user, 'tenancy_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'tenancy.purge_idempotency() is for the gateway and the DBA' USING ERRCODE = '42501';
    END IF;
    DELETE FROM tenancy.idempotency_keys x WHERE x.created_at < now() - interval '24 hours';
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- ---- GETs, recorded in batches ------------------------------------------------------------
-- A GET runs READ ONLY (possibly on a standby) and writes nothing; the
-- gateway's writer thread sends what it served here, on the primary, in
-- batches. Each record is the whoami() of the GET's transaction, as the
-- gateway read it, and what it answered:
--   {"at": "2026-01-02T03:04:05.678Z",   -- when served (ISO 8601 with zone)
--    "account": "acc_...",               -- the acting account (whoami().account)
--    "principal": {"kind": "api_key", "id": "key_1_2", "session": null},  -- whoami().principal
--    "credential_id": 2,                 -- optional: derived from principal
--    "route": "GET /v1/accounts/{id}", "method": "GET", "status": 200,
--    "request_id": "..."}

-- 22023 (message without the index; record_api_reads adds it) unless r is a
-- well-formed record.
CREATE FUNCTION tenancy._api_read_check(r jsonb) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p jsonb := r -> 'principal';
    kind text := r -> 'principal' ->> 'kind';
    pid text := r -> 'principal' ->> 'id';
BEGIN
    IF jsonb_typeof(r) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not a JSON object' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(r -> 'at') IS DISTINCT FROM 'string' OR r ->> 'at' !~
       '^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)$' THEN
        RAISE EXCEPTION 'at must be an ISO 8601 time with its zone' USING ERRCODE = '22023';
    END IF;
    PERFORM (r ->> 'at')::timestamptz;  -- a 13th month: 22008, reported as 22023 with the index
    IF jsonb_typeof(r -> 'account') IS DISTINCT FROM 'string' OR octet_length(r ->> 'account') NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'account must be an account''s public id' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(p) IS DISTINCT FROM 'object' OR jsonb_typeof(p -> 'id') IS DISTINCT FROM 'string'
       OR NOT coalesce((kind = 'api_key' AND pid ~ '^key_[0-9]+_[0-9]+$' AND octet_length(pid) <= 41)
                       OR (kind = 'sub_user' AND pid ~ '^sub_[0-9]+_[0-9]+$' AND octet_length(pid) <= 41)
                       OR (kind = 'user' AND pid ~ '^[0-9]+$' AND octet_length(pid) <= 18), false)
       OR (kind = 'api_key' AND (length(split_part(pid, '_', 2)) > 18 OR length(split_part(pid, '_', 3)) > 18))
       OR (kind = 'sub_user' AND (length(split_part(pid, '_', 2)) > 18 OR length(split_part(pid, '_', 3)) > 18)) THEN
        RAISE EXCEPTION 'principal must be whoami()''s principal: kind api_key, user or sub_user and its id'
            USING ERRCODE = '22023';
    END IF;
    IF coalesce(jsonb_typeof(p -> 'session'), 'null') <> 'null'
       AND (jsonb_typeof(p -> 'session') <> 'number' OR p ->> 'session' !~ '^[0-9]{1,18}$') THEN
        RAISE EXCEPTION 'principal.session must be a session id or null' USING ERRCODE = '22023';
    END IF;
    IF coalesce(jsonb_typeof(r -> 'credential_id'), 'null') <> 'null' THEN
        IF jsonb_typeof(r -> 'credential_id') <> 'number' OR r ->> 'credential_id' !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'credential_id must be a credential id or null' USING ERRCODE = '22023';
        END IF;
        IF kind = 'api_key' AND (r ->> 'credential_id')::bigint <> split_part(pid, '_', 3)::bigint THEN
            RAISE EXCEPTION 'credential_id of an API key is the key''s id' USING ERRCODE = '22023';
        END IF;
    END IF;
    IF jsonb_typeof(r -> 'route') IS DISTINCT FROM 'string' OR octet_length(r ->> 'route') NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'route must be 1 to 1000 bytes' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(r -> 'method') IS DISTINCT FROM 'string' OR r ->> 'method' NOT IN ('GET', 'HEAD') THEN
        RAISE EXCEPTION 'method must be GET or HEAD' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(r -> 'status') IS DISTINCT FROM 'number' OR r ->> 'status' !~ '^[1-5][0-9][0-9]$' THEN
        RAISE EXCEPTION 'status must be an HTTP status (100 to 599)' USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(r -> 'request_id') IS DISTINCT FROM 'string' OR octet_length(r ->> 'request_id') NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'request_id must be 1 to 200 bytes' USING ERRCODE = '22023';
    END IF;
END $$;

-- record_api_reads(records): one api.request entry per record, in the
-- record's account, by the record's principal (actor as whoami() names it;
-- the credential: an API key's id, or a session's), target the route, detail
-- {method, route, status, request_id, at}. The entry's own time is when it
-- is written (the log's writer stamps it); the time the GET was served is
-- detail.at. An API key's last use is recorded too (_touch_api_key; a GET
-- cannot). Every record is checked before anything is written: a malformed
-- one raises 22023 'record <index>: ...' (0-based; HINT names the index
-- too), and the batch writes nothing. A record whose account no longer
-- exists is skipped. At most 5000 records a call (54000). Returns how many
-- were written (skipped = the array's length minus that).
CREATE FUNCTION tenancy.record_api_reads(records jsonb) RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n integer;
    i integer := -1;
    written integer;
BEGIN
    PERFORM tenancy._require_gateway('tenancy.record_api_reads()');
    IF records IS NULL OR jsonb_typeof(records) <> 'array' THEN
        RAISE EXCEPTION 'records must be a JSON array' USING ERRCODE = '22023';
    END IF;
    n := jsonb_array_length(records);
    IF n > 5000 THEN
        RAISE EXCEPTION 'at most 5000 records a call (got %)', n USING ERRCODE = '54000';
    END IF;
    -- One block (one subtransaction) for the whole check, not one per record.
    BEGIN
        FOR k IN 0 .. n - 1 LOOP
            i := k;
            PERFORM tenancy._api_read_check(records -> k);
        END LOOP;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'record %: %', i, SQLERRM USING ERRCODE = '22023', HINT = format('index %s', i);
    END;
    WITH recs AS MATERIALIZED (
        SELECT e.k, e.r, e.r -> 'principal' AS p FROM jsonb_array_elements(records) WITH ORDINALITY e(r, k)
    ), accts AS MATERIALIZED (
        SELECT d.public_id, a.main_id, a.path
        FROM (SELECT DISTINCT x.r ->> 'account' AS public_id FROM recs x) d
        CROSS JOIN LATERAL tenancy._find_account(d.public_id) a
        WHERE a.id IS NOT NULL
    )
    SELECT count(*) INTO written FROM (
        SELECT tenancy._audit_record(a.main_id, a.path, 'api.request', x.r ->> 'route',
                   jsonb_build_object('method', x.r ->> 'method', 'route', x.r ->> 'route',
                                      'status', (x.r ->> 'status')::integer, 'request_id', x.r ->> 'request_id',
                                      'at', x.r ->> 'at'),
                   x.p ->> 'kind', x.p ->> 'id',
                   coalesce((x.r ->> 'credential_id')::bigint,
                            CASE WHEN x.p ->> 'kind' = 'api_key' THEN split_part(x.p ->> 'id', '_', 3)::bigint
                                 ELSE (x.p ->> 'session')::bigint END))
        FROM recs x JOIN accts a ON a.public_id = x.r ->> 'account'
        ORDER BY x.k) w;
    PERFORM tenancy._touch_api_key(u.main_id, u.key_id)
    FROM (SELECT DISTINCT split_part(e.r -> 'principal' ->> 'id', '_', 2)::bigint AS main_id,
                          split_part(e.r -> 'principal' ->> 'id', '_', 3)::bigint AS key_id
          FROM jsonb_array_elements(records) e(r)
          WHERE e.r -> 'principal' ->> 'kind' = 'api_key') u;
    RETURN written;
END $$;

-- ---- list cursors ---------------------------------------------------------------------------
-- The key gateways seal list cursors with (HMAC-SHA-256): 32 bytes, the same
-- on every call, in every gateway of the database and on its standbys.
CREATE FUNCTION tenancy.gateway_cursor_key() RETURNS bytea
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.gateway_cursor_key()');
    RETURN tenancy._derived_key('tenancy gateway cursor v1');
END $$;

-- ---- ownership and access ----------------------------------------------------------------------
ALTER TABLE tenancy.idempotency_keys OWNER TO tenancy_owner;
ALTER TABLE tenancy.idempotency_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
-- No policy and no grant: unreadable to every client role.
REVOKE ALL ON tenancy.idempotency_keys FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy._derived_key(text), tenancy._secretbox_seal(bytea, text),
    tenancy._secretbox_open(bytea, bytea), tenancy._idempotency_scope(), tenancy._idempotency_box_key(text, text),
    tenancy._idempotency_check(text, bytea), tenancy._idempotency_finished(), tenancy._api_read_check(jsonb),
    tenancy.idempotency_begin(text, bytea), tenancy.idempotency_finish(text, bytea, integer, text),
    tenancy.purge_idempotency(), tenancy.record_api_reads(jsonb), tenancy.gateway_cursor_key() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.idempotency_begin(text, bytea), tenancy.idempotency_finish(text, bytea, integer, text),
    tenancy.record_api_reads(jsonb), tenancy.gateway_cursor_key() TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.purge_idempotency() TO tenancy_app, tenancy_admin;
