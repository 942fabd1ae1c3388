-- API keys. A key reads tnc_<main id>_<key id>_<43 chars of base64url secret>:
-- the embedded ids find the row without a global index; the 256-bit secret is
-- stored only as SHA-256, in a table no client can read, and compared in
-- constant time. The full key is returned once, at creation.

CREATE FUNCTION tenancy._secret_hash(secret text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_secret_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy._secret_equal(secret text, stored_hash bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_secret_equal' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._secret_hash(text),
    tenancy._secret_equal(text, bytea) FROM PUBLIC;

CREATE SEQUENCE tenancy.api_key_id_seq;

CREATE TABLE tenancy.api_keys (
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(account_path)) STORED,
    id bigint NOT NULL DEFAULT nextval('tenancy.api_key_id_seq'),
    public_id text NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role text NOT NULL REFERENCES tenancy.roles (name),
    prefix text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    -- rotate_api_key (41_key_rotation.sql): when the key was rotated, and the
    -- key (same main account) that replaces it; its expires_at ends the grace.
    rotated_at timestamptz,
    replaced_by bigint,
    PRIMARY KEY (main_id, id)
);
CREATE INDEX api_keys_account_path ON tenancy.api_keys (account_path);

CREATE TABLE tenancy.api_key_secrets (
    main_id bigint NOT NULL,
    key_id bigint NOT NULL,
    secret_hash bytea NOT NULL,
    PRIMARY KEY (main_id, key_id),
    FOREIGN KEY (main_id, key_id) REFERENCES tenancy.api_keys (main_id, id)
        ON UPDATE CASCADE ON DELETE CASCADE
);

-- Last use, in a row of its own: requests update it (at most once a minute,
-- never waiting) without locking the key row, so a revocation never waits
-- behind requests in flight. Created with the key.
CREATE TABLE tenancy.api_key_usage (
    main_id bigint NOT NULL,
    key_id bigint NOT NULL,
    last_used_at timestamptz,
    PRIMARY KEY (main_id, key_id),
    FOREIGN KEY (main_id, key_id) REFERENCES tenancy.api_keys (main_id, id)
        ON UPDATE CASCADE ON DELETE CASCADE
);

-- Record a use of the key, unless that could fail (read-only transaction, hot
-- standby), would wait on a lock, or was already recorded within a minute.
-- Each recorded use is also an audit event (api_key.use) in the key's account:
-- at most one a minute per key, not one per request.
CREATE FUNCTION tenancy._touch_api_key(main_id bigint, key_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    k record;
BEGIN
    IF current_setting('transaction_read_only')::boolean OR pg_is_in_recovery() THEN
        RETURN;
    END IF;
    UPDATE tenancy.api_key_usage u SET last_used_at = now()
    WHERE u.ctid = (SELECT x.ctid FROM tenancy.api_key_usage x
                    WHERE x.main_id = _touch_api_key.main_id AND x.key_id = _touch_api_key.key_id
                      AND (x.last_used_at IS NULL OR x.last_used_at < now() - interval '1 minute')
                    FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        SELECT a.account_path, a.public_id INTO k FROM tenancy.api_keys a
        WHERE a.main_id = _touch_api_key.main_id AND a.id = _touch_api_key.key_id;
        IF FOUND THEN
            PERFORM tenancy._audit_record(_touch_api_key.main_id, k.account_path, 'api_key.use', k.public_id,
                                          NULL, 'api_key', key_id::text, key_id);
        END IF;
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._touch_api_key(bigint, bigint) FROM PUBLIC;

-- Creates a key in account a; returns the full key (internal).
CREATE FUNCTION tenancy._make_api_key(a tenancy.accounts, name text, role text,
                                      expires_at timestamptz) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    key_id bigint := nextval('tenancy.api_key_id_seq');
    secret text := tenancy.random_token(32);
    key_prefix text;
    limit_per_account integer;
BEGIN
    IF name IS NULL OR length(btrim(name)) = 0 OR length(name) > 200 THEN
        RAISE EXCEPTION 'key name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM tenancy.roles r WHERE r.name = _make_api_key.role) THEN
        RAISE EXCEPTION 'unknown role "%"', role USING ERRCODE = '22023';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = '22023';
    END IF;
    IF a.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '55000';
    END IF;
    -- Serialise key creation per account so the plan limit holds.
    PERFORM FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.id FOR UPDATE;
    SELECT pl.max_api_keys INTO limit_per_account
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = a.main_id AND m.id = a.main_id;
    -- A rotated key, in its grace period, no longer counts: its replacement does.
    IF (SELECT count(*) FROM tenancy.api_keys k
        WHERE k.main_id = a.main_id AND k.account_id = a.id AND k.revoked_at IS NULL
          AND k.rotated_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())) >= limit_per_account THEN
        RAISE EXCEPTION 'the plan allows % active API keys per account', limit_per_account
            USING ERRCODE = '53400';
    END IF;
    key_prefix := format('tnc_%s_%s_%s', a.main_id, key_id, left(secret, 4));
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.api_keys (main_id, account_path, id, public_id, name, role, prefix, expires_at)
        VALUES (a.main_id, a.path, key_id, format('key_%s_%s', a.main_id, key_id), btrim(name), role,
                key_prefix, expires_at);
    ELSE
        INSERT INTO tenancy.api_keys (account_path, id, public_id, name, role, prefix, expires_at)
        VALUES (a.path, key_id, format('key_%s_%s', a.main_id, key_id), btrim(name), role, key_prefix,
                expires_at);
    END IF;
    INSERT INTO tenancy.api_key_secrets (main_id, key_id, secret_hash)
    VALUES (a.main_id, key_id, tenancy._secret_hash(secret));
    INSERT INTO tenancy.api_key_usage (main_id, key_id) VALUES (a.main_id, key_id);
    RETURN format('tnc_%s_%s_%s', a.main_id, key_id, secret);
END $$;
REVOKE ALL ON FUNCTION tenancy._make_api_key(tenancy.accounts, text, text, timestamptz) FROM PUBLIC;

-- Bootstrap key for an account (DBA).
CREATE FUNCTION tenancy.admin_create_api_key(account text, name text, role text DEFAULT 'owner')
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
BEGIN
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    RETURN tenancy._make_api_key(a, name, role, NULL);
END $$;

CREATE FUNCTION tenancy.create_api_key(account text, name text, role text,
                                       expires_at timestamptz DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    RETURN tenancy._make_api_key(tenancy._visible_account(account), name, role, expires_at);
END $$;

-- Revocation takes effect for every request from the next transaction on,
-- including session-scoped contexts.
CREATE FUNCTION tenancy.revoke_api_key(key_id text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(key_id, 'key', 2, 0);
    k tenancy.api_keys;
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    IF parts IS NOT NULL THEN
        SELECT * INTO k FROM tenancy.api_keys x
        WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
          AND x.account_path <@ tenancy.current_path();
    END IF;
    IF k.id IS NULL THEN
        RAISE EXCEPTION 'API key "%" not found', key_id USING ERRCODE = 'P0002';
    END IF;
    UPDATE tenancy.api_keys x SET revoked_at = now()
    WHERE x.main_id = k.main_id AND x.id = k.id AND x.revoked_at IS NULL;
END $$;
