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
