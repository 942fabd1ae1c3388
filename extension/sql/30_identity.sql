-- Identity: user logins and sessions, sub-users (the AI4CALL model), the
-- transactional outbox, invitations, login throttling and MFA.
-- How a credential becomes a context is in 24_authenticate.sql (_establish).
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

-- ---- function privileges ------------------------------------------------------------------

REVOKE ALL ON FUNCTION tenancy._outbox_blank_sent(),
    tenancy._check_password(text), tenancy._check_email(text), tenancy._check_member_role(text, text),
    tenancy._owned_main_ids(text),
    tenancy._throttle_enter(text), tenancy._record_failure(text), tenancy._clear_failures(text),
    tenancy._login_failed(), tenancy._audit_login_name(text),
    tenancy._audit_login_failure_at(tenancy.account_path[], text, jsonb, jsonb),
    tenancy._audit_login_failure(bigint, text, text), tenancy._audit_sub_login_failure(text, text, text, text[]),
    tenancy._audit_login_failure_write(text, bigint, text, text, text, integer, jsonb),
    tenancy._login_failure_replay(text, text, timestamptz, bigint, text, text, text, integer),
    tenancy._audit_session_event(tenancy.sessions, text, text, jsonb),
    tenancy._new_session(text, bigint, bigint, bigint, bigint, bigint, boolean),
    tenancy._chain_active(tenancy.account_path), tenancy._current_session_id(),
    tenancy._require_session(), tenancy._refresh_context(), tenancy._managed_sub_user(text, boolean),
    tenancy._main_account_email(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.outbox_mark(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.outbox_mark(bigint, text) TO tenancy_mailer, tenancy_admin;
