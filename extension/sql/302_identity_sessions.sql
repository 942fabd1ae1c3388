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
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN NOT EXISTS (SELECT FROM tenancy.accounts a
                       WHERE a.main_id = tenancy.root_id(p) AND a.path = ANY (tenancy.ancestors(p))
                         AND a.status <> 'active');
END $$;

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
                SELECT 1 FROM tenancy.memberships m
                WHERE m.main_id = target.main_id AND m.user_id = u.id AND m.account_path @> target.path) THEN
            RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
        END IF;
        IF NOT tenancy._chain_active(target.path) THEN
            RAISE EXCEPTION 'account "%" is inactive', target.public_id USING ERRCODE = '28000';
        END IF;
    ELSE
        -- The memberships first, then each one's chain: on Citus a join on
        -- (main_id, id) is co-located, and _chain_active() queries a shard, so
        -- it is not called inside another distributed query.
        FOR target IN
            SELECT a.* FROM tenancy.memberships m
            JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id
            WHERE m.user_id = u.id
            ORDER BY m.created_at, m.main_id, m.account_id
        LOOP
            EXIT WHEN tenancy._chain_active(target.path);
            target := NULL;
        END LOOP;
        IF target.id IS NULL THEN
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
    new_hash text;
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
        new_hash := tenancy.hash_password(new_password);  -- a value: Citus updates shards only with one
        UPDATE tenancy.sub_users su SET password_hash = new_hash,
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
