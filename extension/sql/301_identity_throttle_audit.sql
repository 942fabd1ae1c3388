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

-- ---- identity events in the audit log (400_audit_log.sql) ------------------------------
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
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN ARRAY(SELECT m.main_id FROM tenancy.users o
                 JOIN tenancy.memberships m ON m.user_id = o.id AND m.role = 'owner' AND m.account_id = m.main_id
                 WHERE lower(o.email) = lower(owner_email)
                 ORDER BY m.main_id);
END $$;

CREATE FUNCTION tenancy._audit_login_failure_write(kind text, who bigint, login_name text, main_name text,
                                                   reason text, recent integer, extra jsonb)
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    d jsonb := jsonb_strip_nulls(jsonb_build_object('login', kind, 'reason', reason,
                                                    'recent_failures', recent)) || coalesce(extra, '{}');
    mains bigint[];
BEGIN
    IF kind = 'user' THEN
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT DISTINCT ON (m.main_id) m.account_path
                  FROM tenancy.memberships m WHERE m.user_id = who
                  ORDER BY m.main_id, tenancy.nlevel(m.account_path), m.account_id),
            login_name, d, d);
    ELSE
        -- The owned main accounts first: on Citus _owned_main_ids() queries
        -- memberships, which a query on the accounts' shards cannot do.
        mains := tenancy._owned_main_ids(main_name);
        PERFORM tenancy._audit_login_failure_at(
            ARRAY(SELECT a.path FROM tenancy.accounts a
                  WHERE a.main_id = ANY (mains) AND a.id = a.main_id
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
