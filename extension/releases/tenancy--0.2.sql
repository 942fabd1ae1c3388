-- tenancy install script, assembled from extension/sql/*.sql in name order.
\echo Use "CREATE EXTENSION tenancy" to load this file. \quit

COMMENT ON SCHEMA tenancy IS 'Hierarchical accounts, request context, row-level security and audit';
-- Self-test of the C/C++ error boundary: throws each kind of C++ exception (or a
-- PostgreSQL error through C++ frames) and must come back as a clean SQL error.
CREATE FUNCTION tenancy._boundary_selftest(kind text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_boundary_selftest'
    LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION tenancy._boundary_selftest(text) FROM PUBLIC;
-- tenancy.account_path: the path of account ids from a main account down to an
-- account ('17.4031.90211'). Layout and algorithms: extension/src/account_path_codec.hpp.
--
-- LEAKPROOF is set only on functions that cannot raise an error for any
-- valid input (comparisons, <@, @>, accessors that never fail): row-level
-- security policies use <@, and the planner pushes user predicates below a
-- policy only through leakproof operators. Functions that can fail (input,
-- ||, subpath, to_account_path) are not leakproof: their errors depend on data.

CREATE TYPE tenancy.account_path;

CREATE FUNCTION tenancy.account_path_in(cstring) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_out(tenancy.account_path) RETURNS cstring
    AS 'MODULE_PATHNAME', 'account_path_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_recv(internal) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_send(tenancy.account_path) RETURNS bytea
    AS 'MODULE_PATHNAME', 'account_path_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
-- ANALYZE: the standard statistics plus per-depth subtree sizes, which the
-- <@ and @> estimators read (extension/src/path_selectivity.cpp).
CREATE FUNCTION tenancy.account_path_typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_typanalyze' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE TYPE tenancy.account_path (
    INPUT = tenancy.account_path_in,
    OUTPUT = tenancy.account_path_out,
    RECEIVE = tenancy.account_path_recv,
    SEND = tenancy.account_path_send,
    ANALYZE = tenancy.account_path_typanalyze,
    INTERNALLENGTH = VARIABLE,
    ALIGNMENT = int4,  -- required for varlena; packed 1-byte-header values are not padded
    STORAGE = extended
);
COMMENT ON TYPE tenancy.account_path IS
    'Path of account ids from a main account down to an account, e.g. 17.4031.90211';

-- Comparison (tree order: a node before its descendants, siblings by id).
CREATE FUNCTION tenancy.account_path_cmp(tenancy.account_path, tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_eq(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_ne(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_lt(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_le(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_gt(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_ge(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_sortsupport(internal) RETURNS void
    AS 'MODULE_PATHNAME', 'account_path_sortsupport' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_hash(tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_hash_extended(tenancy.account_path, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

-- Planner support: selectivity of <@ (a subtree: the histogram range
-- [P, subtree_upper(P)) and the per-depth subtree sizes) and @> (the
-- ancestors of P: the sum of their equality selectivities), and the btree
-- index conditions.
CREATE FUNCTION tenancy.account_path_descendant_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_descendant_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_ancestor_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_ancestor_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_descendant_support(internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'account_path_descendant_support' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_ancestor_support(internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'account_path_ancestor_support' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- a <@ b: a is b or below b.  a @> b: a is b or above b.
CREATE FUNCTION tenancy.account_path_descendant(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_descendant' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF
    SUPPORT tenancy.account_path_descendant_support;
CREATE FUNCTION tenancy.account_path_ancestor(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ancestor' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF
    SUPPORT tenancy.account_path_ancestor_support;

CREATE OPERATOR tenancy.= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_eq, COMMUTATOR = OPERATOR(tenancy.=),
    NEGATOR = OPERATOR(tenancy.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR tenancy.<> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ne, COMMUTATOR = OPERATOR(tenancy.<>),
    NEGATOR = OPERATOR(tenancy.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR tenancy.< (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_lt, COMMUTATOR = OPERATOR(tenancy.>),
    NEGATOR = OPERATOR(tenancy.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR tenancy.<= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_le, COMMUTATOR = OPERATOR(tenancy.>=),
    NEGATOR = OPERATOR(tenancy.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR tenancy.> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_gt, COMMUTATOR = OPERATOR(tenancy.<),
    NEGATOR = OPERATOR(tenancy.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR tenancy.>= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ge, COMMUTATOR = OPERATOR(tenancy.<=),
    NEGATOR = OPERATOR(tenancy.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR tenancy.<@ (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_descendant, COMMUTATOR = OPERATOR(tenancy.@>),
    RESTRICT = tenancy.account_path_descendant_sel, JOIN = contjoinsel);
CREATE OPERATOR tenancy.@> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ancestor, COMMUTATOR = OPERATOR(tenancy.<@),
    RESTRICT = tenancy.account_path_ancestor_sel, JOIN = contjoinsel);

CREATE OPERATOR CLASS tenancy.account_path_ops
    DEFAULT FOR TYPE tenancy.account_path USING btree AS
        OPERATOR 1 tenancy.<,
        OPERATOR 2 tenancy.<=,
        OPERATOR 3 tenancy.=,
        OPERATOR 4 tenancy.>=,
        OPERATOR 5 tenancy.>,
        FUNCTION 1 tenancy.account_path_cmp(tenancy.account_path, tenancy.account_path),
        FUNCTION 2 tenancy.account_path_sortsupport(internal),
        FUNCTION 4 pg_catalog.btequalimage(oid);
CREATE OPERATOR CLASS tenancy.account_path_hash_ops
    DEFAULT FOR TYPE tenancy.account_path USING hash AS
        OPERATOR 1 tenancy.=,
        FUNCTION 1 tenancy.account_path_hash(tenancy.account_path),
        FUNCTION 2 tenancy.account_path_hash_extended(tenancy.account_path, bigint);

-- Tree functions (ltree's names and position rules).
CREATE FUNCTION tenancy.nlevel(tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_nlevel' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.nlevel(tenancy.account_path) IS 'number of labels (1 for a main account)';
CREATE FUNCTION tenancy.parent(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_parent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.parent(tenancy.account_path) IS 'path without its last label; NULL for a main account';
CREATE FUNCTION tenancy.root(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_root' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.root(tenancy.account_path) IS 'path of the main account (first label)';
CREATE FUNCTION tenancy.root_id(tenancy.account_path) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_root_id' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.root_id(tenancy.account_path) IS 'id of the main account (first label)';
CREATE FUNCTION tenancy.leaf(tenancy.account_path) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_leaf' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.leaf(tenancy.account_path) IS 'id of the account itself (last label)';
CREATE FUNCTION tenancy.subpath(tenancy.account_path, integer, integer) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subpath3' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.subpath(tenancy.account_path, integer, integer) IS
    'labels from offset (negative: from the end), len labels (negative: leave that many off the end)';
CREATE FUNCTION tenancy.subpath(tenancy.account_path, integer) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subpath2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.subpath(tenancy.account_path, integer) IS
    'labels from offset (negative: from the end) to the end';
CREATE FUNCTION tenancy.lca(tenancy.account_path, tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_lca2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.lca(tenancy.account_path, tenancy.account_path) IS
    'longest common proper ancestor (as ltree); NULL if none';
CREATE FUNCTION tenancy.lca(tenancy.account_path[]) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_lca_array' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.lca(tenancy.account_path[]) IS
    'longest common proper ancestor of all elements (as ltree); NULL if none, for an empty array or a NULL element';
CREATE FUNCTION tenancy.account_path_concat(tenancy.account_path, tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_concat' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_append(tenancy.account_path, bigint) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_append' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR tenancy.|| (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path, FUNCTION = tenancy.account_path_concat);
CREATE OPERATOR tenancy.|| (
    LEFTARG = tenancy.account_path, RIGHTARG = bigint, FUNCTION = tenancy.account_path_append);
CREATE FUNCTION tenancy.labels(tenancy.account_path) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'account_path_labels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.labels(tenancy.account_path) IS 'the account ids of the path, main account first';
CREATE FUNCTION tenancy.to_account_path(bigint[]) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_from_labels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.to_account_path(bigint[]) IS 'path from account ids, main account first';
CREATE FUNCTION tenancy.ancestors(tenancy.account_path) RETURNS tenancy.account_path[]
    AS 'MODULE_PATHNAME', 'account_path_ancestors' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.ancestors(tenancy.account_path) IS
    'the path and all its ancestors, main account first: the values x with x @> path';
CREATE FUNCTION tenancy.subtree_upper(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subtree_upper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.subtree_upper(tenancy.account_path) IS
    'exclusive upper bound of the subtree in sort order (the next sibling): x <@ p  <=>  p <= x < subtree_upper(p)';
-- Crypto primitives the identity functions build on (extension/src/totp.cpp,
-- password.cpp, phi_sql.cpp). See README "Crypto primitives".

-- TOTP (RFC 6238): HMAC-SHA-1, 30 s step, T0 = Unix epoch.
CREATE FUNCTION tenancy.totp(secret_base32 text, at timestamptz DEFAULT now(), digits int DEFAULT 6)
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_totp'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.totp(text, timestamptz, int) IS
    'RFC 6238 TOTP code (HMAC-SHA-1, 30 s step) of a base32 secret at a time';

-- The matched time step (store it to refuse a reused code), or NULL.
CREATE FUNCTION tenancy.totp_verify(secret_base32 text, code text, at timestamptz DEFAULT now(),
                                    "window" int DEFAULT 1, digits int DEFAULT 6)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_totp_verify'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.totp_verify(text, text, timestamptz, int, int) IS
    'TOTP time step within +-window steps whose code equals code (constant-time), else NULL';

CREATE FUNCTION tenancy.new_totp_secret() RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_new_totp_secret'
    LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.new_totp_secret() IS
    '160 random bits as unpadded base32, for TOTP enrolment';

CREATE FUNCTION tenancy.otpauth_uri(secret text, account_label text, issuer text DEFAULT 'Tenancy')
    RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_otpauth_uri'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.otpauth_uri(text, text, text) IS
    'otpauth:// URI (Key Uri Format) for authenticator apps';

-- Passwords: argon2id, t=2, m=19 MiB, p=1. Deliberately expensive (COST), so
-- the planner evaluates them after cheaper conditions; never LEAKPROOF.
CREATE FUNCTION tenancy.hash_password(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_hash_password'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.hash_password(text) IS
    'argon2id hash (libsodium string format) of a password of 1 to 1024 bytes';

CREATE FUNCTION tenancy.verify_password(password text, hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_verify_password'
    LANGUAGE C STABLE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.verify_password(text, text) IS
    'true when password matches an argon2 hash; false for a mismatch or a malformed hash';

CREATE FUNCTION tenancy.password_needs_rehash(hash text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_password_needs_rehash'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.password_needs_rehash(text) IS
    'true when hash is not argon2id with the current parameters';

CREATE FUNCTION tenancy.dummy_password_check(password text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_dummy_password_check'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT COST 10000;
COMMENT ON FUNCTION tenancy.dummy_password_check(text) IS
    'costs one verify_password and returns false (logins for unknown principals)';

-- Tokens and digests for API keys and session tokens (fast: never argon2).
CREATE FUNCTION tenancy.random_token(nbytes int DEFAULT 32) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_random_token'
    LANGUAGE C VOLATILE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.random_token(int) IS
    'nbytes (16..64) random bytes as URL-safe base64 without padding';

CREATE FUNCTION tenancy.sha256_hex(data text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_sha256_hex'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.sha256_hex(text) IS 'SHA-256 of the text''s bytes, lower-case hex';

CREATE FUNCTION tenancy.sha256(data bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_sha256'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.sha256(bytea) IS 'SHA-256 digest (32 bytes)';

-- PHI redaction of transcripts: phone numbers, email addresses, Luhn-valid
-- card numbers become [PHONE], [EMAIL], [CARD].
CREATE FUNCTION tenancy.redact_phi(t text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_redact_phi'
    LANGUAGE C IMMUTABLE PARALLEL SAFE STRICT;
COMMENT ON FUNCTION tenancy.redact_phi(text) IS
    'text with phone numbers, email addresses and Luhn-valid card numbers replaced by [PHONE], [EMAIL], [CARD]';
-- Database roles, and the product roles with their permission sets.
--
--   tenancy_owner  NOLOGIN: owns every tenancy table (RLS is FORCEd, so even
--                  the owner is confined).
--   tenancy_admin  NOLOGIN, BYPASSRLS: granted to DBAs; runs the DBA functions.
--   tenancy_app    NOLOGIN group of every client: holds the client grants; no
--                  BYPASSRLS, owns nothing, sees only what its request
--                  context allows. Each application, SQL client and gateway
--                  logs in as its own member role (tenancy.create_client()),
--                  so no client sees another's query text, ends its backend or
--                  changes the shared role's settings or password.
--   tenancy_gateway NOLOGIN, a member of tenancy_app: granted to the gateway's
--                  login role; the gateway's own calls (system audit events)
--                  check that the session user holds it.
-- Roles are cluster-wide, so they survive DROP EXTENSION and are reused by a
-- second database.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner') THEN
        CREATE ROLE tenancy_owner NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_admin') THEN
        CREATE ROLE tenancy_admin NOLOGIN BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app') THEN
        CREATE ROLE tenancy_app NOLOGIN NOBYPASSRLS;
    ELSE
        -- A cluster from before per-client roles: the shared login goes away.
        ALTER ROLE tenancy_app NOLOGIN NOBYPASSRLS PASSWORD NULL;
        ALTER ROLE tenancy_app RESET ALL;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_gateway') THEN
        CREATE ROLE tenancy_gateway NOLOGIN NOBYPASSRLS;
    END IF;
END
$roles$;
GRANT tenancy_app TO tenancy_gateway;

GRANT USAGE ON SCHEMA tenancy TO tenancy_app, tenancy_admin, tenancy_owner;

-- The gateway's own calls (system audit events, Idempotency-Key storage, the
-- batched record of GETs, the list-cursor key) are for the gateway only: its
-- login role is a member of tenancy_gateway (a superuser is a member of every
-- role). session_user, not current_user: the gateway does SET LOCAL ROLE
-- tenancy_app inside each request, which leaves session_user alone, and only
-- a superuser session can change its session_user.
CREATE FUNCTION tenancy._session_is_gateway() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_has_role(session_user, 'tenancy_gateway', 'MEMBER') $$;
-- Raise 42501 unless the session is the gateway's; `what` names the call.
CREATE FUNCTION tenancy._require_gateway(what text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT tenancy._session_is_gateway() THEN
        RAISE EXCEPTION '% is for the gateway only', what
            USING ERRCODE = '42501',
                  HINT = 'The gateway logs in as a role made by tenancy.create_client(..., gateway => true).';
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._session_is_gateway(), tenancy._require_gateway(text) FROM PUBLIC;

-- Product roles. A role held in an account applies to its whole subtree.
CREATE TABLE tenancy.roles (
    name text PRIMARY KEY,
    description text NOT NULL
);
CREATE TABLE tenancy.role_permissions (
    role text NOT NULL REFERENCES tenancy.roles (name),
    resource text NOT NULL,
    action text NOT NULL CHECK (action IN ('read', 'write')),
    PRIMARY KEY (role, resource, action)
);

INSERT INTO tenancy.roles VALUES
    ('owner', 'Everything, including billing, API keys and members; several owners allowed'),
    ('admin', 'Manage agents, flows, channels, knowledge bases, campaigns, integrations and members except owners; no billing'),
    ('member', 'Playground, call history, live monitoring; no configuration changes'),
    ('support_agent', 'Escalation queue: view and claim calls, whisper and barge'),
    ('viewer', 'Read-only analytics, call history and agent configuration'),
    ('sub_user', 'Assistants, tools, knowledge bases and statistics; no sub-users, full logs, billing or settings');

INSERT INTO tenancy.role_permissions (role, resource, action)
SELECT 'owner', r, a
FROM unnest(ARRAY['accounts', 'settings', 'billing', 'members', 'api_keys', 'sub_users', 'audit',
                  'agents', 'flows', 'channels', 'knowledge_bases', 'campaigns', 'integrations', 'tools',
                  'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r,
     unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'admin', r, a
FROM unnest(ARRAY['accounts', 'settings', 'members', 'sub_users', 'agents', 'flows', 'channels',
                  'knowledge_bases', 'campaigns', 'integrations', 'tools', 'contacts', 'conversations',
                  'calls']) AS r,
     unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'admin', r, 'read' FROM unnest(ARRAY['api_keys', 'audit', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'member', r, 'read'
FROM unnest(ARRAY['agents', 'flows', 'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'member', 'conversations', 'write'
UNION ALL
SELECT 'support_agent', r, 'read' FROM unnest(ARRAY['agents', 'contacts', 'conversations', 'calls']) AS r
UNION ALL
SELECT 'support_agent', r, 'write' FROM unnest(ARRAY['conversations', 'calls']) AS r
UNION ALL
SELECT 'viewer', r, 'read'
FROM unnest(ARRAY['agents', 'flows', 'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'sub_user', r, a
FROM unnest(ARRAY['agents', 'tools', 'knowledge_bases']) AS r, unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'sub_user', r, 'read' FROM unnest(ARRAY['analytics', 'usage', 'conversations', 'calls', 'contacts']) AS r;

ALTER TABLE tenancy.roles OWNER TO tenancy_owner;
ALTER TABLE tenancy.role_permissions OWNER TO tenancy_owner;
-- Not tenant data, but every table has RLS on and forced; everyone may read.
ALTER TABLE tenancy.roles ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.role_permissions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY readable ON tenancy.roles FOR SELECT USING (true);
CREATE POLICY readable ON tenancy.role_permissions FOR SELECT USING (true);
GRANT SELECT ON tenancy.roles, tenancy.role_permissions TO tenancy_app, tenancy_admin;
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
-- Accounts, plans, users and memberships.
--
-- An account's path (main id . ... . own id) is its single source of truth:
-- id, parent_id and main_id are generated from it. Every tenant table points
-- at its account by path with ON UPDATE CASCADE, so moving a subtree (one
-- UPDATE of accounts.path) carries every row along, and an insert racing a move
-- either lands before it (and is carried) or fails its foreign key check after
-- it: never an orphan under a stale path.

CREATE TABLE tenancy.plans (
    name text PRIMARY KEY,
    max_subaccounts integer NOT NULL CHECK (max_subaccounts >= 0),
    max_depth integer NOT NULL CHECK (max_depth >= 1),      -- levels, the main account is 1
    max_sub_users integer NOT NULL DEFAULT 10 CHECK (max_sub_users >= 0),
    max_api_keys integer NOT NULL CHECK (max_api_keys >= 0), -- active keys per account
    phi_protection boolean NOT NULL DEFAULT false,
    audit_log boolean NOT NULL DEFAULT true,
    call_recording boolean NOT NULL DEFAULT false
);
INSERT INTO tenancy.plans VALUES
    ('free', 0, 1, 2, 2, false, false, false),
    ('standard', 100, 4, 10, 20, false, true, false),
    ('enterprise', 100000, 8, 50, 200, true, true, true);

CREATE SEQUENCE tenancy.account_id_seq;

CREATE TABLE tenancy.accounts (
    path tenancy.account_path NOT NULL,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(path)) STORED,
    id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(path)) STORED,
    parent_id bigint GENERATED ALWAYS AS (
        CASE WHEN tenancy.nlevel(path) > 1 THEN tenancy.leaf(tenancy.parent(path)) END) STORED,
    public_id text NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    plan text NOT NULL REFERENCES tenancy.plans (name),
    branding jsonb CHECK (branding IS NULL OR jsonb_typeof(branding) = 'object'),
    settings jsonb CHECK (settings IS NULL OR jsonb_typeof(settings) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    UNIQUE (main_id, public_id),
    -- system-generated, never chosen by a client: uniqueness reveals nothing.
    UNIQUE (path)
);

-- Public ids of accounts promoted to main accounts keep working.
CREATE TABLE tenancy.account_forwarding (
    public_id text PRIMARY KEY,
    main_id bigint NOT NULL
);

-- Users are global identities (logins come with the identity module).
CREATE TABLE tenancy.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    name text,
    password_hash text,
    must_change_password boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON tenancy.users (lower(email));

CREATE TABLE tenancy.memberships (
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(account_path)) STORED,
    user_id bigint NOT NULL REFERENCES tenancy.users (id) ON DELETE CASCADE,
    role text NOT NULL REFERENCES tenancy.roles (name),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, account_id, user_id)
);
CREATE INDEX memberships_account_path ON tenancy.memberships (account_path);
CREATE INDEX memberships_user ON tenancy.memberships (user_id);

-- ---- lookups (internal) ----------------------------------------------------

-- Splits "<prefix>_<id>_..._<id>[_<secret>]" into its ids (1 to 18 digits each)
-- and, when secret_len > 0, a trailing base64url secret of exactly that length.
-- NULL when malformed. A C scanner (credentials.cpp): bounded repetition such as
-- {1,18} or {43} costs ~100 us a match in PostgreSQL's regex engine.
CREATE FUNCTION tenancy._id_parts(value text, prefix text, ids integer, secret_len integer)
    RETURNS text[]
    AS 'MODULE_PATHNAME', 'tenancy_id_parts' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The account with this public id, or a row of NULLs. The id embeds the main
-- account, so the lookup needs no global index.
CREATE FUNCTION tenancy._find_account(public_id text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    hint bigint;
    found_row tenancy.accounts;
BEGIN
    -- (unbounded classes + length checks: bounded repetition is slow in PostgreSQL's regex engine)
    IF public_id IS NULL OR public_id !~ '^acc_[0-9]+_[0-9a-f]+$'
       OR length(split_part(public_id, '_', 2)) > 18 OR length(split_part(public_id, '_', 3)) <> 12 THEN
        RETURN found_row;
    END IF;
    hint := split_part(public_id, '_', 2)::bigint;
    SELECT * INTO found_row FROM tenancy.accounts a
    WHERE a.main_id = hint AND a.public_id = _find_account.public_id;
    IF NOT FOUND THEN
        SELECT a.* INTO found_row
        FROM tenancy.account_forwarding f
        JOIN tenancy.accounts a ON a.main_id = f.main_id AND a.public_id = f.public_id
        WHERE f.public_id = _find_account.public_id;
    END IF;
    RETURN found_row;
END $$;

-- The account, if it lies in the active account's subtree; otherwise the same
-- "not found" as for an account that does not exist (no existence leak).
CREATE FUNCTION tenancy._visible_account(public_id text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(public_id);
BEGIN
    IF a.id IS NULL OR tenancy.current_path() IS NULL OR NOT (a.path <@ tenancy.current_path()) THEN
        RAISE EXCEPTION 'account "%" not found', public_id USING ERRCODE = 'P0002';
    END IF;
    RETURN a;
END $$;

CREATE FUNCTION tenancy._new_account_public_id(main_id bigint) RETURNS text
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT format('acc_%s_%s', main_id, encode(tenancy._random_bytes(6), 'hex')) $$;

CREATE FUNCTION tenancy._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF name IS NULL OR length(btrim(name)) = 0 OR length(name) > 200 THEN
        RAISE EXCEPTION 'account name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    RETURN btrim(name);
END $$;

-- ---- DBA functions ------------------------------------------------------------

CREATE FUNCTION tenancy.create_main_account(name text, owner_email text, owner_password text,
                                            plan text DEFAULT 'standard') RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    new_id bigint;
    pub text;
    owner_id bigint;
    clean_name text := tenancy._check_name(name);
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.plans p WHERE p.name = create_main_account.plan) THEN
        RAISE EXCEPTION 'unknown plan "%"', plan USING ERRCODE = '22023';
    END IF;
    IF owner_email IS NULL OR owner_email !~ '^[^@\s]+@[^@\s]+$' OR length(owner_email) > 254 THEN
        RAISE EXCEPTION 'owner email is not valid' USING ERRCODE = '22023';
    END IF;
    new_id := nextval('tenancy.account_id_seq');
    pub := tenancy._new_account_public_id(new_id);
    INSERT INTO tenancy.accounts (path, public_id, name, plan)
    VALUES (new_id::text::tenancy.account_path, pub, clean_name, create_main_account.plan);

    SELECT u.id INTO owner_id FROM tenancy.users u WHERE lower(u.email) = lower(owner_email);
    IF NOT FOUND THEN
        -- An existing user keeps their password; a new one gets this one.
        INSERT INTO tenancy.users (email, password_hash)
        VALUES (owner_email, tenancy.hash_password(owner_password))
        RETURNING id INTO owner_id;
    END IF;
    INSERT INTO tenancy.memberships (account_path, user_id, role)
    VALUES (new_id::text::tenancy.account_path, owner_id, 'owner');
    RETURN pub;
END $$;

-- Make a user an owner of an account (DBA only, never through the gateway);
-- by default the previous owners become admins.
CREATE FUNCTION tenancy.transfer_ownership(account text, new_owner_email text,
                                           demote_previous boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
    uid bigint;
BEGIN
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    SELECT u.id INTO uid FROM tenancy.users u WHERE lower(u.email) = lower(new_owner_email);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user "%" not found', new_owner_email USING ERRCODE = 'P0002';
    END IF;
    IF demote_previous THEN
        UPDATE tenancy.memberships m SET role = 'admin'
        WHERE m.main_id = a.main_id AND m.account_id = a.id AND m.role = 'owner' AND m.user_id <> uid;
    END IF;
    INSERT INTO tenancy.memberships (account_path, user_id, role) VALUES (a.path, uid, 'owner')
    ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = 'owner';
END $$;

-- Promote a subaccount (with its subtree and rows) to a main account. Its API
-- keys are revoked: the ownership boundary changed, so credentials are
-- re-issued, as for a transfer of ownership.
CREATE FUNCTION tenancy.promote_account(account text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
BEGIN
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    IF a.parent_id IS NULL THEN
        RAISE EXCEPTION 'account "%" is already a main account', account USING ERRCODE = '22023';
    END IF;
    PERFORM FROM tenancy.accounts m WHERE m.main_id = a.main_id AND m.id = a.main_id FOR UPDATE;
    UPDATE tenancy.api_keys k SET revoked_at = now()
    WHERE k.account_path <@ a.path AND k.revoked_at IS NULL;
    INSERT INTO tenancy.account_forwarding (public_id, main_id)
    SELECT x.public_id, a.id FROM tenancy.accounts x WHERE x.path <@ a.path
    ON CONFLICT (public_id) DO UPDATE SET main_id = excluded.main_id;
    UPDATE tenancy.accounts x
    SET path = tenancy.subpath(x.path, tenancy.nlevel(a.path) - 1), updated_at = now()
    WHERE x.path <@ a.path;
END $$;

-- ---- in-context functions ------------------------------------------------------

CREATE FUNCTION tenancy.create_account(parent text, name text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.accounts;
    main_plan tenancy.plans;
    subaccounts bigint;
    new_id bigint;
    pub text;
    clean_name text;
BEGIN
    PERFORM tenancy._require('accounts', 'write');
    p := tenancy._visible_account(parent);
    clean_name := tenancy._check_name(name);
    IF p.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', parent USING ERRCODE = '55000';
    END IF;
    -- One creator at a time per main account, so limits hold under concurrency.
    SELECT pl.* INTO main_plan
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = p.main_id AND m.id = p.main_id
    FOR UPDATE OF m;
    IF tenancy.nlevel(p.path) + 1 > main_plan.max_depth THEN
        RAISE EXCEPTION 'plan "%" allows accounts % levels deep', main_plan.name, main_plan.max_depth
            USING ERRCODE = '53400';
    END IF;
    SELECT count(*) INTO subaccounts FROM tenancy.accounts a
    WHERE a.main_id = p.main_id AND a.parent_id IS NOT NULL;
    IF subaccounts >= main_plan.max_subaccounts THEN
        RAISE EXCEPTION 'plan "%" allows % subaccounts', main_plan.name, main_plan.max_subaccounts
            USING ERRCODE = '53400';
    END IF;
    new_id := nextval('tenancy.account_id_seq');
    pub := tenancy._new_account_public_id(p.main_id);
    INSERT INTO tenancy.accounts (path, public_id, name, plan)
    VALUES (p.path OPERATOR(tenancy.||) new_id, pub, clean_name, main_plan.name);
    RETURN pub;
END $$;

-- Soft delete: the subtree stops authenticating, its data is kept.
CREATE FUNCTION tenancy._set_status(account text, new_status text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    PERFORM tenancy._require('accounts', 'write');
    a := tenancy._visible_account(account);
    IF a.path = tenancy.current_path() THEN
        RAISE EXCEPTION 'an account cannot change its own status; act in an ancestor'
            USING ERRCODE = '42501';
    END IF;
    UPDATE tenancy.accounts x SET status = new_status, updated_at = now()
    WHERE x.main_id = a.main_id AND x.id = a.id;
END $$;
REVOKE ALL ON FUNCTION tenancy._set_status(text, text) FROM PUBLIC;

CREATE FUNCTION tenancy.deactivate_account(account text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._set_status(account, 'inactive') $$;

CREATE FUNCTION tenancy.reactivate_account(account text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._set_status(account, 'active') $$;

-- Move a subtree, with all its rows, under another parent in the same main
-- account (owners only).
CREATE FUNCTION tenancy.move_account(account text, new_parent text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    np tenancy.accounts;
    max_depth integer;
    subtree_depth integer;
BEGIN
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may move accounts' USING ERRCODE = '42501';
    END IF;
    a := tenancy._visible_account(account);
    np := tenancy._visible_account(new_parent);
    IF a.path = tenancy.current_path() THEN
        RAISE EXCEPTION 'an account cannot move itself; act in an ancestor' USING ERRCODE = '42501';
    END IF;
    IF np.path <@ a.path THEN
        RAISE EXCEPTION 'cannot move account "%" under itself or its descendant "%"', account, new_parent
            USING ERRCODE = '22023';
    END IF;
    IF a.parent_id = np.id THEN
        RETURN;
    END IF;
    SELECT pl.max_depth INTO max_depth
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = a.main_id AND m.id = a.main_id
    FOR UPDATE OF m;
    SELECT max(tenancy.nlevel(x.path)) - tenancy.nlevel(a.path) + 1 INTO subtree_depth
    FROM tenancy.accounts x WHERE x.path <@ a.path;
    IF tenancy.nlevel(np.path) + subtree_depth > max_depth THEN
        RAISE EXCEPTION 'the move would nest accounts deeper than % levels', max_depth
            USING ERRCODE = '53400';
    END IF;
    -- One statement; foreign keys cascade the new paths into every tenant table.
    UPDATE tenancy.accounts x
    SET path = np.path OPERATOR(tenancy.||) tenancy.subpath(x.path, tenancy.nlevel(a.path) - 1),
        updated_at = now()
    WHERE x.path <@ a.path;
END $$;

-- account_tree(account): the account and its descendants as one nested JSON
-- document {id, name, status, plan, children: [...]}, children by creation
-- order (path order). Default: the active account; one outside the active
-- subtree is "not found", like everywhere else. Built a level at a time,
-- deepest first: each level's nodes take their children from the level below
-- in one grouped join, so the cost grows with the subtree, not its square.
CREATE FUNCTION tenancy.account_tree(account text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    top tenancy.accounts;
    parents bigint[];  -- the level below: each node's parent id, in path order
    nodes jsonb[];
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    top := tenancy._visible_account(coalesce(account, tenancy.current_account()));
    FOR depth IN REVERSE (SELECT max(tenancy.nlevel(a.path)) FROM tenancy.accounts a WHERE a.path <@ top.path)
                         .. tenancy.nlevel(top.path) LOOP
        SELECT array_agg(x.parent_id ORDER BY x.path), array_agg(x.node ORDER BY x.path)
        INTO parents, nodes
        FROM (SELECT a.parent_id, a.path,
                     jsonb_build_object('id', a.public_id, 'name', a.name, 'status', a.status, 'plan', a.plan,
                                        'children', coalesce(c.kids, '[]')) AS node
              FROM tenancy.accounts a
              LEFT JOIN (SELECT u.parent_id, jsonb_agg(u.node ORDER BY u.ord) AS kids
                         FROM unnest(parents, nodes) WITH ORDINALITY AS u(parent_id, node, ord)
                         GROUP BY u.parent_id) c ON c.parent_id = a.id
              WHERE a.path <@ top.path AND tenancy.nlevel(a.path) = depth) x;
    END LOOP;
    RETURN nodes[1];
END $$;
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
    INSERT INTO tenancy.api_keys (account_path, id, public_id, name, role, prefix, expires_at)
    VALUES (a.path, key_id, format('key_%s_%s', a.main_id, key_id), btrim(name), role, key_prefix,
            expires_at);
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
-- Presenting a credential: the only way to obtain a request context.

-- Validate a credential already proven (secret checked, or a session record of
-- this backend) and issue the context for `account_id` (NULL: the credential's
-- own account), which must lie in the credential's subtree and be active up to
-- its main account. Internal.
CREATE FUNCTION tenancy._establish(kind text, main_id bigint, credential_id bigint,
                                   account_id bigint, scope text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF kind = 'api_key' THEN
        RETURN tenancy._establish_api_key(main_id, credential_id, account_id, scope);
    ELSIF kind IN ('user', 'sub_user') THEN
        RETURN tenancy._establish_session(kind, main_id, credential_id, account_id, scope);
    END IF;
    RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
END $$;

-- One statement finds the key, its account, the target account and whether
-- anything on the target's ancestor line is inactive: authenticate() is on
-- every request's path, and each PL/pgSQL statement costs microseconds.
CREATE FUNCTION tenancy._establish_api_key(main_id bigint, credential_id bigint,
                                           account_id bigint, scope text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    -- Its lookups are by key: re-planning them per call (custom plans) cost
    -- about 70 us once the accounts table had statistics.
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    key_role text;
    revoked_at timestamptz;
    expires_at timestamptz;
    home_id bigint;
    home_path tenancy.account_path;
    target_id bigint;
    target_main_id bigint;
    target_public_id text;
    target_path tenancy.account_path;
    inactive boolean;
    key_created_at timestamptz;
    max_days float8;
BEGIN
    -- Accounts are reached by primary key, ancestors by `= ANY(ancestors())`:
    -- both stay index lookups however large the tree (a subtree range or a
    -- correlated `@>` here was planned as a scan of the whole tree).
    -- max_days: the strictest maximum key lifetime on the key's own ancestor
    -- line (settings.api_keys.max_lifetime_days, 41_key_rotation.sql).
    SELECT k.role, k.revoked_at, k.expires_at, home.id, home.path,
           t.id, t.main_id, t.public_id, t.path,
           t.id IS NOT NULL AND EXISTS (SELECT FROM tenancy.accounts a
                                        WHERE a.path = ANY (tenancy.ancestors(t.path))
                                          AND a.status <> 'active'),
           k.created_at,
           (SELECT min((a.settings #>> '{api_keys,max_lifetime_days}')::float8)
            FROM tenancy.accounts a
            WHERE a.path = ANY (tenancy.ancestors(home.path))
              AND jsonb_typeof(a.settings #> '{api_keys,max_lifetime_days}') = 'number')
    INTO key_role, revoked_at, expires_at, home_id, home_path,
         target_id, target_main_id, target_public_id, target_path, inactive, key_created_at, max_days
    FROM tenancy.api_keys k
    JOIN tenancy.accounts home ON home.main_id = k.main_id AND home.id = k.account_id
    LEFT JOIN tenancy.accounts t
        ON t.main_id = k.main_id AND t.id = coalesce(_establish_api_key.account_id, k.account_id)
    WHERE k.main_id = _establish_api_key.main_id AND k.id = credential_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    IF revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key has been revoked' USING ERRCODE = '28000';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'API key has expired' USING ERRCODE = '28000';
    END IF;
    IF max_days IS NOT NULL THEN
        IF key_created_at + max_days * interval '1 day' <= now() THEN
            RAISE EXCEPTION 'API key is older than its account''s maximum key lifetime (% days)', max_days
                USING ERRCODE = '28000', HINT = 'Rotate keys (tenancy.rotate_api_key) before they reach it.';
        END IF;
        expires_at := least(coalesce(expires_at, 'infinity'), key_created_at + max_days * interval '1 day');
    END IF;
    IF target_id IS NULL OR NOT (target_path <@ home_path) THEN
        RAISE EXCEPTION 'account not found' USING ERRCODE = 'P0002';
    END IF;
    IF inactive THEN
        RAISE EXCEPTION 'account is inactive' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._issue_context(scope, 'api_key', credential_id, credential_id, target_id,
        target_main_id, target_public_id, target_path, home_id, home_path, key_role,
        least(coalesce(expires_at, 'infinity'), now() + interval '12 hours'));
    RETURN target_public_id;
END $$;

-- User and sub-user sessions (302_identity_sessions.sql). The session must be live; a
-- user acts in an account of one of their memberships or a descendant, with
-- the role of the nearest such membership; a sub-user acts in its main
-- account's subtree with the role sub_user, and only while active. A session
-- owing a second factor or a password change gets a restricted context (see
-- 300_identity_tables.sql). account_id NULL: the account the session opened in.
CREATE FUNCTION tenancy._establish_session(kind text, main_id bigint, credential_id bigint,
                                           account_id bigint, scope text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions;
    target tenancy.accounts;
    home_path tenancy.account_path;
    home_id bigint;
    role text;
    principal bigint;
    must_change boolean;
    su tenancy.sub_users;
BEGIN
    SELECT * INTO s FROM tenancy.sessions x WHERE x.id = credential_id;
    IF NOT FOUND OR s.principal_kind <> kind THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    IF s.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'the session has ended' USING ERRCODE = '28000';
    END IF;
    IF s.expires_at <= now() THEN
        RAISE EXCEPTION 'the session has expired' USING ERRCODE = '28000';
    END IF;
    IF account_id IS NULL THEN
        main_id := s.account_main_id;
        account_id := s.account_id;
    END IF;
    SELECT * INTO target FROM tenancy.accounts a
    WHERE a.main_id = _establish_session.main_id AND a.id = _establish_session.account_id;
    IF NOT FOUND THEN
        -- A session-scoped context that switched main account resumes with its
        -- first main id, and a promoted account has a new one; account ids are
        -- globally unique.
        SELECT * INTO target FROM tenancy.accounts a WHERE a.id = _establish_session.account_id;
    END IF;
    IF target.id IS NULL THEN
        RAISE EXCEPTION 'account not found' USING ERRCODE = 'P0002';
    END IF;
    IF kind = 'user' THEN
        SELECT m.account_path, m.account_id, m.role INTO home_path, home_id, role
        FROM tenancy.memberships m
        WHERE m.user_id = s.user_id AND m.account_path @> target.path
        ORDER BY tenancy.nlevel(m.account_path) DESC
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account "%" not found', target.public_id USING ERRCODE = 'P0002';
        END IF;
        principal := s.user_id;
        SELECT u.must_change_password INTO must_change FROM tenancy.users u WHERE u.id = s.user_id;
    ELSE
        SELECT * INTO su FROM tenancy.sub_users x
        WHERE x.main_id = s.sub_user_main_id AND x.id = s.sub_user_id;
        IF NOT FOUND OR su.status <> 'active' THEN
            RAISE EXCEPTION 'the sub-user is inactive' USING ERRCODE = '28000';
        END IF;
        IF NOT (target.path <@ su.account_path) THEN
            RAISE EXCEPTION 'account "%" not found', target.public_id USING ERRCODE = 'P0002';
        END IF;
        home_path := su.account_path;
        home_id := su.main_id;
        role := 'sub_user';
        principal := su.id;
        must_change := su.must_change_password;
    END IF;
    IF EXISTS (SELECT FROM tenancy.accounts a
               WHERE a.path = ANY (tenancy.ancestors(target.path)) AND a.status <> 'active') THEN
        RAISE EXCEPTION 'account is inactive' USING ERRCODE = '28000';
    END IF;
    IF NOT s.mfa_verified THEN
        role := 'mfa_pending';
    ELSIF must_change THEN
        role := 'password_change';
    END IF;
    IF role IN ('mfa_pending', 'password_change') THEN
        -- A path no row lies under: every policy sees nothing.
        PERFORM tenancy._issue_context(scope, kind, principal, s.id, target.id, target.main_id,
            target.public_id, tenancy._nowhere_path(), home_id, tenancy._nowhere_path(), role,
            s.expires_at);
    ELSE
        PERFORM tenancy._issue_context(scope, kind, principal, s.id, target.id, target.main_id,
            target.public_id, target.path, home_id, home_path, role, s.expires_at);
    END IF;
    RETURN target.public_id;
END $$;
REVOKE ALL ON FUNCTION tenancy._establish(text, bigint, bigint, bigint, text),
    tenancy._establish_api_key(bigint, bigint, bigint, text),
    tenancy._establish_session(text, bigint, bigint, bigint, text) FROM PUBLIC;

-- authenticate(credential): sets the context for this transaction, or for the
-- session with session => true (re-validated at the start of every transaction).
CREATE FUNCTION tenancy.authenticate(credential text, session boolean DEFAULT false) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(credential, 'tnc', 2, 43);
    stored bytea;
    sess text[];
    kind text;
BEGIN
    IF parts IS NULL THEN
        -- A session token: tns_<session id>_<secret>.
        sess := tenancy._id_parts(credential, 'tns', 1, 43);
        IF sess IS NULL THEN
            RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
        END IF;
        SELECT x.secret_hash, x.principal_kind INTO stored, kind
        FROM tenancy.sessions x WHERE x.id = sess[1]::bigint;
        IF NOT tenancy._secret_equal(sess[2], coalesce(stored, '\x00'::bytea)) OR stored IS NULL THEN
            RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
        END IF;
        RETURN tenancy._establish(kind, NULL, sess[1]::bigint, NULL,
                                  CASE WHEN session THEN 'session' ELSE 'transaction' END);
    END IF;
    SELECT s.secret_hash INTO stored FROM tenancy.api_key_secrets s
    WHERE s.main_id = parts[1]::bigint AND s.key_id = parts[2]::bigint;
    -- Compare even when no key matched, so timing says nothing.
    IF NOT tenancy._secret_equal(parts[3], coalesce(stored, '\x00'::bytea)) OR stored IS NULL THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._touch_api_key(parts[1]::bigint, parts[2]::bigint);
    RETURN tenancy._establish_api_key(parts[1]::bigint, parts[2]::bigint, NULL,
                                      CASE WHEN session THEN 'session' ELSE 'transaction' END);
END $$;

-- Called by the extension at the first context read of each transaction while
-- a session context exists; only ever resumes this backend's own session.
CREATE FUNCTION tenancy._resume_session() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    rec text[] := string_to_array(tenancy._session_record(), ':');
BEGIN
    IF rec IS NULL OR array_length(rec, 1) IS DISTINCT FROM 4 THEN
        RETURN;
    END IF;
    PERFORM tenancy._establish(rec[1], rec[2]::bigint, rec[3]::bigint, rec[4]::bigint, 'refresh');
END $$;

-- Act in a descendant of the credential's account (downward only); a user
-- may also switch to any account they are a member of, or a descendant of one
-- (the role is that of the nearest membership). A restricted context
-- (mfa_pending, password_change) cannot switch. Every switch is recorded in
-- the audit log of the account switched to (context.switch), unless the
-- transaction cannot write (read-only, standby).
CREATE FUNCTION tenancy.act_as(account text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    target tenancy.accounts := tenancy._find_account(account);
    kind text := tenancy._context_field('principal_kind');
    target_main bigint;
    switched_to text;
    switched_from text := tenancy._context_field('account');
BEGIN
    IF switched_from IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    IF kind = 'user' THEN
        IF target.id IS NULL OR NOT EXISTS (
                SELECT FROM tenancy.memberships m
                WHERE m.user_id = tenancy._context_field('principal_id')::bigint
                  AND m.account_path @> target.path) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002',
                HINT = 'A user can act in the accounts they are a member of and their descendants.';
        END IF;
        target_main := target.main_id;
    ELSE
        IF target.id IS NULL OR NOT (target.path <@ tenancy._home_path()) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002',
                HINT = 'Only the credential''s account and its descendants can be acted in.';
        END IF;
        target_main := tenancy._context_field('main_id')::bigint;
    END IF;
    switched_to := tenancy._establish(kind, target_main,
                                      tenancy._context_field('credential_id')::bigint, target.id, 'refresh');
    PERFORM tenancy._audit_context_switch(target, switched_from);
    RETURN switched_to;
END $$;

-- context.switch in the account switched to; the actor is the (new) context's.
CREATE FUNCTION tenancy._audit_context_switch(target tenancy.accounts, switched_from text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF current_setting('transaction_read_only')::boolean OR pg_is_in_recovery() THEN
        RETURN;
    END IF;
    PERFORM tenancy._audit_record(target.main_id, target.path, 'context.switch', target.public_id,
        jsonb_build_object('from', switched_from, 'role', tenancy._context_field('role')));
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_context_switch(tenancy.accounts, text) FROM PUBLIC;

CREATE FUNCTION tenancy.whoami() RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT CASE WHEN tenancy._context_field('account') IS NOT NULL THEN jsonb_build_object(
        'principal', jsonb_build_object(
            'kind', tenancy._context_field('principal_kind'),
            'id', CASE tenancy._context_field('principal_kind')
                      WHEN 'api_key' THEN format('key_%s_%s', tenancy._context_field('main_id'),
                                                   tenancy._context_field('principal_id'))
                      WHEN 'sub_user' THEN format('sub_%s_%s', tenancy._context_field('main_id'),
                                                  tenancy._context_field('principal_id'))
                      ELSE tenancy._context_field('principal_id') END,
            'session', CASE WHEN tenancy._context_field('principal_kind') IN ('user', 'sub_user')
                            THEN tenancy._context_field('credential_id')::bigint END),
        'account', tenancy._context_field('account'),
        'role', tenancy._context_field('role'),
        'scope', tenancy._context_field('scope'),
        'expires_at', CASE WHEN tenancy._context_field('expires_at')::bigint < 9223372036854775807
                           THEN to_timestamp(946684800 + tenancy._context_field('expires_at')::numeric / 1000000)
                      END)
    END
$$;
-- Putting tables under tenancy.

CREATE TABLE tenancy.protected_tables (
    tbl regclass PRIMARY KEY,
    resource text NOT NULL,
    protected_at timestamptz NOT NULL DEFAULT now()
);

-- define_resource(resource, writers, readers): an application resource and the
-- product roles that may write (and so read) and read it, for protect(). Adds
-- permissions; never removes one (a role's rights shrink only by a release).
CREATE FUNCTION tenancy.define_resource(resource text,
                                        writers text[] DEFAULT ARRAY['owner', 'admin'],
                                        readers text[] DEFAULT ARRAY['owner', 'admin', 'member', 'support_agent',
                                                                     'viewer', 'sub_user'])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    unknown text;
BEGIN
    IF resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'resource must be a lower-case identifier' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(r, ', ') INTO unknown
    FROM unnest(coalesce(writers, '{}') || coalesce(readers, '{}')) AS r
    WHERE r IS NULL OR NOT EXISTS (SELECT FROM tenancy.roles x WHERE x.name = r);
    IF unknown IS NOT NULL OR cardinality(coalesce(writers, '{}') || coalesce(readers, '{}')) = 0 THEN
        RAISE EXCEPTION 'unknown role(s): %', coalesce(unknown, '(none given)') USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.role_permissions (role, resource, action)
    SELECT DISTINCT r, define_resource.resource, a
    FROM (SELECT r, 'write' AS a FROM unnest(writers) AS r
          UNION ALL SELECT r, 'read' FROM unnest(writers) AS r
          UNION ALL SELECT r, 'read' FROM unnest(readers) AS r) x(r, a)
    ON CONFLICT DO NOTHING;
END $$;

-- protect(tbl, resource): adds (or adopts) the account_path column, defaulting
-- to the active account; a foreign key to the account's path that carries rows
-- along when an account moves; an index for subtree scans; RLS enabled and
-- forced with policies: read = the active account's subtree, write = that and
-- the active role's "write" permission on `resource`.
-- Policies call tenancy.current_path() directly, not as an InitPlan: the planner
-- then evaluates it while planning, estimates the subtree's size and picks a
-- sequential scan for a large subtree and the index for a small one; per row
-- the call is a few integer compares (context.cpp caches the path).
CREATE FUNCTION tenancy.protect(tbl regclass, resource text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    coltype regtype;
    in_scope text := 'account_path OPERATOR(tenancy.<@) tenancy.current_path()';
    may_write text;
    seq regclass;
    policy name;
BEGIN
    IF resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'resource must be a lower-case identifier' USING ERRCODE = '22023';
    END IF;
    -- A resource no role may write would lock even the owner out of the table.
    IF NOT EXISTS (SELECT FROM tenancy.role_permissions p WHERE p.resource = protect.resource) THEN
        RAISE EXCEPTION 'unknown resource "%"', resource USING ERRCODE = '22023',
            HINT = format('Known resources: %s. Declare a new one with tenancy.define_resource().',
                          (SELECT string_agg(DISTINCT p.resource, ', ' ORDER BY p.resource)
                           FROM tenancy.role_permissions p));
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = '22023';
    END IF;
    may_write := format('tenancy.may(%L, ''write'')', resource);
    SELECT a.atttypid::regtype INTO coltype FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'account_path' AND NOT a.attisdropped;
    IF coltype IS NULL THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN account_path tenancy.account_path', tbl);
    ELSIF coltype <> 'tenancy.account_path'::regtype THEN
        RAISE EXCEPTION 'column account_path of % must be of type tenancy.account_path', tbl
            USING ERRCODE = '42804';
    END IF;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN account_path SET DEFAULT tenancy.current_path()', tbl);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN account_path SET NOT NULL', tbl);
    IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = 'main_id'
                   AND NOT a.attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN main_id bigint GENERATED ALWAYS AS '
                       '(tenancy.root_id(account_path)) STORED', tbl);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conrelid = tbl AND c.conname = 'tenancy_account') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenancy_account FOREIGN KEY (account_path) '
                       'REFERENCES tenancy.accounts (path) ON UPDATE CASCADE', tbl);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                   AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = tbl AND a.attname = 'account_path') THEN
        EXECUTE format('CREATE INDEX ON %s (account_path)', tbl);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
    FOR policy IN SELECT p.polname FROM pg_policy p
                  WHERE p.polrelid = tbl AND p.polname LIKE 'tenancy\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', policy, tbl);
    END LOOP;
    EXECUTE format('CREATE POLICY tenancy_read ON %s FOR SELECT USING (%s)', tbl, in_scope);
    EXECUTE format('CREATE POLICY tenancy_insert ON %s FOR INSERT WITH CHECK (%s AND %s)',
                   tbl, in_scope, may_write);
    EXECUTE format('CREATE POLICY tenancy_update ON %s FOR UPDATE USING (%s AND %s) WITH CHECK (%s AND %s)',
                   tbl, in_scope, may_write, in_scope, may_write);
    EXECUTE format('CREATE POLICY tenancy_delete ON %s FOR DELETE USING (%s AND %s)',
                   tbl, in_scope, may_write);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO tenancy_app', tbl);
    FOR seq IN SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
               WHERE d.refobjid = tbl AND d.classid = 'pg_class'::regclass AND c.relkind = 'S'
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tenancy_app', seq);
    END LOOP;
    INSERT INTO tenancy.protected_tables (tbl, resource) VALUES (tbl, resource)
    ON CONFLICT ON CONSTRAINT protected_tables_pkey DO UPDATE SET resource = excluded.resource;
    -- The audit trigger (40_audit.sql; tables protected earlier in the install
    -- script are attached there).
    IF to_regprocedure('tenancy._audit_attach(regclass,text)') IS NOT NULL THEN
        PERFORM tenancy._audit_attach(tbl);
    END IF;
END $$;
-- Client login roles (DBA): every application, SQL client and gateway logs in
-- as its own role, a member of the NOLOGIN group tenancy_app (20_roles.sql).
-- PostgreSQL shows a backend's query text to, and lets it be terminated by,
-- only roles with the privileges of the backend's login role, and only a
-- role's admins may change its settings: one shared login role gave every
-- client all three over every other client.

-- create_client(name, password, gateway): a LOGIN role in tenancy_app (or, for
-- a gateway, in tenancy_gateway, which is a member of tenancy_app). password
-- may be NULL (set it later with psql's \password, which sends only a SCRAM
-- verifier) or a SCRAM-SHA-256 verifier, stored as given; a clear password is
-- hashed by the server.
CREATE FUNCTION tenancy.create_client(name text, password text DEFAULT NULL, gateway boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' OR name LIKE 'pg\_%' OR name LIKE 'tenancy\_%' THEN
        RAISE EXCEPTION 'invalid client role name "%"', name
            USING ERRCODE = '22023',
                  HINT = 'Use 1 to 63 lower-case letters, digits and underscores, not starting with pg_ or tenancy_.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = name) THEN
        RAISE EXCEPTION 'role "%" already exists', name USING ERRCODE = '42710';
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                   name);
    IF password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', name, password);
    END IF;
    EXECUTE format('GRANT %I TO %I', CASE WHEN gateway THEN 'tenancy_gateway' ELSE 'tenancy_app' END, name);
    EXECUTE format('COMMENT ON ROLE %I IS %L', name,
                   CASE WHEN gateway THEN 'tenancy gateway client' ELSE 'tenancy client' END);
END $$;

-- drop_client(name): drops a role made by create_client, never another one.
CREATE FUNCTION tenancy.drop_client(name text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.clients c WHERE c.name = drop_client.name) THEN
        RAISE EXCEPTION 'client role "%" not found', name USING ERRCODE = 'P0002';
    END IF;
    EXECUTE format('DROP ROLE %I', name);
END $$;

-- The client roles: name, gateway or not, and how many backends each has open.
CREATE VIEW tenancy.clients AS
SELECT r.rolname::text AS name, g.rolname = 'tenancy_gateway' AS gateway, r.rolcanlogin AS can_login,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity s WHERE s.usesysid = r.oid) AS connections
FROM pg_catalog.pg_roles r
JOIN pg_catalog.pg_auth_members m ON m.member = r.oid
JOIN pg_catalog.pg_roles g ON g.oid = m.roleid AND g.rolname IN ('tenancy_app', 'tenancy_gateway')
WHERE NOT r.rolsuper AND NOT r.rolbypassrls AND NOT r.rolcreaterole
  AND r.rolname NOT IN ('tenancy_app', 'tenancy_gateway', 'tenancy_admin', 'tenancy_owner', 'tenancy_mailer')
  AND pg_catalog.shobj_description(r.oid, 'pg_authid') IN ('tenancy client', 'tenancy gateway client');

REVOKE ALL ON FUNCTION tenancy.create_client(text, text, boolean), tenancy.drop_client(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_client(text, text, boolean), tenancy.drop_client(text) TO tenancy_admin;
REVOKE ALL ON tenancy.clients FROM PUBLIC;
GRANT SELECT ON tenancy.clients TO tenancy_admin;
-- Login throttling in shared memory (extension/src/throttle.cpp): a failure
-- count that survives a rollback. The SQL wrappers and the table counter are
-- in 301_identity_throttle_audit.sql. Keys are login names ('user:<email>', ...), lower case.
-- Every function returns NULL when tenancy.so was not loaded through
-- shared_preload_libraries (no shared table): callers then rely on the table
-- counter alone.

-- May the attempt go on? Counts it as a failure at once (until
-- _throttle_success); false, counting nothing, while the key is throttled.
CREATE FUNCTION tenancy._throttle_attempt(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_attempt' LANGUAGE C VOLATILE STRICT;
-- Is the key throttled now? Counts nothing.
CREATE FUNCTION tenancy._throttle_check(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_check' LANGUAGE C VOLATILE STRICT;
-- Failures within the window, attempts under way included (audit detail:
-- shows attempts whose own entries a rollback discarded).
CREATE FUNCTION tenancy._throttle_count(login_key text) RETURNS integer
    AS 'MODULE_PATHNAME', 'tenancy_throttle_count' LANGUAGE C VOLATILE STRICT;
-- Forgets the key's failures (after a success).
CREATE FUNCTION tenancy._throttle_success(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_success' LANGUAGE C VOLATILE STRICT;
-- Is the shared table there (tenancy in shared_preload_libraries)?
CREATE FUNCTION tenancy._throttle_available() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_available' LANGUAGE C VOLATILE;
-- DBA: moves every recorded failure `by` into the past, in shared memory and
-- in this database's table tenancy.login_failures; returns the shared entries
-- touched (NULL without the preload). Lets the tests end a cooling period;
-- '1 day' lifts every lock. The advisory lock (key: 'tenancy' in ASCII) is the
-- one the login audit writer holds while it checks and inserts a queued row,
-- so no row comes back un-rewound.
CREATE FUNCTION tenancy._throttle_rewind_shared(by interval) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_throttle_rewind' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION tenancy._throttle_rewind(by interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    touched bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(32762622053868409);
    touched := tenancy._throttle_rewind_shared(by);
    UPDATE tenancy.login_failures f SET failed_at = f.failed_at - by;
    RETURN touched;
END $$;

REVOKE ALL ON FUNCTION tenancy._throttle_attempt(text), tenancy._throttle_check(text), tenancy._throttle_count(text),
    tenancy._throttle_success(text), tenancy._throttle_available(),
    tenancy._throttle_rewind_shared(interval), tenancy._throttle_rewind(interval) FROM PUBLIC;

-- The failed-login queue (extension/src/login_queue.cpp): what a failed login
-- writes in the caller's transaction, kept in shared memory until that
-- transaction ends and written again by a background worker if it did not
-- commit. NULL without shared_preload_libraries (and on a standby); false
-- when the queue is full.
-- The table counter row of a failure _throttle_attempt counted (login_key as
-- given to it).
CREATE FUNCTION tenancy._login_queue_row(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_row' LANGUAGE C VOLATILE STRICT;
-- A failed login's audit entries: kind 'user' or 'sub_user', the user's id if
-- known, the login name as audited, the main account email typed (sub-user),
-- the reason and the recent failures.
CREATE FUNCTION tenancy._login_queue_audit(kind text, user_id bigint, name text, main_name text,
                                           reason text, recent_failures integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_audit' LANGUAGE C VOLATILE;
-- Records queued, every database (tests, monitoring).
CREATE FUNCTION tenancy._login_queue_length() RETURNS integer
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_length' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION tenancy._login_queue_row(text),
    tenancy._login_queue_audit(text, bigint, text, text, text, integer),
    tenancy._login_queue_length() FROM PUBLIC;
-- Ownership, row-level security and privileges of the tenancy tables.
-- Tables belong to tenancy_owner (NOLOGIN) with RLS enabled and FORCEd; the
-- SECURITY DEFINER functions above run as the installing superuser and check
-- the context explicitly. tenancy_app reads through the policies below.

-- Is user_id the context's own user (a user session, not a key or sub-user)?
CREATE FUNCTION tenancy._is_own_user(user_id bigint) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT tenancy._context_field('principal_kind') = 'user'
           AND tenancy._context_field('role') NOT IN ('mfa_pending', 'password_change')
           AND user_id = tenancy._context_field('principal_id')::bigint
$$;

DO $own$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plans', 'accounts', 'account_forwarding', 'users', 'memberships',
                             'api_keys', 'api_key_secrets', 'api_key_usage', 'protected_tables']
    LOOP
        EXECUTE format('ALTER TABLE tenancy.%I OWNER TO tenancy_owner', t);
        EXECUTE format('ALTER TABLE tenancy.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON tenancy.%I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT ON tenancy.%I TO tenancy_admin', t);
    END LOOP;
END
$own$;
ALTER SEQUENCE tenancy.account_id_seq OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.api_key_id_seq OWNER TO tenancy_owner;

CREATE POLICY readable ON tenancy.plans FOR SELECT USING (true);
GRANT SELECT ON tenancy.plans TO tenancy_app;

-- Accounts: the active account's subtree; never a parent or a sibling.
CREATE POLICY subtree_read ON tenancy.accounts FOR SELECT
    USING (path <@ tenancy.current_path());
GRANT SELECT ON tenancy.accounts TO tenancy_app;
-- No UPDATE grant: name, branding and settings change only through
-- tenancy.update_account() (34_api_accounts.sql), which validates them.

-- Members and their emails: roles that may read members (owner, admin) see
-- the subtree's; every other role sees only its own user's memberships.
CREATE POLICY subtree_read ON tenancy.memberships FOR SELECT
    USING (account_path <@ tenancy.current_path()
           AND (tenancy.may('members', 'read') OR tenancy._is_own_user(user_id)));
GRANT SELECT ON tenancy.memberships TO tenancy_app;

-- Users: those who are members somewhere in the subtree (members readers), or
-- oneself. Hashes are never granted.
CREATE POLICY member_in_subtree ON tenancy.users FOR SELECT
    USING (tenancy._is_own_user(id)
           OR (tenancy.may('members', 'read')
               AND EXISTS (SELECT FROM tenancy.memberships m
                           WHERE m.user_id = users.id
                             AND m.account_path <@ tenancy.current_path())));
GRANT SELECT (id, email, name, created_at) ON tenancy.users TO tenancy_app;

CREATE POLICY subtree_read ON tenancy.api_keys FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('api_keys', 'read'));
GRANT SELECT ON tenancy.api_keys TO tenancy_app;
CREATE POLICY key_visible ON tenancy.api_key_usage FOR SELECT
    USING (EXISTS (SELECT FROM tenancy.api_keys k
                   WHERE k.main_id = api_key_usage.main_id AND k.id = api_key_usage.key_id));
GRANT SELECT ON tenancy.api_key_usage TO tenancy_app;
-- api_key_secrets, account_forwarding, protected_tables, context_keys: no
-- policy and no grant: unreadable to every client role.

-- Functions: PUBLIC may call the public API (each checks the context); the
-- internal ones are revoked above; DBA functions go to tenancy_admin only.
REVOKE ALL ON FUNCTION tenancy.create_main_account(text, text, text, text),
    tenancy.transfer_ownership(text, text, boolean), tenancy.promote_account(text),
    tenancy.admin_create_api_key(text, text, text), tenancy.protect(regclass, text),
    tenancy.define_resource(text, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_main_account(text, text, text, text),
    tenancy.transfer_ownership(text, text, boolean), tenancy.promote_account(text),
    tenancy.admin_create_api_key(text, text, text), tenancy.protect(regclass, text),
    tenancy.define_resource(text, text[], text[]) TO tenancy_admin;
REVOKE ALL ON FUNCTION tenancy._id_parts(text, text, integer, integer), tenancy._find_account(text), tenancy._visible_account(text),
    tenancy._new_account_public_id(bigint), tenancy._check_name(text),
    tenancy._require(text, text), tenancy._refuse_restricted() FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
-- Identity, part 1: the tables (users' MFA state, sub-users, sessions, the
-- outbox, invitations, login failures), their row security and grants.
-- The identity install script is split by concern into 300_identity_tables.sql
-- .. 306_identity_outbox_housekeeping.sql (assembled in name order); how a
-- credential becomes a context is in 24_authenticate.sql (_establish).
--
-- Restricted contexts. A session that still owes a second factor, or whose
-- principal must change a temporary password, gets a context with the role
-- 'mfa_pending' / 'password_change' (no permissions at all) and the path
-- tenancy._nowhere_path() (an account id no sequence ever reaches), so every
-- row-level policy, including those of protected application tables, sees no
-- row. Only verify_mfa / change_password / logout / whoami work in it.

CREATE FUNCTION tenancy._nowhere_path() RETURNS tenancy.account_path
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT '9223372036854775806'::tenancy.account_path $$;

-- A mailer role: reads and marks the outbox; granted by the DBA to the login
-- the gateway's mailer uses.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_mailer') THEN
        CREATE ROLE tenancy_mailer NOLOGIN;
    END IF;
END
$roles$;
GRANT USAGE ON SCHEMA tenancy TO tenancy_mailer;

-- ---- users: MFA state --------------------------------------------------------

ALTER TABLE tenancy.users
    ADD COLUMN mfa_secret text,                 -- base32; set by enroll_mfa, live once confirmed
    ADD COLUMN mfa_enabled boolean NOT NULL DEFAULT false,
    ADD COLUMN mfa_last_step bigint,            -- last accepted TOTP step: a code is used once
    ADD COLUMN last_login_at timestamptz;

CREATE TABLE tenancy.mfa_recovery_codes (
    user_id bigint NOT NULL REFERENCES tenancy.users (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- ---- sub-users -------------------------------------------------------------------

CREATE SEQUENCE tenancy.sub_user_id_seq;

-- Sub-users belong to a main account (account_path is the main account's path).
CREATE TABLE tenancy.sub_users (
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    id bigint NOT NULL DEFAULT nextval('tenancy.sub_user_id_seq'),
    public_id text NOT NULL,
    email text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    surname text NOT NULL CHECK (length(surname) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'inactive' CHECK (status IN ('active', 'inactive')),
    visible boolean NOT NULL DEFAULT true,
    password_hash text NOT NULL,
    must_change_password boolean NOT NULL DEFAULT true,
    temp_password_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    last_login_at timestamptz,
    PRIMARY KEY (main_id, id),
    UNIQUE (main_id, public_id),
    CHECK (tenancy.nlevel(account_path) = 1)
);
CREATE UNIQUE INDEX sub_users_email_key ON tenancy.sub_users (main_id, lower(email));

-- ---- sessions ----------------------------------------------------------------------
-- A session token reads tns_<session id>_<43 chars of base64url secret>; the
-- secret is stored only as SHA-256 (column not granted to any client role).

CREATE TABLE tenancy.sessions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal_kind text NOT NULL CHECK (principal_kind IN ('user', 'sub_user')),
    user_id bigint REFERENCES tenancy.users (id) ON DELETE CASCADE,
    sub_user_main_id bigint,
    sub_user_id bigint,
    -- the account the session opened in (authenticate resumes there)
    account_main_id bigint NOT NULL,
    account_id bigint NOT NULL,
    secret_hash bytea NOT NULL,
    mfa_verified boolean NOT NULL DEFAULT true,
    mfa_failures integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    FOREIGN KEY (sub_user_main_id, sub_user_id) REFERENCES tenancy.sub_users (main_id, id)
        ON DELETE CASCADE,
    CHECK ((principal_kind = 'user') = (user_id IS NOT NULL)),
    CHECK ((principal_kind = 'sub_user') = (sub_user_id IS NOT NULL AND sub_user_main_id IS NOT NULL))
);
CREATE INDEX sessions_user ON tenancy.sessions (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX sessions_sub_user ON tenancy.sessions (sub_user_main_id, sub_user_id)
    WHERE sub_user_id IS NOT NULL;

-- ---- outbox ------------------------------------------------------------------------
-- Every email is a row written in the transaction of the change that causes it.
-- Bodies may carry secrets (a sub-user's temporary password, an invitation
-- token): the mailer must deliver them, so they are in clear here, readable
-- only by tenancy_mailer and the DBA, and blanked when sent_at is set.

CREATE TABLE tenancy.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    main_id bigint,
    recipient text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text
);
CREATE INDEX outbox_unsent ON tenancy.outbox (id) WHERE sent_at IS NULL;

CREATE FUNCTION tenancy._outbox_blank_sent() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.sent_at IS NOT NULL THEN
        NEW.body := '';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER blank_sent_body BEFORE INSERT OR UPDATE ON tenancy.outbox
    FOR EACH ROW EXECUTE FUNCTION tenancy._outbox_blank_sent();

-- Rows are written by tenancy._enqueue_mail (37_outbox_delivery.sql, with the
-- columns the mailer needs: kind, account, template data, leases, retries).

-- ---- invitations -------------------------------------------------------------------
-- A token reads tni_<main id>_<invitation id>_<43 chars>; stored as SHA-256.

CREATE SEQUENCE tenancy.invitation_id_seq;

CREATE TABLE tenancy.invitations (
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(account_path)) STORED,
    id bigint NOT NULL DEFAULT nextval('tenancy.invitation_id_seq'),
    public_id text NOT NULL,
    email text NOT NULL,
    role text NOT NULL REFERENCES tenancy.roles (name),
    token_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    accepted_at timestamptz,
    PRIMARY KEY (main_id, id)
);
CREATE INDEX invitations_account_path ON tenancy.invitations (account_path);

-- ---- login throttling ----------------------------------------------------------------
-- One row per failed attempt, keyed by SHA-256 of the login name (no email in
-- clear). The login functions return NULL instead of raising on bad
-- credentials so that this row commits with the caller's transaction.

CREATE TABLE tenancy.login_failures (
    key_hash text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX login_failures_key ON tenancy.login_failures (key_hash, failed_at);

-- ---- ownership, RLS, grants ------------------------------------------------------------

DO $own$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['mfa_recovery_codes', 'sub_users', 'sessions', 'outbox', 'invitations',
                             'login_failures']
    LOOP
        EXECUTE format('ALTER TABLE tenancy.%I OWNER TO tenancy_owner', t);
        EXECUTE format('ALTER TABLE tenancy.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON tenancy.%I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT ON tenancy.%I TO tenancy_admin', t);
    END LOOP;
END
$own$;
ALTER SEQUENCE tenancy.sub_user_id_seq OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.invitation_id_seq OWNER TO tenancy_owner;

-- Sub-users: managers (sub_users read) see all of their subtree's; everyone in
-- the account sees the visible ones (lists and reports). Hashes never granted.
CREATE POLICY subtree_read ON tenancy.sub_users FOR SELECT
    USING (account_path <@ tenancy.current_path()
           AND (visible OR tenancy.may('sub_users', 'read')));
GRANT SELECT (account_path, main_id, id, public_id, email, name, surname, status, visible,
              must_change_password, temp_password_expires_at, created_at, activated_at, last_login_at)
    ON tenancy.sub_users TO tenancy_app;

-- Sessions: a principal sees its own sessions only; never the hash.
-- A restricted context (MFA pending, password change) sees none: the
-- password alone must not list, nor revoke, fully verified sessions.
CREATE POLICY own_sessions ON tenancy.sessions FOR SELECT
    USING (tenancy._context_field('role') NOT IN ('mfa_pending', 'password_change')
           AND CASE tenancy._context_field('principal_kind')
               WHEN 'user' THEN principal_kind = 'user'
                    AND user_id = tenancy._context_field('principal_id')::bigint
               WHEN 'sub_user' THEN principal_kind = 'sub_user'
                    AND sub_user_main_id = tenancy._context_field('main_id')::bigint
                    AND sub_user_id = tenancy._context_field('principal_id')::bigint
               ELSE false END);
GRANT SELECT (id, principal_kind, account_main_id, account_id, mfa_verified, created_at, expires_at,
              revoked_at)
    ON tenancy.sessions TO tenancy_app;

CREATE POLICY subtree_read ON tenancy.invitations FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('members', 'read'));
GRANT SELECT (account_path, main_id, account_id, id, public_id, email, role, created_at, expires_at,
              accepted_at)
    ON tenancy.invitations TO tenancy_app;

-- Outbox: the mailer reads and marks; nobody else but the DBA.
CREATE POLICY mailer_read ON tenancy.outbox FOR SELECT TO tenancy_mailer USING (true);
CREATE POLICY mailer_mark ON tenancy.outbox FOR UPDATE TO tenancy_mailer USING (true) WITH CHECK (true);
GRANT SELECT ON tenancy.outbox TO tenancy_mailer;
GRANT UPDATE (sent_at, attempts, last_error) ON tenancy.outbox TO tenancy_mailer, tenancy_admin;

REVOKE ALL ON FUNCTION tenancy._outbox_blank_sent() FROM PUBLIC;
-- Identity, part 2: internal helpers shared by the logins: input checks,
-- login throttling (the table counter beside 28_throttle.sql's shared one)
-- and the identity events written to the audit log.

-- ---- helpers (internal) ---------------------------------------------------------------

CREATE FUNCTION tenancy._check_password(password text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF password IS NULL OR length(password) < 8 OR octet_length(password) > 1024 THEN
        RAISE EXCEPTION 'a password must be 8 to 1024 bytes long' USING ERRCODE = '22023';
    END IF;
END $$;

CREATE FUNCTION tenancy._check_email(email text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF email IS NULL OR email !~ '^[^@\s]+@[^@\s]+$' OR length(email) > 254 THEN
        RAISE EXCEPTION 'email is not valid' USING ERRCODE = '22023';
    END IF;
    RETURN btrim(email);
END $$;

-- Throttling: 5 failures within 15 minutes lock the login name until the
-- oldest of them is 15 minutes old. Two counters keep that rule:
--  * shared memory (28_throttle.sql, throttle.cpp): counts an attempt the
--    moment it starts, outside any transaction, so a rollback, an error or a
--    cancelled statement cannot undo it, and parallel attempts cannot all pass
--    on the same count. Lost on a server restart.
--  * the table login_failures: committed failures (the login functions return
--    NULL instead of raising, so they commit); survives a restart, and is the
--    only counter when tenancy is not in shared_preload_libraries.
-- A key is throttled when either counter says so.
--
-- Start an attempt: false while throttled (nothing counted); otherwise the
-- attempt counts as a failure in shared memory until _clear_failures.
CREATE FUNCTION tenancy._throttle_enter(login_key text) RETURNS boolean
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT CASE WHEN (SELECT count(*) >= 5 FROM tenancy.login_failures f
                      WHERE f.key_hash = tenancy.sha256_hex(lower(login_key))
                        AND f.failed_at > clock_timestamp() - interval '15 minutes')
                THEN false
                ELSE coalesce(tenancy._throttle_attempt(lower(login_key)), true) END
$$;

-- A failed attempt, in the table (shared memory counted it on entry). Queued
-- first (login_queue.cpp): should this transaction not commit, a background
-- worker inserts the row, so a rollback cannot reset the table counter either.
CREATE FUNCTION tenancy._record_failure(login_key text) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT tenancy._login_queue_row(lower(login_key));
    DELETE FROM tenancy.login_failures f
    WHERE f.key_hash = tenancy.sha256_hex(lower(login_key))
      AND f.failed_at < clock_timestamp() - interval '1 day';
    INSERT INTO tenancy.login_failures (key_hash) VALUES (tenancy.sha256_hex(lower(login_key)));
$$;

-- A success forgets the failures in both counters.
CREATE FUNCTION tenancy._clear_failures(login_key text) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    DELETE FROM tenancy.login_failures f WHERE f.key_hash = tenancy.sha256_hex(lower(login_key));
    SELECT tenancy._throttle_success(lower(login_key));
$$;

-- ---- identity events in the audit log (40_audit.sql) ----------------------------------
-- Logins, second factors and context switches are events, not row changes.
-- Never a password, code or token: a failed login's target is the email typed,
-- and only if it looks like one (a password typed in the email field stays out).

CREATE FUNCTION tenancy._audit_login_name(typed text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN typed ~ '^[^@\s]+@[^@\s]+$' AND length(typed) <= 254 THEN lower(typed)
                ELSE '(not an email)' END
$$;

-- One login.failure entry at each path given (one per main account), or one in
-- the installation's chain (main_id 0, DBA only) with detail_if_none when
-- there is none. The actor is anonymous: no credential was verified.
CREATE FUNCTION tenancy._audit_login_failure_at(places tenancy.account_path[], typed_email text, detail jsonb,
                                                detail_if_none jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.account_path;
BEGIN
    FOREACH p IN ARRAY coalesce(places, '{}') LOOP
        PERFORM tenancy._audit_record(tenancy.root_id(p), p, 'login.failure',
                                      tenancy._audit_login_name(typed_email), detail, 'anonymous');
    END LOOP;
    IF coalesce(cardinality(places), 0) = 0 THEN
        PERFORM tenancy._audit_record(0, NULL, 'login.failure', tenancy._audit_login_name(typed_email),
                                      detail_if_none, 'anonymous');
    END IF;
END $$;

-- The login.failure entries of a failed login, with their detail (login,
-- reason, recent_failures, plus extra). kind 'user': in every main account the
-- user is a member of (at the user's highest membership there, so its owner
-- reads it), or in the installation's chain for an unknown email. kind
-- 'sub_user': in every main account owned by the main account email typed
-- (main_name), or in the installation's chain if it names none.
-- The main accounts an email owns (a sub-user's "main account email" is the
-- email of an owner of its main account), in id order.
CREATE FUNCTION tenancy._owned_main_ids(owner_email text) RETURNS bigint[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT ARRAY(SELECT m.main_id FROM tenancy.users o
                 JOIN tenancy.memberships m ON m.user_id = o.id AND m.role = 'owner' AND m.account_id = m.main_id
                 WHERE lower(o.email) = lower(owner_email)
                 ORDER BY m.main_id)
$$;

CREATE FUNCTION tenancy._audit_login_failure_write(kind text, who bigint, login_name text, main_name text,
                                                   reason text, recent integer, extra jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    d jsonb := jsonb_strip_nulls(jsonb_build_object('login', kind, 'reason', reason,
                                                    'recent_failures', recent)) || coalesce(extra, '{}');
BEGIN
    IF kind = 'user' THEN
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT DISTINCT ON (m.main_id) m.account_path
                  FROM tenancy.memberships m WHERE m.user_id = who
                  ORDER BY m.main_id, tenancy.nlevel(m.account_path), m.account_id),
            login_name, d, d);
    ELSE
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT a.path FROM tenancy.accounts a
                  WHERE a.main_id = ANY (tenancy._owned_main_ids(main_name)) AND a.id = a.main_id
                  ORDER BY a.main_id),
            login_name, d,
            d || jsonb_build_object('reason', 'unknown_main_account',
                                    'main_account_email', tenancy._audit_login_name(main_name)));
    END IF;
END $$;

-- A failed user login's entries (see _audit_login_failure_write), queued
-- first so that they are written even if the caller's transaction does not
-- commit. recent_failures: the shared counter's failures in the window, this
-- one included.
CREATE FUNCTION tenancy._audit_login_failure(user_id bigint, typed_email text, reason text)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    login_name text := tenancy._audit_login_name(typed_email);
    recent integer := tenancy._throttle_count(format('user:%s', lower(coalesce(typed_email, ''))));
BEGIN
    PERFORM tenancy._login_queue_audit('user', user_id, login_name, NULL, reason, recent);
    PERFORM tenancy._audit_login_failure_write('user', user_id, login_name, NULL, reason, recent, NULL);
END $$;

-- A failed sub-user login's entries, queued first likewise. login_keys: the
-- throttle keys of the attempt (recent_failures is the highest count).
CREATE FUNCTION tenancy._audit_sub_login_failure(main_account_email text, typed_email text, reason text,
                                                 login_keys text[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    login_name text := tenancy._audit_login_name(typed_email);
    main_name text := tenancy._audit_login_name(main_account_email);
    recent integer := (SELECT max(tenancy._throttle_count(k)) FROM unnest(login_keys) k);
BEGIN
    PERFORM tenancy._login_queue_audit('sub_user', NULL, login_name, main_name, reason, recent);
    PERFORM tenancy._audit_login_failure_write('sub_user', NULL, login_name, main_name, reason, recent, NULL);
END $$;

-- Called by the login audit writer (login_queue.cpp) for a queued failure
-- whose transaction did not commit: the table counter row ('row', with its
-- original time), or the login.failure entries, marked rolled_back with the
-- attempt's time.
CREATE FUNCTION tenancy._login_failure_replay(kind text, key_hash text, failed_at timestamptz, who bigint,
                                              login_name text, main_name text, reason text, recent integer)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF kind = 'row' THEN
        INSERT INTO tenancy.login_failures (key_hash, failed_at) VALUES (_login_failure_replay.key_hash, _login_failure_replay.failed_at);
    ELSE
        PERFORM tenancy._audit_login_failure_write(kind, who, login_name, main_name, reason, recent,
            jsonb_build_object('rolled_back', true, 'attempted_at', failed_at));
    END IF;
END $$;

-- An event of a session's principal in account (main_id, account_id); the
-- installation's chain if that account is gone.
CREATE FUNCTION tenancy._audit_session_event(s tenancy.sessions, action text, target text, detail jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.account_path;
BEGIN
    SELECT a.path INTO p FROM tenancy.accounts a WHERE a.main_id = s.account_main_id AND a.id = s.account_id;
    IF p IS NULL THEN
        SELECT a.path INTO p FROM tenancy.accounts a WHERE a.id = s.account_id;
    END IF;
    PERFORM tenancy._audit_record(CASE WHEN p IS NULL THEN 0 ELSE tenancy.root_id(p) END, p, action, target,
                                  detail, s.principal_kind,
                                  coalesce(s.user_id, s.sub_user_id)::text, s.id);
END $$;

REVOKE ALL ON FUNCTION tenancy._check_password(text), tenancy._check_email(text),
    tenancy._owned_main_ids(text),
    tenancy._throttle_enter(text), tenancy._record_failure(text), tenancy._clear_failures(text),
    tenancy._audit_login_name(text),
    tenancy._audit_login_failure_at(tenancy.account_path[], text, jsonb, jsonb),
    tenancy._audit_login_failure(bigint, text, text), tenancy._audit_sub_login_failure(text, text, text, text[]),
    tenancy._audit_login_failure_write(text, bigint, text, text, text, integer, jsonb),
    tenancy._login_failure_replay(text, text, timestamptz, bigint, text, text, text, integer),
    tenancy._audit_session_event(tenancy.sessions, text, text, jsonb) FROM PUBLIC;
-- Identity, part 3: user logins and sessions: login, logout, revoke_session,
-- change_password, and the session helpers the other parts use.

-- The one failure answer of every login: NULL and a warning (not an error, so
-- the failure count commits). Identical whether the name exists or not.
CREATE FUNCTION tenancy._login_failed() RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    RAISE WARNING 'login failed: invalid credentials or too many attempts' USING ERRCODE = '28P01';
    RETURN NULL;
END $$;

-- Creates a session row; returns the token.
CREATE FUNCTION tenancy._new_session(kind text, user_id bigint, sub_main_id bigint, sub_id bigint,
                                     acc_main_id bigint, acc_id bigint, mfa_verified boolean)
    RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    secret text := tenancy.random_token(32);
    sid bigint;
BEGIN
    INSERT INTO tenancy.sessions (principal_kind, user_id, sub_user_main_id, sub_user_id,
                                  account_main_id, account_id, secret_hash, mfa_verified, expires_at)
    VALUES (kind, user_id, sub_main_id, sub_id, acc_main_id, acc_id, tenancy._secret_hash(secret),
            mfa_verified, now() + interval '12 hours')
    RETURNING id INTO sid;
    RETURN format('tns_%s_%s', sid, secret);
END $$;

-- An account whose whole ancestor chain is active?
CREATE FUNCTION tenancy._chain_active(p tenancy.account_path) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT NOT EXISTS (SELECT FROM tenancy.accounts a WHERE a.path = ANY (tenancy.ancestors(p)) AND a.status <> 'active') $$;

-- The context's session (user or sub-user), or NULL.
CREATE FUNCTION tenancy._current_session_id() RETURNS bigint
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT CASE WHEN tenancy._context_field('principal_kind') IN ('user', 'sub_user')
                THEN tenancy._context_field('credential_id')::bigint END
$$;

CREATE FUNCTION tenancy._require_session() RETURNS tenancy.sessions
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.login() first' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO s FROM tenancy.sessions x WHERE x.id = tenancy._current_session_id();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'this call needs a user or sub-user session' USING ERRCODE = '42501';
    END IF;
    RETURN s;
END $$;

-- Re-issue the context of the current session in place (after a password
-- change or the second factor), keeping its scope.
CREATE FUNCTION tenancy._refresh_context() RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._establish(tenancy._context_field('principal_kind'),
                               tenancy._context_field('main_id')::bigint,
                               tenancy._context_field('credential_id')::bigint,
                               tenancy._context_field('account_id')::bigint, 'refresh');
END $$;

-- ---- user login and sessions ------------------------------------------------------------

-- login(email, password, account): a session token, and the context for this
-- transaction in `account` (a membership's account or a descendant; default:
-- the first active membership by creation). Bad credentials and throttled
-- attempts return NULL with a warning (see _login_failed).
CREATE FUNCTION tenancy.login(email text, password text, account text DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    login_key text := format('user:%s', lower(coalesce(login.email, '')));
    u tenancy.users;
    target tenancy.accounts;
    token text;
BEGIN
    IF login.email IS NULL OR login.password IS NULL THEN
        RETURN tenancy._login_failed();
    END IF;
    -- Every path below costs one lookup, one argon2 computation and the
    -- audit entries, whether the email exists or not.
    SELECT * INTO u FROM tenancy.users x WHERE lower(x.email) = lower(login.email);
    IF NOT tenancy._throttle_enter(login_key) THEN
        PERFORM tenancy.dummy_password_check(login.password);
        PERFORM tenancy._audit_login_failure(u.id, login.email, 'throttled');
        RETURN tenancy._login_failed();
    END IF;
    IF u.id IS NULL OR u.password_hash IS NULL THEN
        PERFORM tenancy.dummy_password_check(login.password);
        PERFORM tenancy._record_failure(login_key);
        PERFORM tenancy._audit_login_failure(u.id, login.email,
                                             CASE WHEN u.id IS NULL THEN 'unknown_email' ELSE 'no_password' END);
        RETURN tenancy._login_failed();
    END IF;
    IF NOT tenancy.verify_password(login.password, u.password_hash) THEN
        PERFORM tenancy._record_failure(login_key);
        PERFORM tenancy._audit_login_failure(u.id, login.email, 'bad_password');
        RETURN tenancy._login_failed();
    END IF;
    PERFORM tenancy._clear_failures(login_key);
    IF tenancy.password_needs_rehash(u.password_hash) THEN
        UPDATE tenancy.users x SET password_hash = tenancy.hash_password(login.password) WHERE x.id = u.id;
    END IF;

    IF account IS NOT NULL THEN
        target := tenancy._find_account(account);
        IF target.id IS NULL OR NOT EXISTS (
                SELECT FROM tenancy.memberships m
                WHERE m.user_id = u.id AND m.account_path @> target.path) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
        END IF;
        IF NOT tenancy._chain_active(target.path) THEN
            RAISE EXCEPTION 'account "%" is inactive', target.public_id USING ERRCODE = '28000';
        END IF;
    ELSE
        SELECT a.* INTO target
        FROM tenancy.memberships m JOIN tenancy.accounts a ON a.path = m.account_path
        WHERE m.user_id = u.id AND tenancy._chain_active(a.path)
        ORDER BY m.created_at, m.main_id, m.account_id
        LIMIT 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'user has no active account' USING ERRCODE = '28000';
        END IF;
    END IF;
    UPDATE tenancy.users x SET last_login_at = now() WHERE x.id = u.id;
    token := tenancy._new_session('user', u.id, NULL, NULL, target.main_id, target.id, NOT u.mfa_enabled);
    PERFORM tenancy._establish('user', target.main_id,
                               split_part(token, '_', 2)::bigint, target.id, 'transaction');
    PERFORM tenancy._audit_record(target.main_id, target.path, 'login.success', lower(u.email),
        jsonb_build_object('login', 'user', 'mfa_pending', u.mfa_enabled),
        'user', u.id::text, split_part(token, '_', 2)::bigint);
    RETURN token;
END $$;

-- Revoke the current session (the context ends with this call).
CREATE FUNCTION tenancy.logout() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
BEGIN
    UPDATE tenancy.sessions x SET revoked_at = now() WHERE x.id = s.id AND x.revoked_at IS NULL;
    PERFORM tenancy.reset();
END $$;

-- Revoke one of one's own sessions (by its id, as listed in tenancy.sessions).
CREATE FUNCTION tenancy.revoke_session(session_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
BEGIN
    PERFORM tenancy._refuse_restricted();
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.id = session_id AND x.revoked_at IS NULL
      AND x.principal_kind = s.principal_kind
      AND x.user_id IS NOT DISTINCT FROM s.user_id
      AND x.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id
      AND x.sub_user_id IS NOT DISTINCT FROM s.sub_user_id;
    IF NOT FOUND AND NOT EXISTS (
            SELECT FROM tenancy.sessions x WHERE x.id = session_id AND x.revoked_at IS NOT NULL
              AND x.user_id IS NOT DISTINCT FROM s.user_id
              AND x.sub_user_id IS NOT DISTINCT FROM s.sub_user_id
              AND x.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id) THEN
        RAISE EXCEPTION 'session % not found', session_id USING ERRCODE = 'P0002';
    END IF;
END $$;

-- Own password (users and sub-users); clears must_change_password. Works in a
-- 'password_change' context, and upgrades it to the full role at once.
CREATE FUNCTION tenancy.change_password(old_password text, new_password text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    stored text;
    pw_key text;
BEGIN
    -- The password alone must not let anyone change it (nor end the owner's sessions).
    IF NOT s.mfa_verified THEN
        RAISE EXCEPTION 'the session must complete tenancy.verify_mfa() first' USING ERRCODE = '28T01';
    END IF;
    PERFORM tenancy._check_password(new_password);
    IF s.principal_kind = 'user' THEN
        SELECT u.password_hash INTO stored FROM tenancy.users u WHERE u.id = s.user_id FOR UPDATE;
    ELSE
        SELECT su.password_hash INTO stored FROM tenancy.sub_users su
        WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id FOR UPDATE;
    END IF;
    -- Guesses of the current password are throttled like logins, per
    -- principal. The error rolls the table counter back: the shared-memory
    -- counter (tenancy preloaded) is what counts here.
    pw_key := CASE s.principal_kind WHEN 'user' THEN format('password:user:%s', s.user_id)
                  ELSE format('password:sub_user:%s:%s', s.sub_user_main_id, s.sub_user_id) END;
    IF NOT tenancy._throttle_enter(pw_key) THEN
        PERFORM tenancy.dummy_password_check(coalesce(old_password, ''));
        RAISE EXCEPTION 'the current password is not correct, or too many attempts' USING ERRCODE = '28P01';
    END IF;
    IF old_password IS NULL OR stored IS NULL OR NOT tenancy.verify_password(old_password, stored) THEN
        PERFORM tenancy._record_failure(pw_key);
        RAISE EXCEPTION 'the current password is not correct, or too many attempts' USING ERRCODE = '28P01';
    END IF;
    PERFORM tenancy._clear_failures(pw_key);
    IF old_password = new_password THEN
        RAISE EXCEPTION 'the new password must differ from the current one' USING ERRCODE = '22023';
    END IF;
    IF s.principal_kind = 'user' THEN
        UPDATE tenancy.users u SET password_hash = tenancy.hash_password(new_password),
                                   must_change_password = false
        WHERE u.id = s.user_id;
        -- A user row belongs to no account: the change is an event in the
        -- session's account (a sub-user's is an entry on tenancy.sub_users).
        PERFORM tenancy._audit_session_event(s, 'password.change',
            (SELECT lower(u.email) FROM tenancy.users u WHERE u.id = s.user_id), NULL);
    ELSE
        UPDATE tenancy.sub_users su SET password_hash = tenancy.hash_password(new_password),
                                        must_change_password = false, temp_password_expires_at = NULL
        WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id;
    END IF;
    -- Other sessions of this principal end: whoever held the old password is out.
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.id <> s.id AND x.revoked_at IS NULL AND x.principal_kind = s.principal_kind
      AND x.user_id IS NOT DISTINCT FROM s.user_id
      AND x.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id
      AND x.sub_user_id IS NOT DISTINCT FROM s.sub_user_id;
    PERFORM tenancy._refresh_context();
END $$;

REVOKE ALL ON FUNCTION tenancy._login_failed(),
    tenancy._new_session(text, bigint, bigint, bigint, bigint, bigint, boolean),
    tenancy._chain_active(tenancy.account_path), tenancy._current_session_id(),
    tenancy._require_session(), tenancy._refresh_context() FROM PUBLIC;
-- Identity, part 4: sub-users (the AI4CALL model): create, activate (fresh
-- credentials by mail), deactivate, delete, edit, and their login.

-- ---- sub-users ------------------------------------------------------------------------------

-- The sub-user with this public id in the active main account, or raise.
CREATE FUNCTION tenancy._managed_sub_user(sub_user text, lock boolean DEFAULT false)
    RETURNS tenancy.sub_users
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(sub_user, 'sub', 2, 0);
    su tenancy.sub_users;
BEGIN
    PERFORM tenancy._require('sub_users', 'write');
    IF parts IS NOT NULL THEN
        IF lock THEN
            SELECT * INTO su FROM tenancy.sub_users x
            WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
              AND x.account_path <@ tenancy.current_path()
            FOR UPDATE;
        ELSE
            SELECT * INTO su FROM tenancy.sub_users x
            WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
              AND x.account_path <@ tenancy.current_path();
        END IF;
    END IF;
    IF su.id IS NULL THEN
        RAISE EXCEPTION 'sub-user "%" not found', sub_user USING ERRCODE = 'P0002';
    END IF;
    RETURN su;
END $$;

-- The email the sub-user types as "main account email": the first owner's.
CREATE FUNCTION tenancy._main_account_email(main_id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT u.email FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
    WHERE m.main_id = _main_account_email.main_id AND m.account_id = _main_account_email.main_id
      AND m.role = 'owner'
    ORDER BY m.created_at, u.id LIMIT 1
$$;

CREATE FUNCTION tenancy.create_sub_user(email text, name text, surname text, temp_password text)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    main tenancy.accounts;
    max_sub_users integer;
    new_id bigint := nextval('tenancy.sub_user_id_seq');
    pub text;
    clean_email text;
BEGIN
    PERFORM tenancy._require('sub_users', 'write');
    IF tenancy.current_account_id() IS DISTINCT FROM tenancy.current_main_id() THEN
        RAISE EXCEPTION 'sub-users are managed in the main account; act in it' USING ERRCODE = '42501';
    END IF;
    clean_email := tenancy._check_email(create_sub_user.email);
    IF create_sub_user.name IS NULL OR length(btrim(create_sub_user.name)) NOT BETWEEN 1 AND 200
       OR surname IS NULL OR length(btrim(surname)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'name and surname must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._check_password(temp_password);
    -- One creator at a time per main account, so the plan limit holds.
    SELECT m.* INTO main FROM tenancy.accounts m
    WHERE m.main_id = tenancy.current_main_id() AND m.id = tenancy.current_main_id()
    FOR UPDATE;
    SELECT pl.max_sub_users INTO max_sub_users FROM tenancy.plans pl WHERE pl.name = main.plan;
    IF main.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', main.public_id USING ERRCODE = '55000';
    END IF;
    IF (SELECT count(*) FROM tenancy.sub_users x WHERE x.main_id = main.id) >= max_sub_users THEN
        RAISE EXCEPTION 'plan "%" allows % sub-users', main.plan, max_sub_users USING ERRCODE = '53400';
    END IF;
    IF EXISTS (SELECT FROM tenancy.sub_users x WHERE x.main_id = main.id AND lower(x.email) = lower(clean_email)) THEN
        RAISE EXCEPTION 'a sub-user with email "%" already exists', clean_email USING ERRCODE = '23505';
    END IF;
    pub := format('sub_%s_%s', main.id, new_id);
    INSERT INTO tenancy.sub_users (account_path, id, public_id, email, name, surname, password_hash)
    VALUES (main.path, new_id, pub, clean_email, btrim(create_sub_user.name), btrim(surname),
            tenancy.hash_password(temp_password));
    RETURN pub;
END $$;

-- Activation (and every re-activation, or activating an active sub-user, which
-- resets its password) issues fresh credentials: a new random temporary
-- password, valid 7 days, that must be changed at first login, sent by email
-- through the outbox. Open sessions of the sub-user end.
CREATE FUNCTION tenancy.activate_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
    temp_password text := tenancy.random_token(16);
    main tenancy.accounts;
BEGIN
    SELECT * INTO main FROM tenancy.accounts a WHERE a.main_id = su.main_id AND a.id = su.main_id;
    UPDATE tenancy.sub_users x
    SET status = 'active', password_hash = tenancy.hash_password(temp_password),
        must_change_password = true, temp_password_expires_at = now() + interval '7 days',
        activated_at = now()
    WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
    PERFORM tenancy._enqueue_mail('sub_user_credentials', main.path, su.email,
        format('Your access to %s', main.name),
        format(E'Hello %s %s,\n\nYou have been given access to %s as a sub-user.\n\n'
               'Log in on the SUB-USER tab of the login page with:\n'
               '  main account email: %s\n  sub-user email: %s\n  temporary password: %s\n\n'
               'You must change this password at first login; it expires on %s.\n',
               su.name, su.surname, main.name, tenancy._main_account_email(su.main_id), su.email,
               temp_password, to_char(now() + interval '7 days', 'YYYY-MM-DD HH24:MI TZ')),
        jsonb_build_object('name', su.name, 'surname', su.surname, 'account', main.name,
                           'main_account_email', tenancy._main_account_email(su.main_id),
                           'email', su.email, 'temp_password', temp_password,
                           'expires_at', now() + interval '7 days'));
END $$;

CREATE FUNCTION tenancy.deactivate_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    UPDATE tenancy.sub_users x SET status = 'inactive' WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
END $$;

-- For good: the row and its sessions go.
CREATE FUNCTION tenancy.delete_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    DELETE FROM tenancy.sub_users x WHERE x.main_id = su.main_id AND x.id = su.id;
END $$;

-- Edit: name, surname, visibility (NULL keeps the current value).
CREATE FUNCTION tenancy.update_sub_user(sub_user text, name text DEFAULT NULL, surname text DEFAULT NULL,
                                        visible boolean DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    IF (update_sub_user.name IS NOT NULL AND length(btrim(update_sub_user.name)) NOT BETWEEN 1 AND 200)
       OR (update_sub_user.surname IS NOT NULL AND length(btrim(update_sub_user.surname)) NOT BETWEEN 1 AND 200) THEN
        RAISE EXCEPTION 'name and surname must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.sub_users x
    SET name = coalesce(btrim(update_sub_user.name), x.name),
        surname = coalesce(btrim(update_sub_user.surname), x.surname),
        visible = coalesce(update_sub_user.visible, x.visible)
    WHERE x.main_id = su.main_id AND x.id = su.id;
END $$;

-- login_sub_user(main account email, sub-user email, password). The main
-- account email is the email of an owner of the main account. Failures and
-- throttling as for login().
CREATE FUNCTION tenancy.login_sub_user(main_account_email text, email text, password text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    mains bigint[];
    login_keys text[];
    entered_keys text[] := '{}';
    entered_mains bigint[] := '{}';
    i integer;
    su tenancy.sub_users;
    candidate tenancy.sub_users;
    main tenancy.accounts;
    token text;
BEGIN
    IF main_account_email IS NULL OR login_sub_user.email IS NULL OR login_sub_user.password IS NULL THEN
        RETURN tenancy._login_failed();
    END IF;
    -- Throttled per sub-user targeted: (main account id, sub-user email) for
    -- each main account the email typed owns, so a main account's N owners'
    -- emails do not buy 5 x N guesses; the typed pair when it owns none (the
    -- same cost and answer: nothing tells whether the names exist).
    mains := tenancy._owned_main_ids(main_account_email);
    login_keys := CASE WHEN cardinality(mains) = 0
                       THEN ARRAY[format('sub:%s:%s', lower(main_account_email), lower(login_sub_user.email))]
                       ELSE ARRAY(SELECT format('subid:%s:%s', x, lower(login_sub_user.email))
                                  FROM unnest(mains) WITH ORDINALITY AS u(x, n) ORDER BY n) END;
    FOR i IN 1 .. cardinality(login_keys) LOOP
        IF tenancy._throttle_enter(login_keys[i]) THEN
            entered_keys := entered_keys || login_keys[i];
            entered_mains := entered_mains || mains[i];
        END IF;
    END LOOP;
    IF cardinality(entered_keys) = 0 THEN
        PERFORM tenancy.dummy_password_check(login_sub_user.password);
        PERFORM tenancy._audit_sub_login_failure(main_account_email, login_sub_user.email, 'throttled', login_keys);
        RETURN tenancy._login_failed();
    END IF;
    -- The same person may own several main accounts: the first sub-user whose
    -- password matches (usually there is exactly one candidate), among the
    -- main accounts not throttled for this name.
    FOR candidate IN
        SELECT x.* FROM tenancy.sub_users x
        WHERE x.main_id = ANY (entered_mains) AND lower(x.email) = lower(login_sub_user.email)
        ORDER BY x.main_id
    LOOP
        IF tenancy.verify_password(login_sub_user.password, candidate.password_hash) THEN
            su := candidate;
            EXIT;
        END IF;
    END LOOP;
    IF su.id IS NULL THEN
        IF candidate.id IS NULL THEN
            PERFORM tenancy.dummy_password_check(login_sub_user.password);
        END IF;
        FOR i IN 1 .. cardinality(entered_keys) LOOP
            PERFORM tenancy._record_failure(entered_keys[i]);
        END LOOP;
        PERFORM tenancy._audit_sub_login_failure(main_account_email, login_sub_user.email,
            CASE WHEN candidate.id IS NULL THEN 'unknown_sub_user' ELSE 'bad_password' END, login_keys);
        RETURN tenancy._login_failed();
    END IF;
    PERFORM tenancy._clear_failures(format('subid:%s:%s', su.main_id, lower(login_sub_user.email)));
    -- The password is right: from here on errors may say why.
    IF su.status <> 'active' THEN
        RAISE EXCEPTION 'sub-user "%" is inactive', su.public_id USING ERRCODE = '28000';
    END IF;
    IF su.must_change_password AND su.temp_password_expires_at IS NOT NULL
       AND su.temp_password_expires_at <= now() THEN
        RAISE EXCEPTION 'the temporary password has expired; ask the main account to re-activate you'
            USING ERRCODE = '28000';
    END IF;
    SELECT * INTO main FROM tenancy.accounts a WHERE a.main_id = su.main_id AND a.id = su.main_id;
    IF main.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', main.public_id USING ERRCODE = '28000';
    END IF;
    UPDATE tenancy.sub_users x SET last_login_at = now() WHERE x.main_id = su.main_id AND x.id = su.id;
    token := tenancy._new_session('sub_user', NULL, su.main_id, su.id, su.main_id, su.main_id, true);
    PERFORM tenancy._establish('sub_user', su.main_id, split_part(token, '_', 2)::bigint, su.main_id,
                               'transaction');
    PERFORM tenancy._audit_record(su.main_id, su.account_path, 'login.success', lower(su.email),
        jsonb_build_object('login', 'sub_user', 'must_change_password', su.must_change_password),
        'sub_user', su.id::text, split_part(token, '_', 2)::bigint);
    RETURN token;
END $$;

REVOKE ALL ON FUNCTION tenancy._managed_sub_user(text, boolean), tenancy._main_account_email(bigint) FROM PUBLIC;
-- Identity, part 5: invitations: invite (the token goes out only by mail)
-- and accept_invitation.

-- ---- invitations ------------------------------------------------------------------------------

-- A role a membership may get (any product role but sub_user), and only an
-- owner hands out owner: raises 22023 / 42501 ("only an owner may <verb> an
-- owner").
CREATE FUNCTION tenancy._check_member_role(role text, verb text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF role IS NULL OR role = 'sub_user' OR NOT EXISTS (SELECT FROM tenancy.roles r WHERE r.name = role) THEN
        RAISE EXCEPTION 'unknown role "%"', role USING ERRCODE = '22023';
    END IF;
    IF role = 'owner' AND tenancy.current_role_name() <> 'owner' THEN
        RAISE EXCEPTION 'only an owner may % an owner', verb USING ERRCODE = '42501';
    END IF;
END $$;

-- invite(account, email, role): owners and admins (members write); an admin
-- cannot invite an owner. Re-inviting the same email to the same account
-- replaces the pending invitation (the old token stops working). The token
-- goes out only by email (outbox); the invitation id is returned.
CREATE FUNCTION tenancy.invite(account text, email text, role text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    clean_email text;
    inv_id bigint := nextval('tenancy.invitation_id_seq');
    secret text := tenancy.random_token(32);
    pub text;
BEGIN
    PERFORM tenancy._require('members', 'write');
    a := tenancy._visible_account(account);
    clean_email := tenancy._check_email(invite.email);
    PERFORM tenancy._check_member_role(invite.role, 'invite');
    IF a.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '55000';
    END IF;
    -- Accepting would change the invitee's role there: an admin cannot touch an owner.
    IF tenancy.current_role_name() <> 'owner' AND EXISTS (
            SELECT FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
            WHERE m.main_id = a.main_id AND m.account_id = a.id AND m.role = 'owner'
              AND lower(u.email) = lower(clean_email)) THEN
        RAISE EXCEPTION 'only an owner may change an owner''s membership' USING ERRCODE = '42501';
    END IF;
    -- Re-inviting replaces the pending invitation, but an admin must not
    -- touch one it could not have made (an owner invitation).
    IF tenancy.current_role_name() <> 'owner' AND EXISTS (
            SELECT FROM tenancy.invitations i
            WHERE i.main_id = a.main_id AND i.account_id = a.id AND lower(i.email) = lower(clean_email)
              AND i.accepted_at IS NULL AND i.role = 'owner') THEN
        RAISE EXCEPTION 'only an owner may replace a pending owner invitation' USING ERRCODE = '42501';
    END IF;
    DELETE FROM tenancy.invitations i
    WHERE i.main_id = a.main_id AND i.account_id = a.id AND lower(i.email) = lower(clean_email)
      AND i.accepted_at IS NULL;
    pub := format('inv_%s_%s', a.main_id, inv_id);
    INSERT INTO tenancy.invitations (account_path, id, public_id, email, role, token_hash, expires_at)
    VALUES (a.path, inv_id, pub, clean_email, invite.role, tenancy._secret_hash(secret),
            now() + interval '7 days');
    PERFORM tenancy._enqueue_mail('invitation', a.path, clean_email, format('Invitation to %s', a.name),
        format(E'You have been invited to %s as %s.\n\nAccept with this token (single use, valid 7 days):\n%s\n',
               a.name, invite.role, format('tni_%s_%s_%s', a.main_id, inv_id, secret)),
        jsonb_build_object('account', a.name, 'role', invite.role, 'email', clean_email,
                           'token', format('tni_%s_%s_%s', a.main_id, inv_id, secret),
                           'expires_at', now() + interval '7 days'));
    RETURN pub;
END $$;

-- accept_invitation(token, name, password): creates the user if needed (then
-- password is required) or, for an existing user, checks their password; adds
-- the membership; returns a session token and sets the context there.
CREATE FUNCTION tenancy.accept_invitation(token text, name text DEFAULT NULL, password text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(token, 'tni', 2, 43);
    inv tenancy.invitations;
    u tenancy.users;
    a tenancy.accounts;
    session_token text;
BEGIN
    IF parts IS NOT NULL THEN
        SELECT * INTO inv FROM tenancy.invitations i
        WHERE i.main_id = parts[1]::bigint AND i.id = parts[2]::bigint FOR UPDATE;
    END IF;
    IF parts IS NULL OR NOT tenancy._secret_equal(parts[3], coalesce(inv.token_hash, '\x00'::bytea))
       OR inv.id IS NULL THEN
        RAISE EXCEPTION 'invalid invitation token' USING ERRCODE = '28000';
    END IF;
    IF inv.accepted_at IS NOT NULL THEN
        RAISE EXCEPTION 'the invitation has already been used' USING ERRCODE = '28000';
    END IF;
    IF inv.expires_at <= now() THEN
        RAISE EXCEPTION 'the invitation has expired' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO a FROM tenancy.accounts x WHERE x.path = inv.account_path;
    IF NOT tenancy._chain_active(a.path) THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '28000';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE lower(x.email) = lower(inv.email) FOR UPDATE;
    IF FOUND AND u.password_hash IS NULL THEN
        -- A user without a password yet sets one now.
        PERFORM tenancy._check_password(accept_invitation.password);
        UPDATE tenancy.users x SET password_hash = tenancy.hash_password(accept_invitation.password)
        WHERE x.id = u.id;
    ELSIF FOUND THEN
        IF accept_invitation.password IS NULL
           OR NOT tenancy.verify_password(accept_invitation.password, u.password_hash) THEN
            RAISE EXCEPTION 'an existing user accepts with their password' USING ERRCODE = '28P01';
        END IF;
    ELSE
        PERFORM tenancy._check_password(accept_invitation.password);
        INSERT INTO tenancy.users (email, name, password_hash)
        VALUES (inv.email, nullif(btrim(accept_invitation.name), ''),
                tenancy.hash_password(accept_invitation.password))
        RETURNING * INTO u;
    END IF;
    UPDATE tenancy.invitations i SET accepted_at = now() WHERE i.main_id = inv.main_id AND i.id = inv.id;
    INSERT INTO tenancy.memberships (account_path, user_id, role) VALUES (a.path, u.id, inv.role)
    ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = excluded.role;
    session_token := tenancy._new_session('user', u.id, NULL, NULL, a.main_id, a.id, NOT u.mfa_enabled);
    PERFORM tenancy._establish('user', a.main_id, split_part(session_token, '_', 2)::bigint, a.id,
                               'transaction');
    PERFORM tenancy._audit_record(a.main_id, a.path, 'login.success', lower(u.email),
        jsonb_build_object('login', 'invitation', 'invitation', inv.public_id, 'mfa_pending', u.mfa_enabled),
        'user', u.id::text, split_part(session_token, '_', 2)::bigint);
    RETURN session_token;
END $$;

REVOKE ALL ON FUNCTION tenancy._check_member_role(text, text) FROM PUBLIC;
-- Identity, part 6: MFA for users: enroll_mfa, confirm_mfa (recovery codes)
-- and verify_mfa (the second factor of a session).

-- ---- MFA (users) ------------------------------------------------------------------------------

-- enroll_mfa(): a new TOTP secret as an otpauth:// URI; MFA is on once
-- confirm_mfa() accepts a code from it.
CREATE FUNCTION tenancy.enroll_mfa() RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    secret text := tenancy.new_totp_secret();
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF s.principal_kind <> 'user' OR NOT s.mfa_verified THEN
        RAISE EXCEPTION 'MFA enrolment needs a fully verified user session' USING ERRCODE = '42501';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    IF u.mfa_enabled THEN
        RAISE EXCEPTION 'MFA is already enabled' USING ERRCODE = '55000';
    END IF;
    UPDATE tenancy.users x SET mfa_secret = secret WHERE x.id = u.id;
    RETURN tenancy.otpauth_uri(secret, u.email, 'Tenancy');
END $$;

-- confirm_mfa(code): turns MFA on; returns ten single-use recovery codes
-- (shown once; stored as SHA-256).
CREATE FUNCTION tenancy.confirm_mfa(code text) RETURNS text[]
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    step bigint;
    codes text[];
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF s.principal_kind <> 'user' OR NOT s.mfa_verified THEN
        RAISE EXCEPTION 'MFA enrolment needs a fully verified user session' USING ERRCODE = '42501';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    IF u.mfa_enabled THEN
        RAISE EXCEPTION 'MFA is already enabled' USING ERRCODE = '55000';
    END IF;
    IF u.mfa_secret IS NULL THEN
        RAISE EXCEPTION 'call tenancy.enroll_mfa() first' USING ERRCODE = '55000';
    END IF;
    step := tenancy.totp_verify(u.mfa_secret, coalesce(code, ''), now(), 1);
    IF step IS NULL THEN
        RAISE EXCEPTION 'invalid MFA code' USING ERRCODE = '28000';
    END IF;
    SELECT array_agg(tenancy.random_token(16)) INTO codes FROM generate_series(1, 10);
    DELETE FROM tenancy.mfa_recovery_codes r WHERE r.user_id = u.id;
    INSERT INTO tenancy.mfa_recovery_codes (user_id, code_hash)
    SELECT u.id, tenancy._secret_hash(c) FROM unnest(codes) AS c;
    UPDATE tenancy.users x SET mfa_enabled = true, mfa_last_step = step WHERE x.id = u.id;
    PERFORM tenancy._audit_session_event(s, 'mfa.enroll', lower(u.email),
                                         jsonb_build_object('recovery_codes', cardinality(codes)));
    RETURN codes;
END $$;

-- verify_mfa(code): the second factor of the current session (a TOTP code,
-- each usable once, or a recovery code). Returns true and upgrades the
-- context; a wrong code returns false (not an error, so the count commits);
-- the fifth wrong code of a session revokes it, and 5 wrong codes within 15
-- minutes for a user refuse every code (right ones too) for a cooling period.
CREATE FUNCTION tenancy.verify_mfa(code text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    u tenancy.users;
    step bigint;
    used boolean := false;
    mfa_key text;
    throttled boolean;
BEGIN
    IF s.principal_kind <> 'user' THEN
        RAISE EXCEPTION 'this call needs a user session' USING ERRCODE = '42501';
    END IF;
    IF s.mfa_verified THEN
        RETURN true;
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE x.id = s.user_id FOR UPDATE;
    -- Per user, not per session: new logins must not buy new guesses.
    mfa_key := format('mfa:%s', u.id);
    throttled := NOT tenancy._throttle_enter(mfa_key);
    IF throttled THEN
        NULL;  -- no code is checked during the cooling period
    ELSIF code ~ '^[0-9]{6}$' THEN
        step := tenancy.totp_verify(u.mfa_secret, code, now(), 1);
        IF step IS NOT NULL AND step > coalesce(u.mfa_last_step, -1) THEN
            UPDATE tenancy.users x SET mfa_last_step = step WHERE x.id = u.id;
            used := true;
        END IF;
    ELSIF code IS NOT NULL THEN
        UPDATE tenancy.mfa_recovery_codes r SET used_at = now()
        WHERE r.user_id = u.id AND r.code_hash = tenancy._secret_hash(code) AND r.used_at IS NULL;
        used := FOUND;
    END IF;
    IF NOT used THEN
        IF NOT throttled THEN
            PERFORM tenancy._record_failure(mfa_key);
        END IF;
        UPDATE tenancy.sessions x SET mfa_failures = x.mfa_failures + 1,
            revoked_at = CASE WHEN x.mfa_failures + 1 >= 5 THEN now() END
        WHERE x.id = s.id;
        PERFORM tenancy._audit_session_event(s, 'mfa.failure', lower(u.email),
            jsonb_build_object('reason', CASE WHEN throttled THEN 'throttled' ELSE 'invalid_code' END,
                               'session_revoked', s.mfa_failures + 1 >= 5));
        RAISE WARNING 'invalid MFA code or too many attempts' USING ERRCODE = '28000';
        RETURN false;
    END IF;
    PERFORM tenancy._clear_failures(mfa_key);
    PERFORM tenancy._audit_session_event(s, 'mfa.success', lower(u.email),
        jsonb_build_object('method', CASE WHEN code ~ '^[0-9]{6}$' THEN 'totp' ELSE 'recovery_code' END));
    UPDATE tenancy.sessions x SET mfa_verified = true WHERE x.id = s.id;
    PERFORM tenancy._refresh_context();
    RETURN true;
END $$;
-- Identity, part 7: marking outbox mail for a mailer of one's own (the
-- gateway's mailer uses 37_outbox_delivery.sql) and the DBA's purge.

-- ---- outbox helpers for the mailer ----------------------------------------------------------

-- Mark a message delivered (blanks its body) or record a failed attempt.
CREATE FUNCTION tenancy.outbox_mark(id bigint, error text DEFAULT NULL) RETURNS void
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    UPDATE tenancy.outbox o
    SET sent_at = CASE WHEN error IS NULL THEN now() END,
        attempts = o.attempts + 1,
        last_error = error
    WHERE o.id = outbox_mark.id AND o.sent_at IS NULL
$$;

-- ---- housekeeping (DBA) ------------------------------------------------------------------

-- Deletes sessions that ended more than `keep` ago, old login failures,
-- spent or expired invitations and Idempotency-Keys older than 24 hours;
-- returns how many rows went.
CREATE FUNCTION tenancy.purge_identity(keep interval DEFAULT '1 day') RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    DELETE FROM tenancy.sessions s
    WHERE coalesce(s.revoked_at, s.expires_at) < now() - keep
       OR s.expires_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM tenancy.login_failures f WHERE f.failed_at < now() - greatest(keep, interval '15 minutes');
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM tenancy.invitations i
    WHERE coalesce(i.accepted_at, i.expires_at) < now() - keep OR i.expires_at < now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    -- The gateway's Idempotency-Keys live 24 hours whatever `keep` says
    -- (32_gateway_support.sql).
    RETURN total + tenancy.purge_idempotency();
END $$;
REVOKE ALL ON FUNCTION tenancy.purge_identity(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.purge_identity(interval) TO tenancy_admin;

REVOKE ALL ON FUNCTION tenancy.outbox_mark(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.outbox_mark(bigint, text) TO tenancy_mailer, tenancy_admin;
-- Members of an account (issue 18's SQL side): change a member's role, remove
-- a member. Invitations add members (304_identity_invitations.sql).
--
-- Rules, all checked here, under the main account's row lock (so two owners
-- demoting each other at once cannot both pass the last-owner check):
--  * members write (owner, admin); the account is in the active subtree;
--  * only an owner may touch an owner's membership or make someone an owner;
--  * the last owner of a main account can be neither demoted nor removed.
-- Removing a member ends their use of that account at once: authenticate()
-- checks the membership for every session.

-- The membership of user_id exactly at account, locked, or raise P0002.
CREATE FUNCTION tenancy._managed_membership(account text, user_id bigint)
    RETURNS tenancy.memberships
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    m tenancy.memberships;
BEGIN
    PERFORM tenancy._require('members', 'write');
    a := tenancy._visible_account(account);
    -- Serialise with every other membership change of this main account.
    PERFORM FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.main_id FOR UPDATE;
    SELECT * INTO m FROM tenancy.memberships x
    WHERE x.main_id = a.main_id AND x.account_id = a.id AND x.user_id = _managed_membership.user_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'member % of account "%" not found', user_id, a.public_id USING ERRCODE = 'P0002';
    END IF;
    IF m.role = 'owner' AND tenancy.current_role_name() <> 'owner' THEN
        RAISE EXCEPTION 'only an owner may change an owner''s membership' USING ERRCODE = '42501';
    END IF;
    RETURN m;
END $$;

-- Raise unless another owner of the main account remains without m.
CREATE FUNCTION tenancy._keep_an_owner(m tenancy.memberships) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF m.role = 'owner' AND m.account_id = m.main_id AND NOT EXISTS (
            SELECT FROM tenancy.memberships x
            WHERE x.main_id = m.main_id AND x.account_id = m.main_id AND x.role = 'owner'
              AND x.user_id <> m.user_id) THEN
        RAISE EXCEPTION 'the last owner of a main account can be neither demoted nor removed'
            USING ERRCODE = '55000', HINT = 'Make another member an owner first.';
    END IF;
END $$;

-- set_member_role(account, user_id, role): the member's role in that account.
CREATE FUNCTION tenancy.set_member_role(account text, user_id bigint, role text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    m tenancy.memberships := tenancy._managed_membership(account, user_id);
BEGIN
    PERFORM tenancy._check_member_role(set_member_role.role, 'make');
    IF set_member_role.role = m.role THEN
        RETURN;
    END IF;
    IF set_member_role.role <> 'owner' THEN
        PERFORM tenancy._keep_an_owner(m);
    END IF;
    UPDATE tenancy.memberships x SET role = set_member_role.role
    WHERE x.main_id = m.main_id AND x.account_id = m.account_id AND x.user_id = m.user_id;
END $$;

-- remove_member(account, user_id): the membership goes; the user stays.
CREATE FUNCTION tenancy.remove_member(account text, user_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    m tenancy.memberships := tenancy._managed_membership(account, user_id);
BEGIN
    PERFORM tenancy._keep_an_owner(m);
    DELETE FROM tenancy.memberships x
    WHERE x.main_id = m.main_id AND x.account_id = m.account_id AND x.user_id = m.user_id;
END $$;

REVOKE ALL ON FUNCTION tenancy._managed_membership(text, bigint), tenancy._keep_an_owner(tenancy.memberships)
    FROM PUBLIC;
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
-- Logins and sessions as the REST gateway's auth and /v1/me routes answer
-- them (SPEC §7): each route is one call here, so every rule stays in SQL.

-- The answer of a successful login, from its token: the session's expiry,
-- the account it acts in, and what it still owes (second factor, password).
CREATE FUNCTION tenancy._login_answer(token text) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT jsonb_build_object(
        'token', token,
        'expires_at', s.expires_at,
        'account', tenancy.current_account(),
        'mfa_required', NOT s.mfa_verified,
        'must_change_password', coalesce(u.must_change_password, su.must_change_password, false))
    FROM tenancy.sessions s
    LEFT JOIN tenancy.users u ON u.id = s.user_id
    LEFT JOIN tenancy.sub_users su ON su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id
    WHERE s.id = split_part(token, '_', 2)::bigint
$$;

-- login() answering {token, expires_at, account, mfa_required,
-- must_change_password}; NULL (with login()'s one warning) when the
-- credentials are refused, so the failure's count and audit entry commit.
CREATE FUNCTION tenancy.api_login(email text, password text, account text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    token text := tenancy.login(email, password, account);
BEGIN
    RETURN CASE WHEN token IS NOT NULL THEN tenancy._login_answer(token) END;
END $$;

-- login_sub_user() answering likewise (a sub-user owes no second factor).
CREATE FUNCTION tenancy.api_login_sub_user(main_account_email text, email text, password text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    token text := tenancy.login_sub_user(main_account_email, email, password);
BEGIN
    RETURN CASE WHEN token IS NOT NULL THEN tenancy._login_answer(token) END;
END $$;

-- logout() for a request that records itself after the call (the gateway's
-- api.request entry): the session ends at once (every later authenticate()
-- refuses its token), but this transaction keeps its context until it ends.
-- Works in a restricted context, as logout() does.
CREATE FUNCTION tenancy.api_logout() RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
BEGIN
    UPDATE tenancy.sessions x SET revoked_at = now() WHERE x.id = s.id AND x.revoked_at IS NULL;
END $$;

-- switch_account(account): make `account` the one the credential acts in from
-- now on, with act_as()'s rules (a user: an account of theirs or a
-- descendant; a sub-user or API key: a descendant of its own account; never
-- from a restricted context) and its context.switch audit entry.
--  * A session (user, sub-user) is replaced: a new token opened in `account`
--    with the old one's expiry (a switch never lengthens a login), and the old
--    token ends at once. One login keeps one live token, so logout ends it,
--    and a client still holding the old token is refused (401) rather than
--    silently acting in another account.
--  * An API key holds no session: nothing is stored; the answer has no token
--    and the client names the account in each request (Tenancy-Account).
-- Answers {account, token?, expires_at?}; the context of this transaction is
-- the new one.
CREATE FUNCTION tenancy.switch_account(account text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    kind text := tenancy._context_field('principal_kind');
    s tenancy.sessions;
    switched text;
    token text;
    new_id bigint;
BEGIN
    IF kind IN ('user', 'sub_user') THEN
        -- Locked first: of two switches with one token, the second finds it ended.
        SELECT * INTO s FROM tenancy.sessions x WHERE x.id = tenancy._current_session_id() FOR UPDATE;
        IF s.id IS NULL OR s.revoked_at IS NOT NULL THEN
            RAISE EXCEPTION 'the session has ended' USING ERRCODE = '28000';
        END IF;
    END IF;
    switched := tenancy.act_as(account);
    IF kind NOT IN ('user', 'sub_user') THEN
        RETURN jsonb_build_object('account', switched);
    END IF;
    token := tenancy._new_session(kind, s.user_id, s.sub_user_main_id, s.sub_user_id,
                                  tenancy.current_main_id(), tenancy.current_account_id(), true);
    new_id := split_part(token, '_', 2)::bigint;
    UPDATE tenancy.sessions x SET expires_at = s.expires_at WHERE x.id = new_id;
    UPDATE tenancy.sessions x SET revoked_at = now() WHERE x.id = s.id;
    PERFORM tenancy._establish(kind, tenancy.current_main_id(), new_id, tenancy.current_account_id(),
                               'refresh');
    RETURN jsonb_build_object('account', switched, 'token', token, 'expires_at', s.expires_at);
END $$;

-- The caller's own live sessions (not ended, not expired), newest first,
-- max_rows of them with ids below before_id (a keyset page). Needs a user or
-- sub-user session that is not restricted (42501 / 28T01 / 28T02), as
-- revoke_session() does. account: where each session resumes; current: the
-- session of this call.
CREATE FUNCTION tenancy.list_sessions(before_id bigint DEFAULT NULL, max_rows integer DEFAULT 50)
    RETURNS TABLE (id bigint, account text, current boolean, mfa_verified boolean,
                   created_at timestamptz, expires_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_rows must be 1 to 1000' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT x.id, a.public_id, x.id = s.id, x.mfa_verified, x.created_at, x.expires_at
    FROM tenancy.sessions x
    LEFT JOIN tenancy.accounts a ON a.id = x.account_id
    WHERE x.principal_kind = s.principal_kind
      AND x.user_id IS NOT DISTINCT FROM s.user_id
      AND x.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id
      AND x.sub_user_id IS NOT DISTINCT FROM s.sub_user_id
      AND x.revoked_at IS NULL AND x.expires_at > now()
      AND (before_id IS NULL OR x.id < before_id)
    ORDER BY x.id DESC
    LIMIT max_rows;
END $$;

REVOKE ALL ON FUNCTION tenancy._login_answer(text) FROM PUBLIC;
-- Accounts for the API (issue 18): one account as a JSON document, and
-- update_account(), the only way to change an account's name, branding and settings.
--
-- update_account applies `branding` and `settings` as JSON merge patches
-- (RFC 7396): members of the patch replace the stored ones, objects merge
-- recursively, a JSON null removes a key; SQL NULL leaves the field as it is,
-- a JSON null as the whole patch removes every override (the field is then
-- inherited again). An empty result is stored as NULL. Rules, all here:
--  * settings write (owner, admin), the account in the active subtree;
--  * name 1 to 200 characters (trimmed), no control characters;
--  * branding: only the keys name (1..200 chars), logo_url (http(s) URL up to
--    2048 bytes) and colours (an object of primary, secondary, accent,
--    background, text: "#rgb" or "#rrggbb"), 4 kB of JSON at most;
--  * settings: any object, 16 kB of JSON at most, patches nested 32 deep at most;
--  * the row is locked while it is read, merged and written (no lost update).
-- The accounts table's audit trigger records the change (old and new values
-- of the changed columns). Clients have no UPDATE grant on tenancy.accounts.

-- The account as the API shows it. `parent` is the parent's public id when
-- the caller sees the parent (it is in the active subtree), else null:
-- children never learn about their ancestors.
CREATE FUNCTION tenancy._account_json(a tenancy.accounts) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT jsonb_build_object(
        'id', a.public_id,
        'parent', (SELECT p.public_id FROM tenancy.accounts p
                   WHERE p.main_id = a.main_id AND p.id = a.parent_id
                     AND p.path OPERATOR(tenancy.<@) tenancy.current_path()),
        'name', a.name, 'status', a.status, 'plan', a.plan,
        'branding', coalesce(a.branding, '{}'), 'settings', coalesce(a.settings, '{}'),
        'created_at', a.created_at, 'updated_at', a.updated_at)
$$;

-- get_account(account): the account of the active subtree as a JSON document
-- {id, parent, name, status, plan, branding, settings, created_at,
-- updated_at}; outside the subtree "not found" (P0002) like a missing one.
-- VOLATILE so that it sees a change made earlier in the same statement
-- (`SELECT get_account(x) FROM (SELECT deactivate_account(x) OFFSET 0) d`).
CREATE FUNCTION tenancy.get_account(account text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    RETURN tenancy._account_json(tenancy._visible_account(account));
END $$;

-- RFC 7396 merge patch of target by patch; depth counts nested patch objects.
CREATE FUNCTION tenancy._merge_patch(target jsonb, patch jsonb, field text, depth integer DEFAULT 1)
    RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    v jsonb;
BEGIN
    IF jsonb_typeof(patch) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF depth > 32 THEN
        RAISE EXCEPTION '% patch is nested more than 32 objects deep', field USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(target) IS DISTINCT FROM 'object' THEN
        target := '{}';
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(patch) e LOOP
        IF jsonb_typeof(v) = 'null' THEN
            target := target - k;
        ELSE
            target := jsonb_set(target, ARRAY[k], tenancy._merge_patch(target -> k, v, field, depth + 1));
        END IF;
    END LOOP;
    RETURN target;
END $$;

-- Raise 22023 unless b is a valid branding object.
CREATE FUNCTION tenancy._check_branding(b jsonb) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    k text;
    v jsonb;
    ck text;
    cv jsonb;
BEGIN
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(b) e LOOP
        CASE k
        WHEN 'name' THEN
            IF jsonb_typeof(v) <> 'string' OR length(btrim(v #>> '{}')) = 0 OR length(v #>> '{}') > 200
               OR (v #>> '{}') ~ '[[:cntrl:]]' THEN
                RAISE EXCEPTION 'branding.name must be a string of 1 to 200 characters' USING ERRCODE = '22023';
            END IF;
        WHEN 'logo_url' THEN
            IF jsonb_typeof(v) <> 'string' OR octet_length(v #>> '{}') > 2048
               OR (v #>> '{}') !~ '^https?://[^[:space:][:cntrl:]/?#]+[^[:space:][:cntrl:]]*$' THEN
                RAISE EXCEPTION 'branding.logo_url must be an http(s) URL of at most 2048 bytes'
                    USING ERRCODE = '22023';
            END IF;
        WHEN 'colours' THEN
            IF jsonb_typeof(v) <> 'object' THEN
                RAISE EXCEPTION 'branding.colours must be an object' USING ERRCODE = '22023';
            END IF;
            FOR ck, cv IN SELECT e.key, e.value FROM jsonb_each(v) e LOOP
                IF ck NOT IN ('primary', 'secondary', 'accent', 'background', 'text') THEN
                    RAISE EXCEPTION 'unknown branding colour "%"', left(ck, 64) USING ERRCODE = '22023',
                        HINT = 'Colours: primary, secondary, accent, background, text.';
                END IF;
                IF jsonb_typeof(cv) <> 'string' OR (cv #>> '{}') !~ '^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$' THEN
                    RAISE EXCEPTION 'branding.colours.% must be "#rgb" or "#rrggbb"', ck USING ERRCODE = '22023';
                END IF;
            END LOOP;
        ELSE
            RAISE EXCEPTION 'unknown branding key "%"', left(k, 64) USING ERRCODE = '22023',
                HINT = 'Branding keys: name, logo_url, colours.';
        END CASE;
    END LOOP;
END $$;

-- update_account(account, name, branding, settings): see the top of this
-- file. Returns the account as get_account() shows it.
CREATE FUNCTION tenancy.update_account(account text, name text DEFAULT NULL, branding jsonb DEFAULT NULL,
                                       settings jsonb DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    new_name text;
    new_branding jsonb;
    new_settings jsonb;
BEGIN
    PERFORM tenancy._require('settings', 'write');
    a := tenancy._visible_account(account);
    -- Validate the input before taking the lock: a bad request waits for nobody.
    IF name IS NOT NULL THEN
        new_name := tenancy._check_name(name);
        IF new_name ~ '[[:cntrl:]]' THEN
            RAISE EXCEPTION 'account name must not contain control characters' USING ERRCODE = '22023';
        END IF;
    END IF;
    IF branding IS NOT NULL AND jsonb_typeof(branding) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'branding must be an object (a merge patch) or null' USING ERRCODE = '22023';
    END IF;
    IF settings IS NOT NULL AND jsonb_typeof(settings) NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'settings must be an object (a merge patch) or null' USING ERRCODE = '22023';
    END IF;
    IF octet_length(branding::text) > 4096 THEN
        RAISE EXCEPTION 'branding is larger than 4 kB' USING ERRCODE = '22023';
    END IF;
    IF octet_length(settings::text) > 16384 THEN
        RAISE EXCEPTION 'settings are larger than 16 kB' USING ERRCODE = '22023';
    END IF;

    SELECT * INTO a FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.id FOR UPDATE;
    new_branding := a.branding;
    IF branding IS NOT NULL THEN
        new_branding := tenancy._merge_patch(a.branding, branding, 'branding');
        IF new_branding = '{}' OR jsonb_typeof(new_branding) = 'null' THEN
            new_branding := NULL;
        END IF;
        IF new_branding IS NOT NULL THEN
            PERFORM tenancy._check_branding(new_branding);
            IF octet_length(new_branding::text) > 4096 THEN
                RAISE EXCEPTION 'branding would be larger than 4 kB' USING ERRCODE = '22023';
            END IF;
        END IF;
    END IF;
    new_settings := a.settings;
    IF settings IS NOT NULL THEN
        new_settings := tenancy._merge_patch(a.settings, settings, 'settings');
        IF new_settings = '{}' OR jsonb_typeof(new_settings) = 'null' THEN
            new_settings := NULL;
        END IF;
        IF octet_length(new_settings::text) > 16384 THEN
            RAISE EXCEPTION 'settings would be larger than 16 kB' USING ERRCODE = '22023';
        END IF;
    END IF;

    IF coalesce(new_name, a.name) IS DISTINCT FROM a.name OR new_branding IS DISTINCT FROM a.branding
       OR new_settings IS DISTINCT FROM a.settings THEN
        UPDATE tenancy.accounts x
        SET name = coalesce(new_name, x.name), branding = new_branding, settings = new_settings,
            updated_at = now()
        WHERE x.main_id = a.main_id AND x.id = a.id
        RETURNING * INTO a;
    END IF;
    RETURN tenancy._account_json(a);
END $$;

REVOKE ALL ON FUNCTION tenancy._account_json(tenancy.accounts),
    tenancy._merge_patch(jsonb, jsonb, text, integer), tenancy._check_branding(jsonb) FROM PUBLIC;
-- Team management as the gateway's routes need it (issue 18): sub-users and
-- API keys addressed through the account in the route's path, and a manager's
-- reset of a sub-user's password. Members and invitations: 30/31.
--
-- Every function here takes the account of the path and checks that what it
-- touches belongs to that account, so a route cannot act on one account's
-- sub-user or key while naming another. Each answers as the API shows the
-- resource (jsonb), never with a secret other than the one it exists to give.

-- ---- sub-users ------------------------------------------------------------------------------

-- A sub-user as the API shows it (never the hash).
CREATE FUNCTION tenancy._sub_user_json(su tenancy.sub_users) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('id', su.public_id, 'email', su.email, 'name', su.name, 'surname', su.surname,
                              'active', su.status = 'active', 'visible', su.visible,
                              'must_change_password', su.must_change_password,
                              'created_at', su.created_at, 'activated_at', su.activated_at,
                              'last_login_at', su.last_login_at)
$$;

-- The main account `account` names, in the active subtree. Sub-users belong
-- to main accounts: a subaccount has none to manage.
CREATE FUNCTION tenancy._sub_user_home(account text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._visible_account(account);
BEGIN
    IF a.id <> a.main_id THEN
        RAISE EXCEPTION 'sub-users are managed in the main account; account "%" is a subaccount', account
            USING ERRCODE = '42501';
    END IF;
    RETURN a;
END $$;

-- The sub-user of main account `account`, locked, or "not found" (also when it
-- belongs to another account: the same answer as a missing one).
CREATE FUNCTION tenancy._sub_user_at(account text, sub_user text) RETURNS tenancy.sub_users
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    home tenancy.accounts := tenancy._sub_user_home(account);
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    IF su.main_id <> home.id THEN
        RAISE EXCEPTION 'sub-user "%" not found', sub_user USING ERRCODE = 'P0002';
    END IF;
    RETURN su;
END $$;

-- set_sub_user_password(sub_user, password): a manager (sub_users write)
-- resets a sub-user's password. It is a temporary password, as at activation:
-- the sub-user must change it at the next login, within 7 days, and every open
-- session of the sub-user ends (whoever held the old password is out). Nothing
-- is mailed: the manager chose it and hands it over.
CREATE FUNCTION tenancy.set_sub_user_password(sub_user text, password text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    PERFORM tenancy._check_password(password);
    UPDATE tenancy.sub_users x
    SET password_hash = tenancy.hash_password(password), must_change_password = true,
        temp_password_expires_at = now() + interval '7 days'
    WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
END $$;

-- create_sub_user_in(account, ...): create_sub_user in the main account the
-- path names; answers the new sub-user (inactive).
CREATE FUNCTION tenancy.create_sub_user_in(account text, email text, name text, surname text,
                                           temp_password text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    home tenancy.accounts := tenancy._sub_user_home(account);
    pub text := tenancy.create_sub_user(email, name, surname, temp_password);
BEGIN
    RETURN (SELECT tenancy._sub_user_json(x) FROM tenancy.sub_users x
            WHERE x.main_id = home.id AND x.public_id = pub);
END $$;

-- update_sub_user_in(account, sub_user, active, visible, name, surname,
-- password): the edit form of a sub-user; NULL keeps a value. active changes
-- the status only when it differs: true activates (fresh credentials by
-- email, see activate_sub_user), false deactivates (refused at once). A new
-- password is a temporary one (set_sub_user_password). Activation issues its
-- own password, so active = true with a password is refused. Answers the
-- sub-user as it now is.
CREATE FUNCTION tenancy.update_sub_user_in(account text, sub_user text, active boolean DEFAULT NULL,
                                           visible boolean DEFAULT NULL, name text DEFAULT NULL,
                                           surname text DEFAULT NULL, password text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._sub_user_at(account, sub_user);
BEGIN
    IF active AND password IS NOT NULL THEN
        RAISE EXCEPTION 'activation mails a fresh temporary password: set active or password, not both'
            USING ERRCODE = '22023';
    END IF;
    IF password IS NOT NULL THEN
        PERFORM tenancy._check_password(password);  -- before anything changes
    END IF;
    IF name IS NOT NULL OR surname IS NOT NULL OR visible IS NOT NULL THEN
        PERFORM tenancy.update_sub_user(su.public_id, name, surname, visible);
    END IF;
    IF password IS NOT NULL THEN
        PERFORM tenancy.set_sub_user_password(su.public_id, password);
    END IF;
    IF active AND su.status <> 'active' THEN
        PERFORM tenancy.activate_sub_user(su.public_id);
    ELSIF NOT active AND su.status <> 'inactive' THEN
        PERFORM tenancy.deactivate_sub_user(su.public_id);
    END IF;
    SELECT * INTO su FROM tenancy.sub_users x WHERE x.main_id = su.main_id AND x.id = su.id;
    RETURN tenancy._sub_user_json(su);
END $$;

-- delete_sub_user_in(account, sub_user): for good, as delete_sub_user.
CREATE FUNCTION tenancy.delete_sub_user_in(account text, sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._sub_user_at(account, sub_user);
BEGIN
    PERFORM tenancy.delete_sub_user(su.public_id);
END $$;

-- ---- API keys ---------------------------------------------------------------------------------

-- create_api_key_in(account, name, role, expires_at): create_api_key, answered
-- as {id, key, prefix, name, role, expires_at, created_at}: the only answer
-- that ever holds the full key.
CREATE FUNCTION tenancy.create_api_key_in(account text, name text, role text,
                                          expires_at timestamptz DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    full_key text := tenancy.create_api_key(account, name, role, expires_at);
    parts text[] := tenancy._id_parts(full_key, 'tnc', 2, 43);
    k tenancy.api_keys;
BEGIN
    SELECT * INTO STRICT k FROM tenancy.api_keys x
    WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint;
    RETURN jsonb_build_object('id', k.public_id, 'key', full_key, 'prefix', k.prefix, 'name', k.name,
                              'role', k.role, 'expires_at', k.expires_at, 'created_at', k.created_at);
END $$;

-- revoke_api_key_in(account, key_id): revoke_api_key for a key of exactly
-- that account; a key of any other account is "not found".
CREATE FUNCTION tenancy.revoke_api_key_in(account text, key_id text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    parts text[] := tenancy._id_parts(key_id, 'key', 2, 0);
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    a := tenancy._visible_account(account);
    IF parts IS NULL OR NOT EXISTS (
            SELECT FROM tenancy.api_keys k
            WHERE k.main_id = parts[1]::bigint AND k.id = parts[2]::bigint AND k.account_path = a.path) THEN
        RAISE EXCEPTION 'API key "%" not found', key_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM tenancy.revoke_api_key(key_id);
END $$;

REVOKE ALL ON FUNCTION tenancy._sub_user_json(tenancy.sub_users), tenancy._sub_user_home(text),
    tenancy._sub_user_at(text, text) FROM PUBLIC;
-- Outbox delivery (issue 20): what the gateway's mailer calls to claim, send
-- and mark tenancy.outbox rows, and the failures an account's owners can read.
--
-- Every mail_* function is for the gateway only (tenancy._require_gateway,
-- 20_roles.sql): EXECUTE goes to tenancy_app and the function checks
-- session_user. The outbox itself stays unreadable to clients.
--
-- Delivery protocol (gateway/mailer.cpp):
--   1. mail_claim(claimer, batch, lease): due rows, FOR UPDATE SKIP LOCKED,
--      leased to the claimer until now() + lease; committed at once, so the
--      row lock lasts only the claim and the lease keeps other mailers off.
--   2. the mailer sends each message over SMTP, outside any transaction;
--   3. mail_sent / mail_retry / mail_failed(id, claimer, ...) in its own
--      short transaction per message, only while the claimer still holds it.
-- A crash between the server's 250 and mail_sent leaves the row claimed; when
-- its lease ends (or the same claimer starts again) it is sent once more with
-- the same Message-ID: at most a duplicate the recipient's software can tell.

-- ---- outbox: structure for templates, leases and retries ----------------------------------
-- kind and data let the mailer render a text and an HTML alternative with a
-- link (the public base URL is the gateway's configuration); body stays the
-- plain text written with the change, for the DBA and kinds the mailer does
-- not know. data may carry the mail's secret (token, temporary password): it
-- is blanked with the body once the row is sent or has failed for good.
ALTER TABLE tenancy.outbox
    ADD COLUMN kind text CHECK (kind IN ('invitation', 'sub_user_credentials')),
    ADD COLUMN account_path tenancy.account_path
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE SET NULL,
    ADD COLUMN data jsonb CHECK (data IS NULL OR jsonb_typeof(data) = 'object'),
    ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN claimed_by text CHECK (octet_length(claimed_by) <= 200),
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN failed_at timestamptz,
    ADD CHECK (sent_at IS NULL OR failed_at IS NULL);
CREATE INDEX outbox_due ON tenancy.outbox (next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_account_path ON tenancy.outbox (account_path) WHERE account_path IS NOT NULL;

-- A row done with (sent or failed for good) keeps no secret.
CREATE FUNCTION tenancy._outbox_blank_done() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NEW.sent_at IS NOT NULL OR NEW.failed_at IS NOT NULL THEN
        NEW.body := '';
        NEW.data := NULL;
        NEW.claimed_by := NULL;
        NEW.lease_until := NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER blank_done_mail BEFORE INSERT OR UPDATE ON tenancy.outbox
    FOR EACH ROW EXECUTE FUNCTION tenancy._outbox_blank_done();

-- The one writer of the outbox (invite, activate_sub_user in 30x_identity_*.sql):
-- in the caller's transaction, so a mail exists iff its change committed.
CREATE FUNCTION tenancy._enqueue_mail(kind text, account_path tenancy.account_path, recipient text,
                                      subject text, body text, data jsonb)
    RETURNS bigint
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    INSERT INTO tenancy.outbox (main_id, account_path, kind, recipient, subject, body, data)
    VALUES (tenancy.root_id(account_path), account_path, kind, recipient, subject, body, data)
    RETURNING id
$$;

-- ---- failures an account's owners can read ---------------------------------------------------
-- One row per mail that failed for good (the server answered 5xx): who, what
-- subject, the server's answer, when. Never the body. Owners and admins
-- (members read) of the account or an ancestor see it; they can re-invite or
-- re-activate.
CREATE TABLE tenancy.outbox_failures (
    outbox_id bigint PRIMARY KEY,
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    recipient text NOT NULL,
    subject text NOT NULL,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_failures_account_path ON tenancy.outbox_failures (account_path);
ALTER TABLE tenancy.outbox_failures OWNER TO tenancy_owner;
ALTER TABLE tenancy.outbox_failures ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.outbox_failures FROM PUBLIC;
CREATE POLICY subtree_read ON tenancy.outbox_failures FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('members', 'read'));
GRANT SELECT ON tenancy.outbox_failures TO tenancy_app, tenancy_admin;

-- ---- helpers (internal) ------------------------------------------------------------------------

-- Message-ID of an outbox row: the same on every send of it, distinct across
-- installations (the installation part is derived from the server secret, so
-- a restored dump keeps it).
CREATE FUNCTION tenancy._mail_message_id(id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT format('<outbox-%s.%s@tenancy>', id,
                  encode(substring(tenancy._derived_key('tenancy mail message-id') FROM 1 FOR 8), 'hex'))
$$;

-- The branding a mail for this account shows: each top-level key of
-- accounts.branding from the nearest account on the path that sets it
-- (the account's own, else its parent's, ...), plus the account's name.
CREATE FUNCTION tenancy._mail_branding(p tenancy.account_path) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT coalesce((SELECT jsonb_object_agg(b.key, b.value ORDER BY tenancy.nlevel(a.path))
                     FROM tenancy.accounts a, jsonb_each(a.branding) b
                     WHERE a.path @> p AND a.branding IS NOT NULL), '{}'::jsonb)
           || jsonb_build_object('account_name', (SELECT a.name FROM tenancy.accounts a WHERE a.path = p))
$$;

-- 22023 unless the claimer names itself (1-200 bytes).
CREATE FUNCTION tenancy._mail_check_claimer(claimer text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF claimer IS NULL OR octet_length(claimer) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'a mailer names itself with 1 to 200 bytes' USING ERRCODE = '22023';
    END IF;
END $$;

-- ---- the mailer's calls (gateway only) ---------------------------------------------------------

-- mail_claim(claimer, batch, lease): up to `batch` due rows (not sent, not
-- failed, next_attempt_at reached, lease free or already the claimer's), oldest
-- due first, skipping rows another transaction holds; each is leased to the
-- claimer until now() + lease. A claimer that restarts under the same name
-- takes its own leased rows back at once. Returns what the mail needs:
-- recipient, subject, the plain body, kind and data (may hold the secret), the
-- effective branding and the Message-ID.
CREATE FUNCTION tenancy.mail_claim(claimer text, batch integer, lease interval)
    RETURNS TABLE (id bigint, kind text, recipient text, subject text, body text, data jsonb,
                   branding jsonb, message_id text, attempts integer, created_at timestamptz)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_claim()');
    PERFORM tenancy._mail_check_claimer(claimer);
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'batch must be 1 to 1000' USING ERRCODE = '22023';
    END IF;
    IF lease IS NULL OR lease < interval '1 second' OR lease > interval '1 day' THEN
        RAISE EXCEPTION 'lease must be 1 second to 1 day' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT o.id FROM tenancy.outbox o
        WHERE o.sent_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= now()
          AND (o.lease_until IS NULL OR o.lease_until <= now() OR o.claimed_by = claimer)
        ORDER BY o.next_attempt_at, o.id
        LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE tenancy.outbox o SET claimed_by = claimer, lease_until = now() + lease
        FROM due WHERE o.id = due.id
        RETURNING o.*
    )
    SELECT c.id, c.kind, c.recipient, c.subject, c.body, c.data,
           CASE WHEN c.account_path IS NULL THEN '{}'::jsonb ELSE tenancy._mail_branding(c.account_path) END,
           tenancy._mail_message_id(c.id), c.attempts, c.created_at
    FROM claimed c ORDER BY c.id;
END $$;

-- mail_sent(id, claimer): the server accepted the message (250). Sets
-- sent_at (the trigger blanks body and data). False when the row is not the
-- claimer's any more (its lease ended and another mailer took it) or is done.
CREATE FUNCTION tenancy.mail_sent(id bigint, claimer text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_sent()');
    UPDATE tenancy.outbox o
    SET sent_at = now(), attempts = o.attempts + 1, last_error = NULL
    WHERE o.id = mail_sent.id AND o.claimed_by = claimer AND o.sent_at IS NULL AND o.failed_at IS NULL;
    RETURN FOUND;
END $$;

-- mail_retry(id, claimer, error, base, cap): a temporary failure (4xx,
-- connection refused, timeout). The next attempt waits base * 2^attempts
-- (at most cap), times a random factor in [0.5, 1) so mailers that failed
-- together do not retry together. Returns when; NULL when the row is not the
-- claimer's any more.
CREATE FUNCTION tenancy.mail_retry(id bigint, claimer text, error text,
                                   base interval DEFAULT '30 seconds', cap interval DEFAULT '1 hour')
    RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    next_at timestamptz;
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_retry()');
    IF base IS NULL OR cap IS NULL OR base <= interval '0' OR cap < base THEN
        RAISE EXCEPTION 'need 0 < base <= cap' USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.outbox o
    SET attempts = o.attempts + 1,
        last_error = left(coalesce(error, 'unknown error'), 1000),
        next_attempt_at = now() + least(cap, base * power(2, least(o.attempts, 30)))
                                  * (0.5 + random() / 2),
        claimed_by = NULL, lease_until = NULL
    WHERE o.id = mail_retry.id AND o.claimed_by = claimer AND o.sent_at IS NULL AND o.failed_at IS NULL
    RETURNING o.next_attempt_at INTO next_at;
    RETURN next_at;
END $$;

-- mail_failed(id, claimer, error): a permanent failure (5xx). The row is
-- done (failed_at; body and data blanked) and a row the account's owners
-- can read goes to tenancy.outbox_failures with the server's answer. The
-- account is the mail's (an invitation's account, a sub-user's main account);
-- a row that names none (written before this file) falls back to its main
-- account. False when the row is not the claimer's any more.
CREATE FUNCTION tenancy.mail_failed(id bigint, claimer text, error text) RETURNS boolean
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
    INSERT INTO tenancy.outbox_failures (outbox_id, account_path, recipient, subject, error, failed_at)
    SELECT o.id, p.path, o.recipient, o.subject, msg, o.failed_at
    FROM (SELECT coalesce(o.account_path,
                          (SELECT a.path FROM tenancy.accounts a WHERE a.main_id = o.main_id AND a.id = o.main_id))
                 AS path) p
    WHERE p.path IS NOT NULL;
    RETURN true;
END $$;

-- mail_queue(): rows waiting (not sent, not failed) and the age in seconds
-- of the oldest of them (0 when none), for /metrics.
CREATE FUNCTION tenancy.mail_queue(OUT depth bigint, OUT oldest_age_s double precision)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM tenancy._require_gateway('tenancy.mail_queue()');
    SELECT count(*), coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::double precision
    INTO depth, oldest_age_s
    FROM tenancy.outbox o WHERE o.sent_at IS NULL AND o.failed_at IS NULL;
END $$;

-- ---- function privileges ------------------------------------------------------------------------

REVOKE ALL ON FUNCTION tenancy._outbox_blank_done(),
    tenancy._enqueue_mail(text, tenancy.account_path, text, text, text, jsonb),
    tenancy._mail_message_id(bigint), tenancy._mail_branding(tenancy.account_path),
    tenancy._mail_check_claimer(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.mail_claim(text, integer, interval), tenancy.mail_sent(bigint, text),
    tenancy.mail_retry(bigint, text, text, interval, interval), tenancy.mail_failed(bigint, text, text),
    tenancy.mail_queue() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.mail_claim(text, integer, interval), tenancy.mail_sent(bigint, text),
    tenancy.mail_retry(bigint, text, text, interval, interval), tenancy.mail_failed(bigint, text, text),
    tenancy.mail_queue() TO tenancy_app;
-- The tamper-evident audit log (extension/src/audit.cpp, audit_worker.cpp).
--
-- Writers (the C++ row trigger, audit_event, _audit_record) only INSERT into
-- audit_log: no chain lock, no later update, so writers never wait on each
-- other and an entry row is written once. Each entry carries the full id of
-- its writer's top-level transaction (xid).
--
-- The sealer (tenancy.audit_seal(), run every ~200 ms by the background
-- worker or by the gateway) links committed entries into one SHA-256 chain
-- per main account, one block per round (audit_chain: the entries' positions,
-- ids and digests, and a hash linking the block to the one before), and moves
-- the main account's chain head (audit_heads), whose last position and hash
-- are MACed with a server key no client role can read, so a truncated tail or
-- a rewritten chain is detected by audit_verify().
--
-- Finding the entries to seal without a queue: the sealer records the MVCC
-- snapshot its round ran in (audit_sealer.snap). The next round takes exactly
-- the entries visible now but not in that snapshot: their xid is at least the
-- snapshot's xmin (the pages a BRIN index on xid points to) and the snapshot
-- did not see it committed. An aborted transaction's entries never become
-- visible: no gap. The chain records where each entry is (its TID): readers
-- reach entries through the chain, not through an index on the log.
--
-- Entries are immutable history: account_path is the path at the time of the
-- event, not a foreign key. When a subtree moves, its old entries stay under
-- the old path: whoever was an ancestor then still reads them, the new parent
-- reads only what happened after the move. A row update is recorded under the
-- row's path before the change (an account move or promotion is visible to the
-- old ancestors). Entries stay in their main account's chain forever (also
-- after a promotion).

-- Ids need only be unique (the chain orders entries): one nextval reserves
-- the next 64 ids for the writing backend (audit.cpp), so consecutive entries
-- of a backend are numbered in order and a nextval is paid once per 64.
-- Altering this sequence while entries are written can repeat ids.
CREATE SEQUENCE tenancy.audit_seq INCREMENT BY 64 CACHE 1;

CREATE TABLE tenancy.audit_log (
    main_id bigint NOT NULL,
    id bigint NOT NULL,                -- from audit_seq: unique
    xid bigint NOT NULL,               -- full id of the writer's top-level transaction
    account_path tenancy.account_path, -- NULL only in the installation's chain (main_id 0)
    at timestamptz NOT NULL,
    actor_kind text NOT NULL,          -- api_key, user, sub_user, anonymous, dba
    actor_id text,                     -- principal id, or session_user for dba
    credential_id bigint,
    action text NOT NULL,              -- insert/update/delete, or an event name
    target text,                       -- schema.table, or the event's target
    row_key jsonb,                     -- primary key of the changed row
    change jsonb,                      -- {"old": {...}, "new": {...}} or event detail
    CHECK ((main_id = 0) = (account_path IS NULL))
);
-- The log's only index, paid for by every audited write: BRIN on xid, one
-- summary per 32 pages (~850 entries). Writers append in xid order, so the
-- summaries are tight; an insert into a range not summarised yet (the tail)
-- writes nothing to the index. A btree on (xid, id), used before, was an
-- index write (and its WAL) per entry, the same cost as the entry's own heap
-- insert: 8-client single-row updates ran ~10% faster with BRIN, the sealer
-- included (bench/RESULTS.md). The sealer summarises the ranges the writers
-- have left behind (audit_seal.cpp) and reads the pages of the ranges that
-- may hold new xids; readers reach entries by the TIDs in the chain, and by
-- xid through this index only when an entry is not at its TID (after a
-- VACUUM FULL or CLUSTER of the log, which move every entry).
CREATE INDEX audit_log_xid ON tenancy.audit_log USING brin (xid) WITH (pages_per_range = 32);
-- No planner statistics on the payload: nothing is planned on it, and while
-- the log is young autovacuum re-analyses it often (jsonb statistics nearly
-- doubled the cost of ANALYZE, measured).
ALTER TABLE tenancy.audit_log ALTER COLUMN row_key SET STATISTICS 0, ALTER COLUMN change SET STATISTICS 0;
-- The sealer keeps empty pages ahead of the writers (audit_log_space.cpp);
-- VACUUM must not cut them off the end, which takes an ACCESS EXCLUSIVE lock
-- that stalls every audited write meanwhile.
--
-- Re-analysed when it has doubled, not at every 10% of growth: an
-- append-only log's statistics barely change (the planner asks the xid
-- index for the current maximum itself), and each ANALYZE reads a 30,000-row
-- sample (0.24 s on 840k entries, measured); at 10% a log growing from 1k to
-- 1M entries is analysed ~70 times, at 100% ~10.
ALTER TABLE tenancy.audit_log SET (vacuum_truncate = false, autovacuum_analyze_scale_factor = 1.0);

-- The chain: one block per main account and sealing round (at most 4096
-- entries), written by the sealer only. A block lists its entries in chain
-- order (positions first_pos .. first_pos + n - 1) by (xid, id), with each
-- entry's 32-byte digest (_audit_entry_digest), and links to the block before:
--     hash = SHA-256(previous block's hash || _audit_block_link(first_pos, sealed_at, digests))
-- One narrow row and one index entry per block instead of per entry: the
-- sealer's cost per entry is reading and digesting it (measured in
-- bench/RESULTS.md). A changed entry no longer matches its digest; a changed,
-- removed or inserted block breaks the links; a cut tail no longer matches the
-- MACed head.
CREATE TABLE tenancy.audit_chain (
    main_id bigint NOT NULL,
    first_pos bigint NOT NULL,
    n integer NOT NULL,
    entry_xids bigint[] NOT NULL,
    entry_ids bigint[] NOT NULL,
    -- Where the entries were written: a locator for readers, not evidence (an
    -- entry is found by TID only if its xid and id match; NULL: by xid).
    entry_tids tid[],
    digests bytea NOT NULL,
    hash bytea NOT NULL,
    sealed_at timestamptz NOT NULL,
    PRIMARY KEY (main_id, first_pos)
);
-- Digests are random bytes: do not try to compress them. No planner
-- statistics on the block contents.
ALTER TABLE tenancy.audit_chain ALTER COLUMN digests SET STORAGE EXTERNAL,
    ALTER COLUMN digests SET STATISTICS 0, ALTER COLUMN entry_xids SET STATISTICS 0,
    ALTER COLUMN entry_ids SET STATISTICS 0, ALTER COLUMN entry_tids SET STATISTICS 0,
    ALTER COLUMN hash SET STATISTICS 0;
-- A block of a busy round (a few dozen entries, 48 bytes each) passes the
-- default 2 kB toast threshold: its digests then went to the toast table, one
-- more row, index entry and WAL record per block (5% of the sealer's time,
-- perf). Blocks stay whole in their row up to a full page; only a bulk
-- round's big blocks are toasted.
ALTER TABLE tenancy.audit_chain SET (toast_tuple_target = 8160);
-- A bulk round's blocks (up to 4096 entries) are compressed: lz4, not pglz,
-- where the server has it. pglz took a fifth of such a round (perf); with lz4
-- the round cost 3.3 instead of 3.9 us per entry, for id arrays a fifth larger.
DO $$
BEGIN
    ALTER TABLE tenancy.audit_chain ALTER COLUMN entry_xids SET COMPRESSION lz4,
        ALTER COLUMN entry_ids SET COMPRESSION lz4, ALTER COLUMN entry_tids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: pglz
END $$;

-- One chain head per main account. base_*: the checkpoint left by
-- audit_purge (entries up to base_pos were purged); last_*: the end of the
-- chain. mac = HMAC-SHA-256(audit key, all of them).
CREATE TABLE tenancy.audit_heads (
    main_id bigint PRIMARY KEY,
    base_pos bigint NOT NULL DEFAULT 0,
    base_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    last_pos bigint NOT NULL DEFAULT 0,
    last_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    mac bytea,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The sealer's progress: the snapshot of its last round that sealed something
-- (NULL: never ran, so every visible entry is new).
CREATE TABLE tenancy.audit_sealer (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    snap pg_snapshot,
    sealed_at timestamptz
);
INSERT INTO tenancy.audit_sealer DEFAULT VALUES;

CREATE TABLE tenancy.audit_keys (
    id smallint PRIMARY KEY,
    secret bytea NOT NULL CHECK (length(secret) = 32)
);
INSERT INTO tenancy.audit_keys VALUES (1, tenancy._random_bytes(32));

-- ---- C++ ----------------------------------------------------------------------

CREATE FUNCTION tenancy._audit_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tenancy_audit_trigger' LANGUAGE C;
-- One step of the chain as verification recomputes it: SHA-256(state ||
-- payload), a NULL state standing for `start`.
CREATE FUNCTION tenancy._audit_chain_step(state bytea, start bytea, payload bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_chain_step' LANGUAGE C IMMUTABLE;
-- The sealer's round (audit_seal.cpp): the entries committed as of snapshot
-- cur and not as of prev, with xid >= lower_xid, digested, grouped per main
-- account into blocks of at most 4096 in (xid, id) order, each chained to
-- the one before from the main account's head. last_pos is where the head
-- moves (on the row whose block ends there). Writes nothing.
CREATE FUNCTION tenancy._audit_seal_blocks(lower_xid bigint, prev pg_snapshot, cur pg_snapshot,
                                           sealed_at timestamptz)
    RETURNS TABLE (main_id bigint, first_pos bigint, n integer, entry_xids bigint[], entry_ids bigint[],
                   entry_tids tid[], digests bytea, hash bytea, last_pos bigint)
    AS 'MODULE_PATHNAME', 'tenancy_audit_seal_blocks' LANGUAGE C VOLATILE;
CREATE FUNCTION tenancy._hmac_sha256(key bytea, data text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_hmac_sha256' LANGUAGE C IMMUTABLE STRICT;
-- Internal writer for events that are not row changes (login, context switch,
-- API calls). The actor comes from the context (or session_user outside one)
-- unless given: actor_kind api_key, user, sub_user or anonymous (a login
-- attempt before any context exists). main_id 0 with a NULL path is the
-- installation's own chain, read by the DBA only: events that name no known
-- account (a failed login for an unknown email).
CREATE FUNCTION tenancy._audit_record(main_id bigint, account_path tenancy.account_path,
                                      action text, target text, detail jsonb,
                                      actor_kind text DEFAULT NULL, actor_id text DEFAULT NULL,
                                      credential_id bigint DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_audit_record' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._audit_trigger(),
    tenancy._audit_chain_step(bytea, bytea, bytea),
    tenancy._audit_seal_blocks(bigint, pg_snapshot, pg_snapshot, timestamptz),
    tenancy._hmac_sha256(bytea, text),
    tenancy._audit_record(bigint, tenancy.account_path, text, text, jsonb, text, text, bigint) FROM PUBLIC;

-- The canonical serialisation (audit.cpp), independent of settings (DateStyle,
-- TimeZone): every field length-prefixed, numbers and times as 8-byte
-- big-endian integers; the path, texts and jsonb as their stored bytes,
-- hashed into one 32-byte digest per entry. A block's link binds the
-- concatenated digests to the block's first position and sealing time.
CREATE FUNCTION tenancy._audit_entry_digest(main_id bigint, id bigint, account_path tenancy.account_path,
        at timestamptz, actor_kind text, actor_id text, credential_id bigint, action text, target text,
        row_key jsonb, change jsonb) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_entry_digest' LANGUAGE C IMMUTABLE;
CREATE FUNCTION tenancy._audit_block_link(first_pos bigint, sealed_at timestamptz, digests bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_block_link' LANGUAGE C IMMUTABLE;
REVOKE ALL ON FUNCTION tenancy._audit_entry_digest(bigint, bigint, tenancy.account_path, timestamptz, text, text,
    bigint, text, text, jsonb, jsonb), tenancy._audit_block_link(bigint, timestamptz, bytea) FROM PUBLIC;

-- The head's MAC with a given key. No SET clause and no FROM, so that the
-- planner inlines it into the sealer's statement (every name is qualified).
CREATE FUNCTION tenancy._audit_head_mac(h tenancy.audit_heads, secret bytea) RETURNS bytea
    LANGUAGE sql STABLE
    AS $$
    SELECT tenancy._hmac_sha256(secret,
        pg_catalog.format('tenancy-audit-head|%s|%s|%s|%s|%s', h.main_id, h.base_pos,
                          pg_catalog.encode(h.base_hash, 'hex'), h.last_pos, pg_catalog.encode(h.last_hash, 'hex')))
$$;
CREATE FUNCTION tenancy._audit_head_mac(h tenancy.audit_heads) RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT tenancy._audit_head_mac(h, k.secret) FROM tenancy.audit_keys k WHERE k.id = 1 $$;
REVOKE ALL ON FUNCTION tenancy._audit_head_mac(tenancy.audit_heads),
    tenancy._audit_head_mac(tenancy.audit_heads, bytea) FROM PUBLIC;

-- ---- sealing ----------------------------------------------------------------------

-- Links every committed entry not yet in a chain; returns how many. Callable
-- by the gateway's worker too; concurrent calls take turns.
CREATE FUNCTION tenancy.audit_seal() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    SET work_mem = '64MB'  -- a round after an outage keeps its blocks in memory
    AS $$
DECLARE
    prev pg_snapshot;
    new_snap pg_snapshot;
    lower_xid bigint;
    sealed bigint;
    ts timestamptz := clock_timestamp();
    zero bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    -- Sealers (and purges) take turns. An advisory lock, not a row lock: a
    -- round that finds nothing writes nothing and burns no transaction id.
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);  -- 'tena', 'audi'
    SELECT s.snap INTO prev FROM tenancy.audit_sealer s;
    -- A snapshot from the future (a restored copy of this table in another
    -- cluster) would hide new entries: start over from every visible entry.
    IF prev IS NOT NULL AND pg_snapshot_xmax(prev) > pg_snapshot_xmax(pg_current_snapshot()) THEN
        prev := NULL;
    END IF;
    lower_xid := coalesce(pg_snapshot_xmin(prev)::text::bigint, 0);
    -- This round seals exactly the entries committed as of this snapshot and
    -- not as of the previous one (an entry committing meanwhile waits a round).
    new_snap := pg_current_snapshot();
    -- One statement: the blocks of every main account's new entries
    -- (_audit_seal_blocks, in C), then the block rows and the moved heads.
    WITH blocks AS MATERIALIZED (
        SELECT * FROM tenancy._audit_seal_blocks(lower_xid, prev, new_snap, ts)
    ), linked AS (
        INSERT INTO tenancy.audit_chain (main_id, first_pos, n, entry_xids, entry_ids, entry_tids, digests, hash, sealed_at)
        SELECT b.main_id, b.first_pos, b.n, b.entry_xids, b.entry_ids, b.entry_tids, b.digests, b.hash, ts FROM blocks b
        RETURNING audit_chain.n
    ), moved AS (
        -- Heads move only under the sealers' lock (audit_purge takes it too),
        -- so the base read here is still the head's.
        INSERT INTO tenancy.audit_heads AS x (main_id, base_pos, base_hash, last_pos, last_hash, mac, updated_at)
        SELECT t.main_id, t.base_pos, t.base_hash, t.last_pos, t.hash,
               tenancy._audit_head_mac(ROW(t.main_id, t.base_pos, t.base_hash, t.last_pos, t.hash, NULL, NULL)::tenancy.audit_heads,
                                       k.secret), ts
        FROM (SELECT b.main_id, b.last_pos, b.hash, coalesce(h.base_pos, 0) AS base_pos,
                     coalesce(h.base_hash, zero) AS base_hash
              FROM blocks b LEFT JOIN tenancy.audit_heads h ON h.main_id = b.main_id
              WHERE b.first_pos + b.n - 1 = b.last_pos) t
        CROSS JOIN tenancy.audit_keys k
        WHERE k.id = 1
        ON CONFLICT (main_id) DO UPDATE
        SET last_pos = excluded.last_pos, last_hash = excluded.last_hash, mac = excluded.mac, updated_at = ts
    )
    SELECT coalesce(sum(k.n), 0) INTO sealed FROM linked k;
    IF sealed = 0 THEN
        RETURN 0;  -- the recorded snapshot still finds everything new
    END IF;
    UPDATE tenancy.audit_sealer s SET snap = new_snap, sealed_at = ts;
    RETURN sealed;
END $$;

-- ---- verification -------------------------------------------------------------------

-- A chained entry, at the TID its block recorded, or by xid (BRIN) if it is
-- not there: Append runs its branches in order and LIMIT 1 stops at the
-- first row, so the second runs only on a miss. The TID is not trusted:
-- (main_id, xid, id) must match. No SET clause and qualified operators, so
-- that the planner inlines it into the verification and purge statements
-- (which run as the extension's owner). audit_trail spells the same lookup
-- out: an inlined function's tables are read as the caller, the view's as
-- its owner.
CREATE FUNCTION tenancy._audit_entry_at(m bigint, entry_xid bigint, entry_id bigint, entry_tid tid)
    RETURNS SETOF tenancy.audit_log
    LANGUAGE sql STABLE ROWS 1
    AS $$
    SELECT x.* FROM tenancy.audit_log x
    WHERE x.ctid OPERATOR(pg_catalog.=) entry_tid AND x.xid OPERATOR(pg_catalog.=) entry_xid
      AND x.id OPERATOR(pg_catalog.=) entry_id AND x.main_id OPERATOR(pg_catalog.=) m
    UNION ALL
    SELECT x.* FROM tenancy.audit_log x
    WHERE x.xid OPERATOR(pg_catalog.=) entry_xid AND x.id OPERATOR(pg_catalog.=) entry_id
      AND x.main_id OPERATOR(pg_catalog.=) m
    LIMIT 1
$$;
REVOKE ALL ON FUNCTION tenancy._audit_entry_at(bigint, bigint, bigint, tid) FROM PUBLIC;

-- Entries older than this and still unsealed are reported by audit_verify.
CREATE FUNCTION tenancy._audit_seal_bound() RETURNS interval
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT interval '10 seconds' $$;
REVOKE ALL ON FUNCTION tenancy._audit_seal_bound() FROM PUBLIC;

-- check_outside: also look for entries of m outside the chain (a scan of the
-- whole log, which has no index by account; verify-all does it once for all).
-- Entries are looked up one by one at their TID (LATERAL ... LIMIT 1, no
-- sequential scans): with stale statistics (right after a bulk load) the
-- planner would otherwise scan the whole log per main account, or worse.
CREATE FUNCTION tenancy._audit_verify_main(m bigint, check_outside boolean DEFAULT true, OUT ok boolean,
                                           OUT entries bigint, OUT first_bad bigint, OUT reason text,
                                           OUT outside_path tenancy.account_path)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    SET enable_seqscan = off
    AS $$
DECLARE
    h tenancy.audit_heads;
    blk record;
    e record;
    expect_pos bigint;
    prev bytea;
    o record;
BEGIN
    ok := true;
    entries := 0;
    SELECT * INTO h FROM tenancy.audit_heads x WHERE x.main_id = m;
    IF NOT FOUND THEN
        h.main_id := m;
        h.base_pos := 0;
        h.base_hash := '\x0000000000000000000000000000000000000000000000000000000000000000';
        h.last_pos := 0;
        h.last_hash := h.base_hash;
        h.mac := tenancy._audit_head_mac(h);
    END IF;
    IF h.mac IS DISTINCT FROM tenancy._audit_head_mac(h) THEN
        ok := false;
        first_bad := h.last_pos;
        reason := format('chain head of main account %s: signature invalid (head rewritten without the key)', m);
        RETURN;
    END IF;
    -- Set-based, first the blocks: each one must start where the one before
    -- ended, be well-formed and link to the stored hash before it.
    SELECT r.* INTO blk FROM (
        SELECT c.first_pos, c.n, c.expect_pos,
               CASE WHEN c.first_pos < c.expect_pos
                        THEN format('positions %s to %s appear twice (entries inserted into the chain)',
                                    c.first_pos, c.expect_pos - 1)
                    WHEN c.first_pos > c.expect_pos
                        THEN format('positions %s to %s missing (entries deleted with their chain)',
                                    c.expect_pos, c.first_pos - 1)
                    WHEN c.n < 1 OR cardinality(c.entry_xids) IS DISTINCT FROM c.n
                         OR cardinality(c.entry_ids) IS DISTINCT FROM c.n OR length(c.digests) <> 32 * c.n
                        THEN format('block at position %s is malformed (chain altered)', c.first_pos)
                    WHEN c.hash IS DISTINCT FROM tenancy._audit_chain_step(NULL, c.prev_hash,
                             tenancy._audit_block_link(c.first_pos, c.sealed_at, c.digests))
                        THEN format('block at positions %s to %s: hash mismatch (chain altered, or its predecessor altered)',
                                    c.first_pos, c.first_pos + c.n - 1) END AS reason
        FROM (SELECT x.*, coalesce(lag(x.first_pos + x.n) OVER w, h.base_pos + 1) AS expect_pos,
                     coalesce(lag(x.hash) OVER w, h.base_hash) AS prev_hash
              FROM tenancy.audit_chain x WHERE x.main_id = m
              WINDOW w AS (ORDER BY x.first_pos)) c) r
    WHERE r.reason IS NOT NULL
    ORDER BY r.first_pos LIMIT 1;
    -- Then every entry before that block: present, and matching its digest.
    -- (entry_tids[k], not a three-array unnest: a tid array of another
    -- length than the ids must not add rows.)
    SELECT r.* INTO e FROM (
        SELECT c.first_pos + u.k - 1 AS pos, u.id, l.id IS NULL AS missing
        FROM tenancy.audit_chain c
        CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
        LEFT JOIN LATERAL tenancy._audit_entry_at(m, u.xid, u.id, c.entry_tids[u.k]) l ON true
        WHERE c.main_id = m AND (blk.first_pos IS NULL OR c.first_pos < least(blk.first_pos, blk.expect_pos))
          AND (l.id IS NULL
               OR tenancy._audit_entry_digest(m, l.id, l.account_path, l.at, l.actor_kind, l.actor_id,
                      l.credential_id, l.action, l.target, l.row_key, l.change)
                  IS DISTINCT FROM substring(c.digests FROM (u.k::integer - 1) * 32 + 1 FOR 32))) r
    ORDER BY r.pos LIMIT 1;
    IF e.pos IS NOT NULL THEN
        ok := false;
        first_bad := e.pos;
        reason := CASE WHEN e.missing
            THEN format('entry %s at position %s is missing (deleted entry)', e.id, e.pos)
            ELSE format('entry %s at position %s: digest mismatch (entry altered, or entries swapped)', e.id, e.pos) END;
        RETURN;
    END IF;
    IF blk.first_pos IS NOT NULL THEN
        ok := false;
        first_bad := least(blk.first_pos, blk.expect_pos);
        reason := blk.reason;
        RETURN;
    END IF;
    SELECT coalesce(sum(c.n), 0) INTO entries FROM tenancy.audit_chain c WHERE c.main_id = m;
    SELECT c.hash INTO prev FROM tenancy.audit_chain c WHERE c.main_id = m ORDER BY c.first_pos DESC LIMIT 1;
    expect_pos := h.base_pos + entries + 1;
    prev := coalesce(prev, h.base_hash);
    IF expect_pos - 1 <> h.last_pos OR prev IS DISTINCT FROM h.last_hash THEN
        ok := false;
        first_bad := CASE WHEN expect_pos - 1 > h.last_pos THEN h.last_pos + 1 ELSE expect_pos END;
        reason := format('chain of main account %s ends at position %s but its head says %s (entries removed or appended)',
                         m, expect_pos - 1, h.last_pos);
        RETURN;
    END IF;
    -- Entries outside the chain: not sealed yet, or inserted behind its back.
    IF NOT check_outside THEN
        reason := 'ok';
        RETURN;
    END IF;
    SELECT * INTO o FROM tenancy._audit_outside_chain() x WHERE x.main_id = m;
    IF o.outside > 0 THEN
        -- No chain position: first_bad is the entry's id (the reason says so).
        ok := false;
        first_bad := o.first_id;
        outside_path := o.first_path;
        reason := o.reason;
        RETURN;
    END IF;
    reason := 'ok';
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_main(bigint, boolean) FROM PUBLIC;

-- Entries of the log that are not in the chain and should be, per main
-- account, in one pass over the log joined to the chain's entries: how many,
-- and the first of them (the most telling kind first, then in (xid, id)
-- order) with its path and the reason. Whether an entry should be in the
-- chain is decided by its transaction id against what the sealer has seen,
-- not by its time (`at`, which whoever inserts a row writes):
--   * a second row with a chained entry's (xid, id), away from the TID its
--     block recorded: an inserted copy;
--   * its xid was not committed when verification read the log (running,
--     or beyond the next xid, or negative): no writer left such an entry;
--   * its xid was committed as of the snapshot of the sealer's last round
--     (audit_sealer.snap): that round or an earlier one would have sealed
--     it, so it was inserted behind the chain's back, whatever its `at`;
--   * otherwise it waits for the sealer's next round: reported only if it
--     is dated in the future (forged: an entry's time is its writer's clock)
--     or older than the bound (is the sealer running?).
CREATE FUNCTION tenancy._audit_outside_chain()
    RETURNS TABLE (main_id bigint, outside bigint, first_id bigint, first_path tenancy.account_path, reason text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    SET enable_seqscan = on  -- called from _audit_verify_main, which turns it off
    -- A pass over the whole log looks expensive to the planner; compiling it
    -- (JIT) took longer than running it (1.7 s against 0.3 s on 45k entries).
    SET jit = off
    AS $$
    WITH loose AS MATERIALIZED (
        -- In no block, or a second row with a chained entry's (xid, id) away
        -- from where its block recorded it (a copy: readers of audit_log
        -- would see both).
        SELECT l.main_id, l.id, l.xid, l.at, l.account_path, ch.xid IS NOT NULL AS copy
        FROM (SELECT x.main_id, x.id, x.xid, x.at, x.account_path, x.ctid,
                     count(*) OVER (PARTITION BY x.main_id, x.xid, x.id) AS copies
              FROM tenancy.audit_log x) l
        LEFT JOIN (SELECT c.main_id, u.xid, u.id, u.tid FROM tenancy.audit_chain c
                   CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)) ch
               ON ch.main_id = l.main_id AND ch.xid = l.xid AND ch.id = l.id
        WHERE ch.xid IS NULL OR (l.copies > 1 AND l.ctid IS DISTINCT FROM ch.tid)
    ), judged AS (
        SELECT o.*, CASE
            WHEN o.copy THEN 2
            WHEN o.xid < 0 OR (NOT pg_visible_in_snapshot(o.xid::text::xid8, pg_current_snapshot())
                               AND o.xid::text::xid8 IS DISTINCT FROM pg_current_xact_id_if_assigned()) THEN 1
            -- (a snapshot from the future, in a restored copy of
            -- audit_sealer, tells nothing: the sealer starts over from it too)
            WHEN pg_visible_in_snapshot(o.xid::text::xid8,
                     (SELECT s.snap FROM tenancy.audit_sealer s
                      WHERE pg_snapshot_xmax(s.snap) <= pg_snapshot_xmax(pg_current_snapshot()))) THEN 2
            WHEN o.at > clock_timestamp() + tenancy._audit_seal_bound() THEN 3
            WHEN o.at < now() - tenancy._audit_seal_bound() THEN 4 END AS kind
        FROM loose o
    ), counted AS (
        SELECT j.*, count(*) OVER (PARTITION BY j.main_id) AS n,
               row_number() OVER (PARTITION BY j.main_id ORDER BY j.kind, j.xid, j.id) AS k
        FROM judged j WHERE j.kind IS NOT NULL
    )
    SELECT c.main_id, c.n, c.id, c.account_path,
           CASE c.kind
               WHEN 1 THEN format('entry %s outside the chain names transaction %s, which had not committed when the log was read (forged entry)',
                                  c.id, c.xid)
               WHEN 2 THEN CASE WHEN c.copy
                   THEN format('entry %s (transaction %s) appears twice in the log, once away from where the chain recorded it (inserted copy)',
                               c.id, c.xid)
                   ELSE format('entry %s is not in the chain, though its transaction %s had committed before the sealer''s last round: inserted behind the chain''s back',
                               c.id, c.xid) END
               WHEN 3 THEN format('entry %s outside the chain is dated in the future (forged entry)', c.id)
               ELSE format('entry %s has been outside the chain for longer than %s s (is the sealer running?)',
                           c.id, extract(epoch FROM tenancy._audit_seal_bound())::bigint) END
           || CASE WHEN c.n > 1 THEN format('; %s entries outside the chain in all', c.n) ELSE '' END
    FROM counted c WHERE c.k = 1
$$;
REVOKE ALL ON FUNCTION tenancy._audit_outside_chain() FROM PUBLIC;

-- The DBA's verification (EXECUTE granted to tenancy_admin only): every main
-- account (account NULL, one row each) or the main chain of any account.
CREATE FUNCTION tenancy._audit_verify_dba(account text)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF account IS NULL THEN
        RETURN QUERY
        WITH outside AS MATERIALIZED (SELECT * FROM tenancy._audit_outside_chain())
        SELECT v.ok AND o.outside IS NULL, v.entries,
               CASE WHEN v.ok THEN o.first_id ELSE v.first_bad END,
               CASE WHEN v.ok AND o.outside IS NOT NULL THEN o.reason ELSE v.reason END,
               m.id
        FROM (SELECT x.main_id AS id FROM tenancy.audit_heads x
              UNION SELECT o2.main_id FROM outside o2) m
        CROSS JOIN LATERAL tenancy._audit_verify_main(m.id, false) v
        LEFT JOIN outside o ON o.main_id = m.id
        ORDER BY m.id;
        RETURN;
    END IF;
    a := tenancy._find_account(account);
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason, a.main_id FROM tenancy._audit_verify_main(a.main_id) v;
END $$;

-- In a context: the main chain of the active account (or of a visible
-- account), if the role may read the audit log.
CREATE FUNCTION tenancy._audit_verify_context(account text)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    v record;
    bad_path tenancy.account_path;
BEGIN
    PERFORM tenancy._require('audit', 'read');
    a := tenancy._visible_account(coalesce(account, tenancy._context_field('account')));
    SELECT * INTO v FROM tenancy._audit_verify_main(a.main_id);
    IF a.id = a.main_id THEN
        RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason, a.main_id;
        RETURN;
    END IF;
    -- A subaccount verifies the whole main chain (its entries are in it) but
    -- learns only about its own subtree: its entry count, and the bad
    -- position only if that entry is its own (an entry outside the chain
    -- comes with its path; a chain position is looked up).
    bad_path := v.outside_path;
    IF bad_path IS NULL THEN
        SELECT l.account_path INTO bad_path
        FROM (SELECT c.main_id, c.entry_xids[v.first_bad - c.first_pos + 1] AS xid,
                     c.entry_ids[v.first_bad - c.first_pos + 1] AS id, c.entry_tids[v.first_bad - c.first_pos + 1] AS tid
              FROM tenancy.audit_chain c
              WHERE c.main_id = a.main_id AND c.first_pos <= v.first_bad
              ORDER BY c.first_pos DESC LIMIT 1) u
        CROSS JOIN LATERAL tenancy._audit_entry_at(u.main_id, u.xid, u.id, u.tid) l;
    END IF;
    RETURN QUERY
    SELECT v.ok,
           (SELECT count(*) FROM tenancy.audit_chain c
            CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)
            CROSS JOIN LATERAL tenancy._audit_entry_at(c.main_id, u.xid, u.id, u.tid) l
            WHERE c.main_id = a.main_id AND l.account_path OPERATOR(tenancy.<@) a.path),
           CASE WHEN bad_path OPERATOR(tenancy.<@) a.path THEN v.first_bad END,
           CASE WHEN v.ok OR bad_path OPERATOR(tenancy.<@) a.path THEN v.reason
                ELSE 'the main account''s chain has a bad entry outside this account''s subtree' END,
           a.main_id;
END $$;

-- audit_verify(account DEFAULT NULL): in a context, that account's main chain
-- (the role must may read `audit`); outside one, the DBA: all main accounts
-- (NULL) or the named account's. The DBA path is guarded by the EXECUTE
-- privilege on _audit_verify_dba, so this wrapper runs as the caller.
CREATE FUNCTION tenancy.audit_verify(account text DEFAULT NULL)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RETURN QUERY SELECT * FROM tenancy._audit_verify_context(account);
    ELSIF has_function_privilege('tenancy._audit_verify_dba(text)', 'EXECUTE') THEN
        RETURN QUERY SELECT * FROM tenancy._audit_verify_dba(account);
    ELSE
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_dba(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._audit_verify_dba(text) TO tenancy_admin;

-- ---- events and purge ------------------------------------------------------------

-- detail without the members whose key may name a credential (*hash*,
-- *secret*, *token*, password*: the row trigger's rule for column names), at
-- any depth (extension/src/audit_detail.cpp).
CREATE FUNCTION tenancy._audit_redact_detail(detail jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'tenancy_audit_redact_detail' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._audit_redact_detail(jsonb) FROM PUBLIC;

-- The detail's size in bytes (uncompressed), read without detoasting it.
CREATE FUNCTION tenancy._audit_detail_size(detail jsonb) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_audit_detail_size' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._audit_detail_size(jsonb) FROM PUBLIC;

-- An event that is not a row change, recorded in the active account. Two
-- kinds of writer:
--   * the system: the gateway (its login role is a member of tenancy_gateway;
--     it then does SET LOCAL ROLE tenancy_app, so session_user is checked, which
--     SET ROLE does not change) and superuser sessions. Any action name
--     (api.request: method, route, status, request id); detail up to 64 kB.
--   * every other client: only the reserved namespace app.* (so nothing a
--     client writes can pass for a login, a row change or an API call), only
--     with a role that may write the account's settings (owner, admin: those
--     who configure the account may add to its record; not member,
--     support_agent, viewer, sub_user), and a detail up to 8 kB.
-- The extension's own events (logins, context switches, ...) go through
-- _audit_record, which no client may call. Targets are at most 1000 bytes.
-- Members of detail whose key looks like a secret are dropped, also nested
-- ones. Every refusal raises before anything is written.
CREATE FUNCTION tenancy.audit_event(action text, target text, detail jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    -- The gateway's login role, or a superuser (20_roles.sql).
    system_writer boolean := tenancy._session_is_gateway();
    detail_cap bigint := CASE WHEN system_writer THEN 65536 ELSE 8192 END;
    detail_size bigint := tenancy._audit_detail_size(detail);
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    IF action IS NULL OR action !~ '^[A-Za-z][A-Za-z0-9_.:-]{0,99}$' THEN
        RAISE EXCEPTION 'audit action must be 1 to 100 characters [A-Za-z0-9_.:-], starting with a letter'
            USING ERRCODE = '22023';
    END IF;
    IF action ~ '^app\.' THEN
        IF action !~ '^app\.[A-Za-z0-9]' THEN
            RAISE EXCEPTION 'audit action "%" needs a name after "app."', action USING ERRCODE = '22023';
        END IF;
        PERFORM tenancy._refuse_restricted();
        IF NOT tenancy.may('settings', 'write') THEN
            RAISE EXCEPTION 'role % may not record audit events (app.* needs write access to settings)',
                tenancy._context_field('role') USING ERRCODE = '42501';
        END IF;
    ELSIF NOT system_writer THEN
        RAISE EXCEPTION 'audit action "%" is reserved for the system: a client records only app.* events', action
            USING ERRCODE = '42501',
                  HINT = 'Name the event app.<something>, for instance app.' || lower(action) || '.';
    END IF;
    IF octet_length(target) > 1000 THEN
        RAISE EXCEPTION 'audit target is % bytes, more than the 1000 allowed', octet_length(target)
            USING ERRCODE = '54000';
    END IF;
    IF detail_size > detail_cap THEN
        RAISE EXCEPTION 'audit detail is % bytes of jsonb, more than the % allowed', detail_size, detail_cap
            USING ERRCODE = '54000';
    END IF;
    IF detail IS NOT NULL AND jsonb_typeof(detail) <> 'object' THEN
        RAISE EXCEPTION 'audit detail must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF detail IS NOT NULL THEN
        detail := tenancy._audit_redact_detail(detail);
    END IF;
    -- A restricted context (MFA pending, password change) has a path no row
    -- lies under; the gateway's record of its refused request goes to the
    -- session's account, where its owners read it.
    IF tenancy._context_field('role') IN ('mfa_pending', 'password_change') THEN
        RETURN tenancy._audit_record(tenancy.current_main_id(),
            (SELECT a.path FROM tenancy.accounts a
             WHERE a.main_id = tenancy.current_main_id() AND a.public_id = tenancy._context_field('account')),
            action, target, detail);
    END IF;
    RETURN tenancy._audit_record(tenancy.current_main_id(), tenancy.current_path(), action, target, detail);
END $$;

-- DBA: delete the sealed entries of an account's main chain older than
-- `before`. The head keeps the last purged position and hash as a checkpoint
-- (the remaining chain still verifies from it), and a new entry records the
-- purge. Returns how many entries were deleted.
CREATE FUNCTION tenancy.audit_purge(account text, before timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
    m bigint;
    h tenancy.audit_heads;
    cut record;
    deleted bigint;
    moved_deleted bigint;
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RAISE EXCEPTION 'audit_purge is for the DBA, outside any tenancy context' USING ERRCODE = '42501';
    END IF;
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    IF before IS NULL THEN
        RAISE EXCEPTION 'before must not be NULL' USING ERRCODE = '22004';
    END IF;
    m := a.main_id;
    -- Sealing first also takes the sealer's lock: no round runs meanwhile.
    PERFORM tenancy.audit_seal();
    SELECT * INTO h FROM tenancy.audit_heads x WHERE x.main_id = m FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- A prefix of the chain in whole blocks (the checkpoint is a block's
    -- hash): up to the block before the first one holding an entry at or
    -- after `before`.
    SELECT c.first_pos + c.n - 1 AS last_pos, c.first_pos, c.hash INTO cut FROM tenancy.audit_chain c
    WHERE c.main_id = m AND c.first_pos < coalesce((
        SELECT min(k.first_pos) FROM tenancy.audit_chain k
        WHERE k.main_id = m AND EXISTS (
            SELECT FROM unnest(k.entry_xids, k.entry_ids, k.entry_tids) u(xid, id, tid)
            CROSS JOIN LATERAL tenancy._audit_entry_at(m, u.xid, u.id, u.tid) l
            WHERE l.at >= before)), 9223372036854775807)
    ORDER BY c.first_pos DESC LIMIT 1;
    IF cut.last_pos IS NULL OR cut.last_pos <= h.base_pos THEN
        RETURN 0;
    END IF;
    -- By TID where the entry still is (the fast way), else by xid.
    DELETE FROM tenancy.audit_log l
    USING tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)
    WHERE c.main_id = m AND c.first_pos <= cut.first_pos
      AND l.ctid = u.tid AND l.xid = u.xid AND l.id = u.id AND l.main_id = m;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    IF deleted < cut.last_pos - h.base_pos THEN
        -- Entries moved (VACUUM FULL, CLUSTER) or already gone: one pass by
        -- (xid, id) for the rest.
        DELETE FROM tenancy.audit_log l
        USING tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
        WHERE c.main_id = m AND c.first_pos <= cut.first_pos
          AND l.xid = u.xid AND l.id = u.id AND l.main_id = m;
        GET DIAGNOSTICS moved_deleted = ROW_COUNT;
        deleted := deleted + moved_deleted;
    END IF;
    DELETE FROM tenancy.audit_chain c WHERE c.main_id = m AND c.first_pos <= cut.first_pos;
    h.base_pos := cut.last_pos;
    h.base_hash := cut.hash;
    UPDATE tenancy.audit_heads x SET base_pos = h.base_pos, base_hash = h.base_hash,
        mac = tenancy._audit_head_mac(h), updated_at = clock_timestamp()
    WHERE x.main_id = m;
    PERFORM tenancy._audit_record(m, CASE WHEN m <> 0 THEN (m::text)::tenancy.account_path END, 'audit.purge', 'tenancy.audit_log',
        jsonb_build_object('purged_through_position', cut.last_pos, 'checkpoint_hash', encode(cut.hash, 'hex'),
                           'entries', deleted, 'before', before));
    RETURN deleted;
END $$;

-- DBA: records again where every chained entry is (entry_tids), in one pass
-- over the log. VACUUM FULL and CLUSTER move every entry: readers then find
-- each one by xid through the BRIN index, a range of pages per entry, which
-- is slow on a large log. Returns how many blocks changed.
CREATE FUNCTION tenancy.audit_relocate() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    -- One hash join, not a lookup per entry (nested loop) nor a merge on
    -- main_id alone (quadratic).
    SET enable_nestloop = off
    SET enable_mergejoin = off
    AS $$
DECLARE
    changed bigint;
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RAISE EXCEPTION 'audit_relocate is for the DBA, outside any tenancy context' USING ERRCODE = '42501';
    END IF;
    -- No sealing round or purge meanwhile.
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);
    WITH chained AS MATERIALIZED (
        SELECT c.main_id, c.first_pos, u.xid, u.id, u.k
        FROM tenancy.audit_chain c
        CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
    ), places AS (
        SELECT DISTINCT ON (l.main_id, l.xid, l.id) l.main_id, l.xid, l.id, l.ctid AS tid
        FROM tenancy.audit_log l ORDER BY l.main_id, l.xid, l.id, l.ctid
    ), located AS (
        SELECT e.main_id, e.first_pos, array_agg(p.tid ORDER BY e.k) AS tids
        FROM chained e
        LEFT JOIN places p ON p.main_id = e.main_id AND p.xid = e.xid AND p.id = e.id
        GROUP BY e.main_id, e.first_pos
    )
    UPDATE tenancy.audit_chain c SET entry_tids = x.tids FROM located x
    WHERE c.main_id = x.main_id AND c.first_pos = x.first_pos AND c.entry_tids IS DISTINCT FROM x.tids;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END $$;

-- ---- triggers -----------------------------------------------------------------------

-- Installs the audit trigger on a table whose rows carry their account in
-- `path_column` (and main_id). Called by protect().
CREATE FUNCTION tenancy._audit_attach(tbl regclass, path_column text DEFAULT 'account_path') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'tenancy_audit') THEN
        EXECUTE format('DROP TRIGGER tenancy_audit ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER tenancy_audit AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION tenancy._audit_trigger(%L)', tbl, path_column);
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_attach(regclass, text) FROM PUBLIC;

SELECT tenancy._audit_attach('tenancy.accounts', 'path');
SELECT tenancy._audit_attach('tenancy.memberships');
SELECT tenancy._audit_attach('tenancy.api_keys');
-- Provisioning within an account: sub-users (created, activated, edited,
-- deactivated, deleted; password hashes only named under "redacted", last
-- login bookkeeping not recorded) and invitations (sent, accepted, revoked;
-- the token hash only named).
SELECT tenancy._audit_attach('tenancy.sub_users');
SELECT tenancy._audit_attach('tenancy.invitations');
SELECT tenancy._audit_attach(p.tbl) FROM tenancy.protected_tables p;

-- ---- ownership and access --------------------------------------------------------------

ALTER TABLE tenancy.audit_log OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_heads OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_chain OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_sealer OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_keys OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.audit_seq OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_log ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_heads ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_chain ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_sealer ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.audit_log, tenancy.audit_heads, tenancy.audit_chain, tenancy.audit_sealer,
    tenancy.audit_keys, tenancy.audit_seq FROM PUBLIC;

-- Parents read their subtree's log if their role may read `audit`.
CREATE POLICY subtree_read ON tenancy.audit_log FOR SELECT
    USING (main_id = (SELECT tenancy.current_main_id())
           AND account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path())
           AND (SELECT tenancy.may('audit', 'read')));
GRANT SELECT ON tenancy.audit_log TO tenancy_app, tenancy_admin;
-- A block mixes the main account's subtrees: readers get it only through
-- audit_trail, which shows the entries audit_log's policy lets them see.
CREATE POLICY main_read ON tenancy.audit_chain FOR SELECT
    USING (main_id = (SELECT tenancy.current_main_id()) AND (SELECT tenancy.may('audit', 'read')));

-- The indexed way to read the log: sealed entries with their chain position,
-- digest and block, through the chain's (main_id, first_pos) key and the
-- entries' TIDs (by xid for an entry no longer at its TID): the lookup of
-- _audit_entry_at, spelled out so that audit_log is read as the view's owner.
-- The TIDs come from a three-array unnest: a plain parameter, which the
-- planner takes for a Tid Scan under audit_log's row security (entry_tids[k]
-- it does not). The view
-- runs as tenancy_owner, under both tables' policies, so a reader sees
-- exactly what audit_log's policy shows it (minus the last ~0.5 s not yet
-- sealed). For the newest entries first, order by block_pos DESC, chain_pos
-- DESC: the blocks come in key order. audit_log itself stays readable, but
-- has no index by account.
CREATE VIEW tenancy.audit_trail WITH (security_barrier) AS
SELECT c.main_id, c.first_pos + u.k - 1 AS chain_pos, l.id, l.account_path, l.at, l.actor_kind, l.actor_id,
       l.credential_id, l.action, l.target, l.row_key, l.change,
       substring(c.digests FROM (u.k::integer - 1) * 32 + 1 FOR 32) AS digest,
       c.first_pos AS block_pos, c.hash AS block_hash, c.sealed_at
FROM tenancy.audit_chain c
CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) WITH ORDINALITY u(xid, id, tid, k)
CROSS JOIN LATERAL (SELECT x.* FROM tenancy.audit_log x
                    WHERE x.ctid = u.tid AND x.xid = u.xid AND x.id = u.id AND x.main_id = c.main_id
                    UNION ALL
                    SELECT x.* FROM tenancy.audit_log x
                    WHERE x.xid = u.xid AND x.id = u.id AND x.main_id = c.main_id
                    LIMIT 1) l;
ALTER VIEW tenancy.audit_trail OWNER TO tenancy_owner;
REVOKE ALL ON tenancy.audit_trail FROM PUBLIC;
GRANT SELECT ON tenancy.audit_trail TO tenancy_app;
GRANT SELECT ON tenancy.audit_heads, tenancy.audit_chain, tenancy.audit_sealer TO tenancy_admin;
-- No INSERT/UPDATE/DELETE grant to any role: entries are written by the
-- extension's C code (which bypasses the executor's checks), sealed and purged
-- by SECURITY DEFINER functions. Only a superuser can change them otherwise.

REVOKE ALL ON FUNCTION tenancy.audit_seal(), tenancy.audit_purge(text, timestamptz), tenancy.audit_relocate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_relocate() TO tenancy_admin;
GRANT EXECUTE ON FUNCTION tenancy.audit_seal() TO tenancy_app, tenancy_admin;
GRANT EXECUTE ON FUNCTION tenancy.audit_purge(text, timestamptz) TO tenancy_admin;
-- Key rotation: the server key that signs contexts (DBA), API keys with a
-- grace period (applications), and an account's maximum API key lifetime.
-- Operator's guide: docs/operations/key-rotation.md.

-- ---- the context-signing key ----------------------------------------------------

-- Makes every backend reload tenancy.context_keys (context.cpp): a relcache
-- invalidation of the table, sent at commit. Internal.
CREATE FUNCTION tenancy._context_keys_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'tenancy_context_keys_changed' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._context_keys_changed() FROM PUBLIC;

-- rotate_context_key(grace): a new key signs every context from now on; the
-- keys signing until now retire after `grace` (at the latest), and then
-- verify nothing. A context token is bound to the transaction it was issued
-- in, and an API key's lasts at most 12 hours, so the default grace outlives
-- every token signed before the rotation; a session-scoped context gets a
-- token from the new key at its next transaction. grace => '0' retires the
-- old keys at once (a key that may have leaked): contexts they signed, even
-- in transactions under way, are no context from their next statement on.
-- Retired keys are deleted at the next rotation, except key 1, the root of
-- the derived keys (32_gateway_support.sql), whose row stays, marked. The
-- rotation is recorded in the installation's audit chain (main_id 0), without
-- key material. Returns the new key's id.
CREATE FUNCTION tenancy.rotate_context_key(grace interval DEFAULT interval '12 hours') RETURNS integer
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    retire timestamptz := now() + grace;
    retiring integer[];
    new_id integer;
BEGIN
    IF grace IS NULL OR grace < interval '0' OR grace > interval '7 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 7 days' USING ERRCODE = '22023';
    END IF;
    -- One rotation at a time; the extension's key reads (ACCESS SHARE) never wait.
    LOCK TABLE tenancy.context_keys IN EXCLUSIVE MODE;
    DELETE FROM tenancy.context_keys c WHERE c.retire_at <= now() AND c.id <> 1;
    WITH r AS (
        UPDATE tenancy.context_keys c SET retire_at = least(coalesce(c.retire_at, 'infinity'), retire)
        WHERE c.retire_at IS NULL OR c.retire_at > now()
        RETURNING c.id)
    SELECT array_agg(r.id ORDER BY r.id) INTO retiring FROM r;
    -- The extension keeps at most 16 live keys (context.cpp).
    IF (SELECT count(*) FROM tenancy.context_keys c WHERE c.retire_at > now()) >= 8 THEN
        RAISE EXCEPTION 'too many context keys are still in their grace period' USING ERRCODE = '53400',
            HINT = 'Wait until one retires, or rotate with a shorter grace.';
    END IF;
    SELECT coalesce(max(c.id), 0) + 1 INTO new_id FROM tenancy.context_keys c;
    IF new_id > 32767 THEN
        RAISE EXCEPTION 'context key ids are exhausted' USING ERRCODE = '53400';
    END IF;
    INSERT INTO tenancy.context_keys (id, secret) VALUES (new_id, tenancy._random_bytes(32));
    PERFORM tenancy._context_keys_changed();
    PERFORM tenancy._audit_record(0, NULL, 'context_key.rotate', 'context_key:' || new_id,
        jsonb_build_object('key_id', new_id, 'retiring', coalesce(to_jsonb(retiring), '[]'),
                           'retire_at', retire, 'grace', grace::text));
    RETURN new_id;
END $$;
REVOKE ALL ON FUNCTION tenancy.rotate_context_key(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.rotate_context_key(interval) TO tenancy_admin;

-- ---- API keys -------------------------------------------------------------------

-- rotate_api_key(key_id, grace): a new key with the old one's account, name
-- and role (and, if the old one had an expiry, the same lifetime from now);
-- the old key keeps authenticating until now() + grace (its expires_at,
-- never later than it already was), then is refused. Both stay in the key
-- list: the old one with rotated_at and replaced_by. Who may: whoever may
-- revoke the key (api_keys write, the key in the active subtree). A revoked
-- key, or one already rotated, cannot be rotated (55000): rotate its
-- replacement. Returns the full new key, shown this once.
CREATE FUNCTION tenancy.rotate_api_key(key_id text, grace interval DEFAULT interval '1 day') RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(key_id, 'key', 2, 0);
    k tenancy.api_keys;
    a tenancy.accounts;
    new_key text;
    new_expiry timestamptz;
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    IF grace IS NULL OR grace < interval '0' OR grace > interval '30 days' THEN
        RAISE EXCEPTION 'grace must be between 0 and 30 days' USING ERRCODE = '22023';
    END IF;
    IF parts IS NOT NULL THEN
        SELECT * INTO k FROM tenancy.api_keys x
        WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
          AND x.account_path <@ tenancy.current_path()
        FOR UPDATE;
    END IF;
    IF k.id IS NULL THEN
        RAISE EXCEPTION 'API key "%" not found', key_id USING ERRCODE = 'P0002';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key "%" has been revoked', key_id USING ERRCODE = '55000';
    END IF;
    IF k.rotated_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key "%" has already been rotated', key_id USING ERRCODE = '55000',
            HINT = format('Rotate its replacement, key_%s_%s.', k.main_id, k.replaced_by);
    END IF;
    SELECT * INTO a FROM tenancy.accounts x WHERE x.main_id = k.main_id AND x.id = k.account_id;
    IF k.expires_at IS NOT NULL THEN
        new_expiry := now() + (k.expires_at - k.created_at);
    END IF;
    -- Marked first: a key in its grace period does not count against the
    -- plan's limit (_make_api_key), so a full account can still rotate.
    UPDATE tenancy.api_keys x
    SET rotated_at = now(), expires_at = least(coalesce(x.expires_at, 'infinity'), now() + grace)
    WHERE x.main_id = k.main_id AND x.id = k.id;
    new_key := tenancy._make_api_key(a, k.name, k.role, new_expiry);
    UPDATE tenancy.api_keys x SET replaced_by = (tenancy._id_parts(new_key, 'tnc', 2, 43))[2]::bigint
    WHERE x.main_id = k.main_id AND x.id = k.id;
    RETURN new_key;
END $$;

-- rotate_api_key_json(key_id, grace): rotate_api_key answered as the gateway
-- returns it: the new key (in full, this once) and the old one's end of grace.
CREATE FUNCTION tenancy.rotate_api_key_json(key_id text, grace interval DEFAULT interval '1 day')
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    full_key text := tenancy.rotate_api_key(key_id, grace);
    parts text[] := tenancy._id_parts(full_key, 'tnc', 2, 43);
    k tenancy.api_keys;
    old tenancy.api_keys;
BEGIN
    SELECT * INTO STRICT k FROM tenancy.api_keys x
    WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint;
    SELECT * INTO STRICT old FROM tenancy.api_keys x
    WHERE x.main_id = k.main_id AND x.replaced_by = k.id;
    RETURN jsonb_build_object('id', k.public_id, 'key', full_key, 'prefix', k.prefix, 'name', k.name,
                              'role', k.role, 'expires_at', k.expires_at, 'created_at', k.created_at,
                              'replaces', jsonb_build_object('id', old.public_id, 'expires_at', old.expires_at));
END $$;

-- ---- maximum key lifetime ---------------------------------------------------------

-- settings.api_keys.max_lifetime_days (a whole number, 1 to 3650): keys of the
-- account and its descendants older than that are refused at authentication
-- (24_authenticate.sql), and their contexts end by then. Set by an owner
-- through update_account (PATCH /v1/accounts/{id}, settings) or by a DBA.
-- Inherited and tighten-only: the strictest value on an account's ancestor
-- line applies, and a descendant may not set a longer one than its ancestors.
CREATE FUNCTION tenancy._api_key_settings_check() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    new_s jsonb := NEW.settings -> 'api_keys';
    v jsonb;
    other text;
    above float8;
BEGIN
    IF new_s IS NOT DISTINCT FROM OLD.settings -> 'api_keys' THEN
        RETURN NEW;
    END IF;
    IF new_s IS NOT NULL AND jsonb_typeof(new_s) <> 'object' THEN
        RAISE EXCEPTION 'settings.api_keys must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT k INTO other FROM jsonb_object_keys(coalesce(new_s, '{}')) k WHERE k <> 'max_lifetime_days' LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'unknown API key setting "%"', other USING ERRCODE = '22023',
            HINT = 'API key settings: max_lifetime_days.';
    END IF;
    v := new_s -> 'max_lifetime_days';
    IF jsonb_typeof(v) = 'null' THEN
        v := NULL;
    END IF;
    IF v IS NOT NULL AND (jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,4}$'
                          OR v::text::integer NOT BETWEEN 1 AND 3650) THEN
        RAISE EXCEPTION 'settings.api_keys.max_lifetime_days must be a whole number of days from 1 to 3650'
            USING ERRCODE = '22023';
    END IF;
    IF tenancy._context_field('account') IS NOT NULL THEN
        PERFORM tenancy._refuse_restricted();
        IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
            RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
        END IF;
    ELSIF NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
    END IF;
    IF v IS NOT NULL THEN
        SELECT min((a.settings #>> '{api_keys,max_lifetime_days}')::float8) INTO above
        FROM tenancy.accounts a
        WHERE a.path = ANY (tenancy.ancestors(NEW.path)) AND a.path <> NEW.path
          AND jsonb_typeof(a.settings #> '{api_keys,max_lifetime_days}') = 'number';
        IF above IS NOT NULL AND v::text::integer > above THEN
            RAISE EXCEPTION 'max_lifetime_days may not exceed the % days an ancestor account sets', above
                USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._api_key_settings_check() FROM PUBLIC;
CREATE TRIGGER api_key_settings_check BEFORE UPDATE OF settings ON tenancy.accounts
    FOR EACH ROW EXECUTE FUNCTION tenancy._api_key_settings_check();
-- The voice-AI application tables shipped with the extension (issue 19): agents,
-- knowledge bases, flows, channels, campaigns, integrations, contacts,
-- conversations, support agents' availability and the escalation queue.
--
-- Every table is under tenancy.protect() with its resource (25_protect.sql):
-- rows belong to an account (account_path, defaulting to the active one), the
-- main account's id leads the key, writes need the role's "write" permission.
-- On top of protect()'s subtree read, each table here also needs the role's
-- "read" permission on its resource (a RESTRICTIVE policy): a viewer does not
-- read integrations, a member does not read campaigns (20_roles.sql).
-- Public ids are opaque ('agt_<main>_<id>_<random>'), set by a trigger, never
-- chosen by a client; a client cannot write ids, public ids or timestamps
-- (column privileges).

-- Resources that 20_roles.sql does not declare. The escalation queue: who
-- claims escalated conversations and keeps an availability (owner, admin,
-- support agents). Availability rows are written only by
-- tenancy.set_availability() (no role writes the table directly).
SELECT tenancy.define_resource('escalations', ARRAY['owner', 'admin', 'support_agent'],
                               ARRAY['owner', 'admin', 'support_agent']);
SELECT tenancy.define_resource('availability', ARRAY[]::text[], ARRAY['owner', 'admin', 'support_agent']);

-- One id sequence for every voice table (ids are per main account in keys).
CREATE SEQUENCE tenancy.voice_id_seq;

-- ---- tables ------------------------------------------------------------------------------

CREATE TABLE tenancy.agents (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    prompt text NOT NULL DEFAULT '' CHECK (length(prompt) <= 100000),
    voice text CHECK (length(voice) <= 200),
    language text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$'),
    model jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(model) = 'object'),
    tools jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(tools) = 'object'),  -- custom tools by name
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

CREATE TABLE tenancy.knowledge_bases (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description text CHECK (length(description) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- A knowledge base's documents, as metadata (the content lives in the
-- platform's object store, named by source_uri).
CREATE TABLE tenancy.knowledge_documents (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    knowledge_base_id bigint NOT NULL,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 500),
    content_type text CHECK (length(content_type) <= 200),
    size_bytes bigint CHECK (size_bytes >= 0),
    source_uri text CHECK (length(source_uri) <= 2000),
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    FOREIGN KEY (main_id, knowledge_base_id) REFERENCES tenancy.knowledge_bases (main_id, id) ON DELETE CASCADE
);

CREATE TABLE tenancy.flows (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    definition jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(definition) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- Phone numbers and web widgets that reach an agent. No uniqueness across
-- accounts on the number: a unique key would tell a tenant that another one
-- holds it.
CREATE TABLE tenancy.channels (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('phone', 'widget')),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    phone_number text CHECK (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    agent_id bigint,
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    CHECK ((kind = 'phone') = (phone_number IS NOT NULL)),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id)
);

CREATE TABLE tenancy.campaigns (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    agent_id bigint,
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'scheduled', 'running', 'paused', 'completed')),
    schedule jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(schedule) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id)
);

-- Third-party credentials. A client writes `secret` (write-only: the trigger
-- below seals it into secret_sealed with libsodium secretbox under a subkey of
-- the server key and clears it) and reads only secret_hint (the last 4
-- characters). No client role may read secret_sealed; the DBA sees ciphertext.
CREATE TABLE tenancy.integrations (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    provider text NOT NULL CHECK (provider ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    name text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    secret text CHECK (secret IS NULL),        -- write-only input, always NULL once stored
    secret_sealed bytea,
    secret_hint text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

CREATE TABLE tenancy.contacts (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    name text CHECK (length(name) <= 200),
    phone text CHECK (phone ~ '^\+?[0-9][0-9 ().-]{2,30}$'),
    email text CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    attributes jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id)
);

-- A transcript is an array of turns, each an object with a string "text"
-- (and usually "speaker", "at").
CREATE FUNCTION tenancy._transcript_ok(t jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_typeof(t) = 'array'
           AND NOT EXISTS (SELECT FROM jsonb_array_elements(t) e(turn)
                           WHERE jsonb_typeof(e.turn) <> 'object'
                              OR jsonb_typeof(e.turn -> 'text') IS DISTINCT FROM 'string'
                              OR (e.turn ? 'speaker' AND jsonb_typeof(e.turn -> 'speaker') <> 'string'))
$$;

-- Conversations (call logs). The shape issue19-common.md fixes: part B's
-- triggers (tenancy_10_recording, tenancy_20_phi_redact, tenancy_30_encrypt)
-- run BEFORE INSERT OR UPDATE OF transcript, recording_ref, after
-- tenancy_00_voice_row (triggers fire in name order).
-- Escalation: 'queued' waits for a support agent; tenancy.claim_conversation()
-- moves it to 'claimed' (claimed_by, claimed_at: only that function writes
-- them); 'resolved' ends it.
CREATE TABLE tenancy.conversations (
    main_id bigint NOT NULL,   -- tenancy.root_id(account_path), kept by tenancy_00_voice_row
    id bigint NOT NULL DEFAULT nextval('tenancy.voice_id_seq'),
    account_path tenancy.account_path NOT NULL,
    public_id text NOT NULL UNIQUE,
    agent_id bigint,
    contact_id bigint,
    channel_id bigint,
    direction text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    duration_s integer GENERATED ALWAYS AS (extract(epoch FROM ended_at - started_at)::integer) STORED,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('queued', 'ringing', 'active', 'completed', 'failed', 'no_answer', 'escalated')),
    transcript jsonb NOT NULL DEFAULT '[]' CHECK (tenancy._transcript_ok(transcript)),
    recording_ref text CHECK (length(recording_ref) <= 2000),
    escalation_state text NOT NULL DEFAULT 'none'
        CHECK (escalation_state IN ('none', 'queued', 'claimed', 'resolved')),
    claimed_by text,
    claimed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK (CASE escalation_state WHEN 'claimed' THEN claimed_by IS NOT NULL
                                 WHEN 'resolved' THEN true
                                 ELSE claimed_by IS NULL END),
    FOREIGN KEY (main_id, agent_id) REFERENCES tenancy.agents (main_id, id) ON DELETE SET NULL (agent_id),
    FOREIGN KEY (main_id, contact_id) REFERENCES tenancy.contacts (main_id, id) ON DELETE SET NULL (contact_id),
    FOREIGN KEY (main_id, channel_id) REFERENCES tenancy.channels (main_id, id) ON DELETE SET NULL (channel_id)
);
-- The escalation queue of a subtree: only the few open escalations.
CREATE INDEX conversations_escalations ON tenancy.conversations (account_path, id)
    WHERE escalation_state IN ('queued', 'claimed');

-- Support agents' availability, one row per principal and account.
CREATE TABLE tenancy.support_availability (
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_path tenancy.account_path NOT NULL,
    principal text NOT NULL,   -- kind:id, as whoami() names it
    status text NOT NULL CHECK (status IN ('online', 'away', 'offline')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_path, principal)
);

-- ---- row triggers ------------------------------------------------------------------------------

-- An opaque public id: prefix, main account, id and 40 random bits (so ids
-- cannot be guessed from a neighbour's). SECURITY DEFINER: the random source
-- is not granted to clients.
CREATE FUNCTION tenancy._voice_public_id(prefix text, main_id bigint, id bigint) RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT format('%s_%s_%s_%s', prefix, main_id, id, encode(tenancy._random_bytes(5), 'hex')) $$;
REVOKE ALL ON FUNCTION tenancy._voice_public_id(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._voice_public_id(text, bigint, bigint) TO tenancy_app;

-- Keys: main_id follows account_path (a promoted account's rows get their new
-- main id); a new row gets its id and opaque public id (TG_ARGV[0] is the prefix);
-- an update keeps them and stamps updated_at. References to other voice rows
-- must name rows the writer can see: the foreign keys only tie them to the
-- same main account, and a sibling's row is not the writer's to use (nor to
-- learn of through a foreign key error). Runs as the writer, so row security
-- decides what it sees.
CREATE FUNCTION tenancy._voice_row() RETURNS trigger
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
REVOKE ALL ON FUNCTION tenancy._voice_row() FROM PUBLIC;

-- The server subkey integration secrets are sealed under (32_gateway_support.sql
-- derives one subkey per purpose from the context key). Not per main account:
-- rows keep opening after an account is moved or promoted.
CREATE FUNCTION tenancy._integration_key() RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._derived_key('tenancy integration secrets v1') $$;

-- Seal a written secret, keep only its hint; the clear text never reaches the
-- table, the audit log (an AFTER trigger sees the cleared column) or WAL.
-- SECURITY DEFINER: the server key is readable by no client.
CREATE FUNCTION tenancy._integration_seal() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF NEW.secret IS NOT NULL THEN
        IF length(NEW.secret) NOT BETWEEN 1 AND 4096 THEN
            RAISE EXCEPTION 'an integration secret is 1 to 4096 characters' USING ERRCODE = '22023';
        END IF;
        NEW.secret_sealed := tenancy._secretbox_seal(tenancy._integration_key(), NEW.secret);
        NEW.secret_hint := CASE WHEN length(NEW.secret) >= 12 THEN '...' || right(NEW.secret, 4) ELSE '...' END;
        NEW.secret := NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        NEW.secret_sealed := OLD.secret_sealed;
        NEW.secret_hint := OLD.secret_hint;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._integration_seal(), tenancy._integration_key() FROM PUBLIC;

-- The clear secret, for the platform's own connector processes (superuser
-- only: no client role and not tenancy_admin may call it).
CREATE FUNCTION tenancy._integration_secret(integration text) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
    SELECT tenancy._secretbox_open(tenancy._integration_key(), i.secret_sealed)
    FROM tenancy.integrations i WHERE i.public_id = integration
$$;
REVOKE ALL ON FUNCTION tenancy._integration_secret(text) FROM PUBLIC;

DO $triggers$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('agents', 'agt'), ('knowledge_bases', 'kb'), ('knowledge_documents', 'doc'),
                                   ('flows', 'flow'), ('channels', 'chn'), ('campaigns', 'cmp'),
                                   ('integrations', 'int'), ('contacts', 'ct'), ('conversations', 'conv')) x(tbl, prefix)
    LOOP
        EXECUTE format('CREATE TRIGGER tenancy_00_voice_row BEFORE INSERT OR UPDATE ON tenancy.%I '
                       'FOR EACH ROW EXECUTE FUNCTION tenancy._voice_row(%L)', t.tbl, t.prefix);
    END LOOP;
END
$triggers$;
CREATE TRIGGER tenancy_05_seal BEFORE INSERT OR UPDATE ON tenancy.integrations
    FOR EACH ROW EXECUTE FUNCTION tenancy._integration_seal();

-- ---- protection, privileges ----------------------------------------------------------------

DO $protect$
DECLARE
    t record;
    cols text;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('agents', 'agents'), ('knowledge_bases', 'knowledge_bases'),
                                   ('knowledge_documents', 'knowledge_bases'), ('flows', 'flows'),
                                   ('channels', 'channels'), ('campaigns', 'campaigns'),
                                   ('integrations', 'integrations'), ('contacts', 'contacts'),
                                   ('conversations', 'conversations'),
                                   ('support_availability', 'availability')) x(tbl, resource)
    LOOP
        EXECUTE format('ALTER TABLE tenancy.%I OWNER TO tenancy_owner', t.tbl);
        PERFORM tenancy.protect(format('tenancy.%I', t.tbl)::regclass, t.resource);
        -- Reading needs the role's read permission too (RESTRICTIVE: ANDed with
        -- protect()'s subtree policies, for every command).
        EXECUTE format('CREATE POLICY voice_read_permission ON tenancy.%I AS RESTRICTIVE FOR ALL '
                       'USING (tenancy.may(%L, ''read''))', t.tbl, t.resource);
        -- Column privileges: no client writes ids, public ids or timestamps;
        -- nor the claim (claim_conversation) or a sealed secret.
        EXECUTE format('REVOKE ALL ON tenancy.%I FROM PUBLIC, tenancy_app', t.tbl);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('tenancy.%I', t.tbl)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN ('secret', 'secret_sealed');
        EXECUTE format('GRANT SELECT (%s) ON tenancy.%I TO tenancy_app', cols, t.tbl);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('tenancy.%I', t.tbl)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attgenerated = ''
          AND a.attname NOT IN ('main_id', 'id', 'public_id', 'created_at', 'updated_at', 'claimed_by',
                                'claimed_at', 'secret_sealed', 'secret_hint');
        EXECUTE format('GRANT INSERT (%1$s), UPDATE (%1$s), DELETE ON tenancy.%2$I TO tenancy_app', cols, t.tbl);
        EXECUTE format('GRANT SELECT ON tenancy.%I TO tenancy_admin', t.tbl);
    END LOOP;
END
$protect$;
-- The DBA reads integrations' ciphertext, never the clear secret.
ALTER SEQUENCE tenancy.voice_id_seq OWNER TO tenancy_owner;
GRANT USAGE ON SEQUENCE tenancy.voice_id_seq TO tenancy_app;

-- ---- escalation queue and availability ----------------------------------------------------

-- The context's principal as kind:id ('user:12', 'api_key:key_3_7').
CREATE FUNCTION tenancy._principal_ref() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT (w.p ->> 'kind') || ':' || (w.p ->> 'id') FROM (SELECT tenancy.whoami() -> 'principal' AS p) w $$;
REVOKE ALL ON FUNCTION tenancy._principal_ref() FROM PUBLIC;

-- claim_conversation(conversation): the caller (a role that may write
-- `escalations`) takes a queued escalation of its subtree. The row lock makes
-- concurrent claims queue up: the first wins, each later one finds the row
-- claimed and gets 55000 (409 over REST). Not visible: P0002, like missing.
-- Returns the claimant (kind:id).
CREATE FUNCTION tenancy.claim_conversation(conversation text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    c record;
    me text;
BEGIN
    PERFORM tenancy._require('escalations', 'write');
    me := tenancy._principal_ref();
    SELECT x.main_id, x.id, x.escalation_state, x.claimed_by INTO c
    FROM tenancy.conversations x
    WHERE x.public_id = conversation AND x.account_path <@ tenancy.current_path()
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation "%" not found', conversation USING ERRCODE = 'P0002';
    END IF;
    IF c.escalation_state = 'claimed' THEN
        RAISE EXCEPTION 'conversation "%" is already claimed', conversation USING ERRCODE = '55000';
    ELSIF c.escalation_state <> 'queued' THEN
        RAISE EXCEPTION 'conversation "%" is not waiting in the escalation queue (state %)',
            conversation, c.escalation_state USING ERRCODE = '55000';
    END IF;
    UPDATE tenancy.conversations x SET escalation_state = 'claimed', claimed_by = me, claimed_at = now()
    WHERE x.main_id = c.main_id AND x.id = c.id;
    RETURN me;
END $$;

-- set_availability(status): the caller's availability in its active account
-- (online, away, offline), for roles that take escalations. Returns the row.
CREATE FUNCTION tenancy.set_availability(status text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    saved tenancy.support_availability;
BEGIN
    PERFORM tenancy._require('escalations', 'write');
    IF status IS NULL OR status NOT IN ('online', 'away', 'offline') THEN
        RAISE EXCEPTION 'availability status must be online, away or offline' USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.support_availability AS s (account_path, principal, status)
    VALUES (tenancy.current_path(), tenancy._principal_ref(), set_availability.status)
    ON CONFLICT (account_path, principal)
        DO UPDATE SET status = excluded.status, updated_at = now()
    RETURNING * INTO saved;
    RETURN jsonb_build_object('principal', saved.principal, 'account', tenancy.current_account(),
                              'status', saved.status, 'updated_at', saved.updated_at);
END $$;
-- Security settings per account (PHI protection, call recording, transcript
-- encryption, audit log) and what enforces them on transcripts.
--
-- Stored in accounts.settings under "security": {"phi_protection": bool,
-- "call_recording": bool, "transcript_encryption": bool, "audit_log": bool};
-- a key absent means "inherit". Rules, checked by a trigger on accounts so
-- that a plain UPDATE of settings cannot go around them:
--   * only an owner switches them (a DBA outside a context too), and only
--     where the main account's plan includes the feature (plans' flags);
--   * tighten-only: a descendant may switch a protection on, never off below
--     what an ancestor enforces. For phi_protection, transcript_encryption and
--     audit_log "tight" is on; for call_recording it is off (an ancestor that
--     keeps no recordings forbids them below).
--   * effective value at an account: the protections are on where any
--     ancestor-or-self turned them on (audit_log: on by default where the plan
--     includes it, until the main account turns it off); recording is on only
--     where the main account turned it on and nobody on the way down turned it
--     off; every feature is off where the plan lacks it.

-- Transcript encryption is a plan feature like the others (enterprise only).
ALTER TABLE tenancy.plans ADD COLUMN transcript_encryption boolean NOT NULL DEFAULT false;
UPDATE tenancy.plans SET transcript_encryption = true WHERE name = 'enterprise';

-- effective_security(account_id) finds an account by its id alone.
CREATE INDEX accounts_id ON tenancy.accounts (id);

-- The four names, in the order they are reported.
CREATE FUNCTION tenancy._security_names() RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT ARRAY['phi_protection', 'call_recording', 'transcript_encryption', 'audit_log'] $$;

-- The effective settings at path p (no visibility check: internal). Reads the
-- main account's plan and the "security" objects of p's ancestors-or-self.
CREATE FUNCTION tenancy._effective_security(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    result jsonb;
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
        WHERE a.main_id = m.main_id AND a.id = ANY (tenancy.labels(p))) x ON true
    WHERE m.main_id = tenancy.root_id(p) AND m.id = tenancy.root_id(p)
    GROUP BY pl.phi_protection, pl.call_recording, pl.transcript_encryption, pl.audit_log
    INTO result;
    RETURN result;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_names(), tenancy._effective_security(tenancy.account_path) FROM PUBLIC;

-- Is the caller a DBA (superuser, or a member of tenancy_admin) outside a context?
CREATE FUNCTION tenancy._is_dba_outside_context() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT tenancy._context_field('account') IS NULL
           AND (pg_has_role(session_user, 'tenancy_admin', 'MEMBER')
                OR (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user))
$$;
REVOKE ALL ON FUNCTION tenancy._is_dba_outside_context() FROM PUBLIC;

-- The effective settings at a row's path, for the transcript triggers: NULL
-- unless the caller may write there (a path in the active subtree, or a DBA
-- outside a context), so calling it directly tells nothing about other
-- tenants. A row outside the caller's subtree is refused by RLS anyway.
CREATE FUNCTION tenancy._security_at(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF (tenancy.current_path() IS NOT NULL AND p OPERATOR(tenancy.<@) tenancy.current_path())
       OR tenancy._is_dba_outside_context() THEN
        RETURN tenancy._effective_security(p);
    END IF;
    RETURN NULL;
END $$;
-- Executable by every role: the triggers run as the writer, and as the
-- table's owner when a foreign key cascades an account move into the rows.
GRANT EXECUTE ON FUNCTION tenancy._security_at(tenancy.account_path) TO PUBLIC;

-- effective_security(account_id): the four effective booleans of an account of
-- the active subtree (or any account, for a DBA outside a context). An
-- account outside the subtree is "not found", like one that does not exist.
CREATE FUNCTION tenancy.effective_security(account_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.account_path;
BEGIN
    IF tenancy._context_field('account') IS NULL AND NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    SELECT a.path INTO p FROM tenancy.accounts a WHERE a.id = effective_security.account_id;
    IF p IS NULL OR (tenancy._context_field('account') IS NOT NULL
                     AND NOT (p OPERATOR(tenancy.<@) tenancy.current_path())) THEN
        RAISE EXCEPTION 'account % not found', account_id USING ERRCODE = 'P0002';
    END IF;
    RETURN tenancy._effective_security(p);
END $$;

-- ---- switching ------------------------------------------------------------------

-- BEFORE UPDATE OF settings ON accounts: every change of settings->'security'
-- obeys the rules above, whoever makes it (set_security_setting, or a plain
-- UPDATE by an owner's SQL client). Turning PHI protection on queues the
-- re-redaction of the transcripts already stored in the subtree.
CREATE FUNCTION tenancy._security_settings_check() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    old_s jsonb := coalesce(OLD.settings -> 'security', '{}');
    new_s jsonb := NEW.settings -> 'security';
    plan tenancy.plans;
    parent_eff jsonb;
    setting text;
    v jsonb;
BEGIN
    IF new_s IS NOT DISTINCT FROM OLD.settings -> 'security' THEN
        RETURN NEW;
    END IF;
    IF new_s IS NOT NULL AND jsonb_typeof(new_s) <> 'object' THEN
        RAISE EXCEPTION 'settings.security must be a JSON object' USING ERRCODE = '22023';
    END IF;
    new_s := coalesce(new_s, '{}');
    SELECT k INTO setting FROM jsonb_object_keys(new_s) k WHERE k <> ALL (tenancy._security_names()) LIMIT 1;
    IF setting IS NOT NULL THEN
        RAISE EXCEPTION 'unknown security setting "%"', setting USING ERRCODE = '22023',
            HINT = 'Security settings: ' || array_to_string(tenancy._security_names(), ', ') || '.';
    END IF;
    IF tenancy._context_field('account') IS NOT NULL THEN
        PERFORM tenancy._refuse_restricted();
        IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
            RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
        END IF;
    ELSIF NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    SELECT pl.* INTO plan FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = OLD.main_id AND m.id = OLD.main_id;  -- (NEW's generated columns are not computed yet)
    IF OLD.parent_id IS NOT NULL THEN
        parent_eff := tenancy._effective_security(tenancy.parent(OLD.path));
    END IF;
    FOREACH setting IN ARRAY tenancy._security_names() LOOP
        v := new_s -> setting;
        CONTINUE WHEN v IS NOT DISTINCT FROM old_s -> setting;
        IF v IS NOT NULL AND jsonb_typeof(v) NOT IN ('boolean', 'null') THEN
            RAISE EXCEPTION 'security setting "%" must be true, false or null (inherit)', setting
                USING ERRCODE = '22023';
        END IF;
        IF NOT coalesce((to_jsonb(plan) ->> setting)::boolean, false) THEN
            RAISE EXCEPTION 'plan "%" does not include %', plan.name, replace(setting, '_', ' ')
                USING ERRCODE = '53400',  -- the plan refuses it, as for its limits
                      HINT = 'A plan with this feature (for instance enterprise) lets the owner switch it.';
        END IF;
        IF parent_eff IS NOT NULL AND jsonb_typeof(v) = 'boolean' THEN
            IF setting = 'call_recording' AND v = 'true' AND NOT (parent_eff ->> setting)::boolean THEN
                RAISE EXCEPTION 'call recording is off above this account: a descendant may not turn it on'
                    USING ERRCODE = '55000';
            ELSIF setting <> 'call_recording' AND v = 'false' AND (parent_eff ->> setting)::boolean THEN
                RAISE EXCEPTION '% is enforced by an ancestor account: a descendant may not turn it off',
                    replace(setting, '_', ' ') USING ERRCODE = '55000';
            END IF;
        END IF;
    END LOOP;
    -- Drop JSON nulls: absent means inherit.
    NEW.settings := jsonb_set(coalesce(NEW.settings, '{}'), '{security}', jsonb_strip_nulls(new_s));
    -- The main account's data key exists before the first sealed row: a
    -- statement that inserts a row and reads it back (INSERT ... RETURNING in a
    -- CTE) does not see a key made by its own insert.
    IF (new_s ->> 'transcript_encryption')::boolean THEN
        PERFORM tenancy._transcript_key_id(OLD.main_id);
    END IF;
    IF (new_s ->> 'phi_protection')::boolean
       AND NOT (tenancy._effective_security(OLD.path) ->> 'phi_protection')::boolean THEN
        PERFORM tenancy._queue_redaction(OLD.path);
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_settings_check() FROM PUBLIC;
CREATE TRIGGER security_settings BEFORE UPDATE OF settings ON tenancy.accounts
    FOR EACH ROW EXECUTE FUNCTION tenancy._security_settings_check();

-- A subtree moved (or promoted) under PHI protection it did not have: its
-- stored transcripts are re-redacted too. Fires per moved account; the queue
-- skips accounts whose ancestor already has a pending job.
CREATE FUNCTION tenancy._security_on_move() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF (tenancy._effective_security(NEW.path) ->> 'phi_protection')::boolean
       AND NOT coalesce((tenancy._effective_security(OLD.path) ->> 'phi_protection')::boolean, false) THEN
        PERFORM tenancy._queue_redaction(NEW.path);
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION tenancy._security_on_move() FROM PUBLIC;
CREATE TRIGGER security_on_move AFTER UPDATE OF path ON tenancy.accounts
    FOR EACH ROW WHEN (OLD.path IS DISTINCT FROM NEW.path) EXECUTE FUNCTION tenancy._security_on_move();

-- set_security_setting(account, name, enabled): switch one setting of an
-- account of the active subtree (owner only). NULL `enabled` is refused; to
-- inherit again, remove the key with an UPDATE of settings. Audited as an
-- update of the account (its settings, old and new) by the row audit trigger.
CREATE FUNCTION tenancy.set_security_setting(account text, name text, enabled boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
    END IF;
    IF set_security_setting.name IS NULL OR set_security_setting.name <> ALL (tenancy._security_names()) THEN
        RAISE EXCEPTION 'unknown security setting "%"', set_security_setting.name USING ERRCODE = '22023',
            HINT = 'Security settings: ' || array_to_string(tenancy._security_names(), ', ') || '.';
    END IF;
    IF enabled IS NULL THEN
        RAISE EXCEPTION 'enabled must be true or false' USING ERRCODE = '22004';
    END IF;
    UPDATE tenancy.accounts x
    SET settings = jsonb_set(coalesce(x.settings, '{}'), '{security}',
                             coalesce(x.settings -> 'security', '{}') || jsonb_build_object(set_security_setting.name, enabled)),
        updated_at = now()
    WHERE x.main_id = a.main_id AND x.id = a.id;
    RETURN tenancy._effective_security(a.path);
END $$;

-- security_settings(account): {account, effective: {...}, own: {...}} of an
-- account of the active subtree; "own" holds what the account itself set
-- (absent: inherited). Any role that reads the account may read them.
CREATE FUNCTION tenancy.security_settings(account text) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    RETURN jsonb_build_object('account', a.public_id, 'effective', tenancy._effective_security(a.path),
                              'own', coalesce(a.settings -> 'security', '{}'));
END $$;

-- set_security_settings(account, changes): several switches at once (an
-- object of booleans; JSON null = inherit again), in one update, by the same
-- rules; answers security_settings(account). Owner only.
CREATE FUNCTION tenancy.set_security_settings(account text, changes jsonb) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may change security settings' USING ERRCODE = '42501';
    END IF;
    IF changes IS NULL OR jsonb_typeof(changes) <> 'object' THEN
        RAISE EXCEPTION 'changes must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF changes <> '{}' THEN
        -- The trigger checks names, values, plan and ancestors.
        UPDATE tenancy.accounts x
        SET settings = jsonb_set(coalesce(x.settings, '{}'), '{security}',
                                 coalesce(x.settings -> 'security', '{}') || changes),
            updated_at = now()
        WHERE x.main_id = a.main_id AND x.id = a.id;
    END IF;
    RETURN tenancy.security_settings(account);
END $$;

-- ---- re-redaction of stored transcripts ----------------------------------------------

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
        CONTINUE WHEN EXISTS (SELECT FROM tenancy.phi_redaction_jobs j
                              WHERE j.tbl = t AND j.finished_at IS NULL AND j.account_path @> p);
        EXECUTE format('SELECT count(*) FROM %s c WHERE c.main_id = $1 AND c.account_path <@ $2', t)
            INTO n USING tenancy.root_id(p), p;
        INSERT INTO tenancy.phi_redaction_jobs (account_path, tbl, total) VALUES (p, t, n);
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

-- ---- folding records into totals ------------------------------------------------

CREATE FUNCTION tenancy._usage_fold() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenancy.usage_totals AS t (grain, bucket, account_path, kind, quantity, records)
        SELECT g.grain, date_trunc(g.grain, n.at, 'UTC'), n.account_path, n.kind, sum(n.quantity), count(*)
        FROM new_rows n CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4  -- one lock order for every writer: no deadlocks
        ON CONFLICT (grain, bucket, account_path, kind) DO UPDATE
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
    INSERT INTO tenancy.usage_totals (grain, bucket, account_path, kind, quantity, records)
    SELECT g.grain, date_trunc(g.grain, r.at, 'UTC'), r.account_path, r.kind, sum(r.quantity), count(*)
    FROM tenancy.usage_records r CROSS JOIN (VALUES ('day'), ('month')) AS g(grain)
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 2, 3, 4;
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
    ON CONFLICT (account_path, kind, ref) WHERE ref IS NOT NULL DO NOTHING
    RETURNING r.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT * INTO prior FROM tenancy.usage_records r
        WHERE r.account_path = a.path AND r.kind = record_usage.kind AND r.ref = record_usage.ref;
        IF prior.quantity <> record_usage.quantity THEN
            RAISE EXCEPTION 'usage ref "%" is already recorded with another quantity', ref
                USING ERRCODE = '23505';
        END IF;
        new_id := prior.id;
    END IF;
    RETURN format('usg_%s_%s', a.main_id, new_id);
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
    use_slice := coalesce(subtree, true) AND cardinality(c.raw_from) > 0
                 AND (SELECT count(*) FROM (SELECT FROM tenancy.accounts x
                                            WHERE x.path OPERATOR(tenancy.<@) a.path LIMIT 101) n) > 100;
    RETURN QUERY EXECUTE replace($q$
        WITH slice AS MATERIALIZED (
            SELECT r.kind, r.quantity, r.account_path FROM tenancy.usage_records r
            WHERE r.main_id = tenancy.root_id($1) AND $7
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2])))
        SELECT s.kind, sum(s.quantity) FROM (
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.grain = 'month' AND t.bucket = ANY ($3)
              AND t.@PATH@
            UNION ALL
            SELECT t.kind, t.quantity FROM tenancy.usage_totals t
            WHERE t.grain = 'day' AND t.bucket = ANY ($4)
              AND t.@PATH@
            UNION ALL
            SELECT r.kind, r.quantity FROM tenancy.usage_records r
            WHERE NOT $7 AND r.@PATH@
              AND ((r.at >= $5[1] AND r.at < $6[1]) OR (r.at >= $5[2] AND r.at < $6[2]))
            UNION ALL
            SELECT r.kind, r.quantity FROM slice r WHERE r.@PATH@
        ) s
        GROUP BY s.kind
        ORDER BY s.kind
    $q$, '@PATH@', CASE WHEN NOT coalesce(subtree, true) THEN 'account_path OPERATOR(tenancy.=) $1'
                         ELSE 'account_path OPERATOR(tenancy.>=) $1 AND account_path OPERATOR(tenancy.<) $2' END)
    USING a.path, tenancy.subtree_upper(a.path), c.months, c.days, c.raw_from, c.raw_to, use_slice;
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
-- Effective settings and branding (white-label resellers): an account's values
-- merged over its ancestors', from the main account down to the account.
--
-- Merge rule: objects merge key by key, recursively; any other value (a
-- string, number, array, JSON null) set lower down replaces the inherited one;
-- a key the account does not set is inherited. Removing a key from an
-- account's own settings makes it inherit again.
-- What a caller learns: the merged values only, never which ancestor set one,
-- nor any ancestor's id or name. The accounts above the active account stay
-- invisible otherwise.
--
-- Two functions, one per column: effective_settings(account) and
-- effective_branding(account). Settings need the role's `settings` read
-- (owner, admin: SPEC section 3, sub-users and members do not read account
-- settings); branding is readable by every role in context (a white-label
-- portal renders it for everyone). The "security" key of settings is the one
-- tenancy.effective_security(account_id) computes (plan gating, tighten-only
-- inheritance) when that function exists; otherwise it merges like any key.

CREATE FUNCTION tenancy._jsonb_merge(base jsonb, over jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF base IS NULL THEN
        RETURN over;
    ELSIF over IS NULL THEN
        RETURN base;
    ELSIF jsonb_typeof(base) <> 'object' OR jsonb_typeof(over) <> 'object' THEN
        RETURN over;
    END IF;
    RETURN (SELECT coalesce(jsonb_object_agg(k, CASE WHEN b.v IS NULL THEN o.v
                                                     WHEN o.v IS NULL THEN b.v
                                                     ELSE tenancy._jsonb_merge(b.v, o.v) END), '{}')
            FROM jsonb_each(base) AS b(k, v) FULL JOIN jsonb_each(over) AS o(k, v) USING (k));
END $$;
REVOKE ALL ON FUNCTION tenancy._jsonb_merge(jsonb, jsonb) FROM PUBLIC;

-- The merged value of column `what` ('settings' or 'branding') for an
-- account of the active subtree.
CREATE FUNCTION tenancy._effective(account text, what text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    merged jsonb := '{}';
    v jsonb;
    sec jsonb;
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    a := tenancy._visible_account(account);
    IF what = 'settings' THEN
        PERFORM tenancy._require('settings', 'read');
    END IF;
    FOR v IN SELECT CASE what WHEN 'settings' THEN x.settings ELSE x.branding END
             FROM tenancy.accounts x
             WHERE x.path = ANY (tenancy.ancestors(a.path))
             ORDER BY x.path
    LOOP
        merged := tenancy._jsonb_merge(merged, coalesce(v, '{}'));
    END LOOP;
    IF what = 'settings' AND to_regprocedure('tenancy.effective_security(bigint)') IS NOT NULL THEN
        EXECUTE 'SELECT tenancy.effective_security($1)' INTO sec USING a.id;
        IF sec IS NOT NULL THEN
            merged := jsonb_set(merged, '{security}', sec);
        END IF;
    END IF;
    RETURN merged;
END $$;
REVOKE ALL ON FUNCTION tenancy._effective(text, text) FROM PUBLIC;

-- effective_settings(account): the account's settings merged over its
-- ancestors' (roles that read `settings`).
CREATE FUNCTION tenancy.effective_settings(account text) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._effective(account, 'settings') $$;

-- effective_branding(account): the account's branding merged over its
-- ancestors' (every role in context).
CREATE FUNCTION tenancy.effective_branding(account text) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._effective(account, 'branding') $$;
-- Backup and restore: every tenancy table and sequence is extension
-- configuration, so pg_dump dumps its rows (secrets included: a dump is a
-- superuser's file) and its sequences' positions. README, "Backup and restore".
--
-- Restores run with session_replication_role = replica (PGOPTIONS; only a
-- superuser may set it): pg_restore loads the rows with COPY after CREATE
-- EXTENSION has made the tables with their triggers, and the audit row
-- triggers would otherwise record every restored row as a new insert by the
-- DBA. In replica mode those triggers and the foreign key checks stay quiet
-- (the rows come from a consistent snapshot; pg_dump orders the tables by
-- their foreign keys anyway).
--
-- Keep this file last: a table or sequence added after it is not registered,
-- and tests/suites/18_dump_restore.sh fails until it is.

-- CREATE EXTENSION inserts some rows itself (product roles and permissions,
-- plans, usage kinds, the tables the script itself protect()s (voice, usage),
-- the context signing key, the audit chain key, the sealer's singleton row);
-- the dump holds them too, possibly changed since: a DBA's plan limits, the
-- audit key that MACs the restored chain heads, the sealer's snapshot that
-- says which restored entries are chained, the context key that wraps the
-- transcript data keys (52_security_settings.sql; contexts themselves live
-- for a transaction or a backend). During a restore (replica mode) the dumped row replaces
-- the one CREATE EXTENSION made. Outside one, a duplicate stays an error, and for the
-- keys and the sealer a restore not in replica mode is refused with a hint:
-- nothing but CREATE EXTENSION inserts those.
CREATE FUNCTION tenancy._restore_replace_installed() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    same_key text;
    clash boolean;
BEGIN
    SELECT string_agg(format('t.%1$I = ($1).%1$I', a.attname), ' AND ') INTO same_key
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
    WHERE i.indrelid = TG_RELID AND i.indisprimary;
    IF current_setting('session_replication_role') = 'replica' THEN
        EXECUTE format('DELETE FROM %s t WHERE %s', TG_RELID::regclass, same_key) USING NEW;
        RETURN NEW;
    END IF;
    IF TG_TABLE_NAME IN ('context_keys', 'audit_keys', 'audit_sealer') THEN
        EXECUTE format('SELECT EXISTS (SELECT FROM %s t WHERE %s)', TG_RELID::regclass, same_key)
            INTO clash USING NEW;
        IF clash THEN
            RAISE EXCEPTION 'restoring % needs session_replication_role = replica', TG_RELID::regclass
                USING ERRCODE = '55000',
                      HINT = 'Restore a tenancy database into a new database with '
                             'PGOPTIONS=''-c session_replication_role=replica'' (README, "Backup and restore").';
        END IF;
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION tenancy._restore_replace_installed() FROM PUBLIC;

DO $installed$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['roles', 'role_permissions', 'plans', 'context_keys', 'audit_keys', 'audit_sealer',
                             'usage_kinds', 'protected_tables', 'transcript_tables']
    LOOP
        EXECUTE format('CREATE TRIGGER restore_replace_installed BEFORE INSERT ON tenancy.%I '
                       'FOR EACH ROW EXECUTE FUNCTION tenancy._restore_replace_installed()', t);
        -- Fires in replica mode too (that is when it has work to do).
        EXECUTE format('ALTER TABLE tenancy.%I ENABLE ALWAYS TRIGGER restore_replace_installed', t);
    END LOOP;
END
$installed$;

-- A sealer serving the database (tenancy.audit_databases) must not run a round
-- in the middle of a restore: with the chain heads and the log restored but
-- not yet the sealer's snapshot, it would take every restored entry for new
-- and chain it a second time. Heads exist only after a round that recorded
-- its snapshot, so heads without one mean a restore under way: the round is
-- refused (the worker retries later). Once per round, and not in replica
-- mode (the restore's own COPY into audit_chain).
CREATE FUNCTION tenancy._audit_chain_restoring() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM tenancy.audit_heads)
       AND NOT EXISTS (SELECT FROM tenancy.audit_sealer s WHERE s.snap IS NOT NULL) THEN
        RAISE EXCEPTION 'audit sealing waits: a restore of this database is under way (chain heads restored, sealer state not yet)'
            USING ERRCODE = '55000';
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_chain_restoring() FROM PUBLIC;
CREATE TRIGGER restoring BEFORE INSERT ON tenancy.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy._audit_chain_restoring();

-- Every table and sequence of the extension, all rows. Listed by name (not
-- found in the catalog) so that each one is a decision. One call per statement:
-- each call updates the pg_extension row.
DO $registered$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY[
        -- 20_roles, 21_context, 22_accounts
        'roles', 'role_permissions', 'context_keys', 'plans', 'accounts', 'account_forwarding', 'users',
        'memberships',
        -- 23_api_keys, 25_protect
        'api_keys', 'api_key_secrets', 'api_key_usage', 'protected_tables',
        -- 300_identity_tables
        'mfa_recovery_codes', 'sub_users', 'sessions', 'outbox', 'invitations', 'login_failures',
        -- 32_gateway_support, 37_outbox_delivery
        'idempotency_keys', 'outbox_failures',
        -- 40_audit
        'audit_log', 'audit_chain', 'audit_heads', 'audit_sealer', 'audit_keys',
        -- 50_voice
        'agents', 'knowledge_bases', 'knowledge_documents', 'flows', 'channels', 'campaigns', 'integrations',
        'contacts', 'conversations', 'support_availability',
        -- 52_security_settings
        'phi_redaction_jobs', 'transcript_tables', 'transcript_keys',
        -- 54_usage (totals too: a restore in replica mode fires no fold trigger)
        'usage_kinds', 'usage_records', 'usage_totals',
        -- sequences (identity columns' too: ids continue past the restored ones)
        'account_id_seq', 'api_key_id_seq', 'sub_user_id_seq', 'invitation_id_seq', 'audit_seq',
        'users_id_seq', 'sessions_id_seq', 'outbox_id_seq', 'voice_id_seq', 'usage_record_id_seq',
        'phi_redaction_jobs_id_seq', 'transcript_keys_id_seq']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('tenancy.%I', r)::regclass, '');
    END LOOP;
END
$registered$;
