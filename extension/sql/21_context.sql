-- The request context (extension/src/context.cpp): signed, bound to the
-- transaction, set only after a credential was verified.

-- Server keys that sign contexts. Readable by no client role; the extension
-- reads them with a heap scan. Generated at install; the newest live key signs,
-- a key past retire_at verifies nothing (tenancy.rotate_context_key, 41_key_rotation.sql).
-- Key 1 is also the root of the derived keys (32_gateway_support.sql), so its
-- row is kept after it retires.
CREATE TABLE tenancy.context_keys (
    id smallint PRIMARY KEY,
    secret bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    retire_at timestamptz
);
ALTER TABLE tenancy.context_keys OWNER TO tenancy_owner;
ALTER TABLE tenancy.context_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.context_keys FROM PUBLIC;

CREATE FUNCTION tenancy._random_bytes(n integer) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_random_bytes' LANGUAGE C STRICT VOLATILE PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._random_bytes(integer) FROM PUBLIC;

INSERT INTO tenancy.context_keys (id, secret) VALUES (1, tenancy._random_bytes(32));

CREATE FUNCTION tenancy._issue_context(scope text, principal_kind text, principal_id bigint,
        credential_id bigint, account_id bigint, main_id bigint, account_public_id text,
        path tenancy.account_path, home_account_id bigint, home_path tenancy.account_path,
        role text, expires_at timestamptz) RETURNS void
    AS 'MODULE_PATHNAME', 'tenancy_issue_context' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._issue_context(text, text, bigint, bigint, bigint, bigint, text,
    tenancy.account_path, bigint, tenancy.account_path, text, timestamptz) FROM PUBLIC;

CREATE FUNCTION tenancy._session_record() RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_session_record' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._session_record() FROM PUBLIC;

-- Readers. STABLE and PARALLEL SAFE so that policies can use them in index
-- conditions and in parallel workers; per row a call costs a few integer
-- compares (the path is cached per token and transaction).
CREATE FUNCTION tenancy.current_path() RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'tenancy_current_path' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION tenancy._home_path() RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'tenancy_home_path' LANGUAGE C STABLE PARALLEL SAFE;
CREATE FUNCTION tenancy._context_field(name text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_context_field' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION tenancy.current_account() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT tenancy._context_field('account') $$;
CREATE FUNCTION tenancy.current_account_id() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT tenancy._context_field('account_id')::bigint $$;
CREATE FUNCTION tenancy.current_main_id() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT tenancy._context_field('main_id')::bigint $$;
CREATE FUNCTION tenancy.current_role_name() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT tenancy._context_field('role') $$;

CREATE FUNCTION tenancy.reset() RETURNS void
    AS 'MODULE_PATHNAME', 'tenancy_reset' LANGUAGE C VOLATILE;

-- Does the active role grant `action` on `resource`?
CREATE FUNCTION tenancy.may(resource text, action text) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
        SELECT EXISTS (SELECT FROM tenancy.role_permissions p
                       WHERE p.role = tenancy._context_field('role')
                         AND p.resource = may.resource AND p.action = may.action)
    $$;

-- A restricted context (a session that owes its second factor, or must change
-- a temporary password) may only verify the factor, change the password, log
-- out or ask whoami(). Everything else raises 28T01 (MFA required) or 28T02
-- (password change required): the gateway answers 401 mfa_required / 403
-- password_change_required from these codes.
CREATE FUNCTION tenancy._refuse_restricted() RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('role') = 'mfa_pending' THEN
        RAISE EXCEPTION 'the session must complete tenancy.verify_mfa() first' USING ERRCODE = '28T01';
    ELSIF tenancy._context_field('role') = 'password_change' THEN
        RAISE EXCEPTION 'the session must change its password with tenancy.change_password() first'
            USING ERRCODE = '28T02';
    END IF;
END $$;
-- The gateway refuses a restricted context in its authenticate statement.
GRANT EXECUTE ON FUNCTION tenancy._refuse_restricted() TO tenancy_app;

-- Raise 42501 unless the active role grants `action` on `resource`.
CREATE FUNCTION tenancy._require(resource text, action text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first'
            USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    IF NOT tenancy.may(resource, action) THEN
        RAISE EXCEPTION 'role % may not % %', tenancy._context_field('role'), action, resource
            USING ERRCODE = '42501';
    END IF;
END $$;
