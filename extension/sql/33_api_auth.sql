-- Logins and sessions as the REST gateway's auth and /v1/me routes answer
-- them (SPEC §7): each route is one call here, so every rule stays in SQL.

-- The answer of a successful login, from its token: the session's expiry,
-- the account it acts in, and what it still owes (second factor, password).
CREATE FUNCTION tenancy._login_answer(token text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions;
BEGIN
    -- (PL/pgSQL, one table at a time: on Citus sub_users are distributed,
    -- sessions and users are not, and a SQL function's parameters cannot be
    -- planned there.)
    SELECT * INTO s FROM tenancy.sessions x WHERE x.id = split_part(token, '_', 2)::bigint;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'token', token,
        'expires_at', s.expires_at,
        'account', tenancy.current_account(),
        'mfa_required', NOT s.mfa_verified,
        'must_change_password', coalesce(
            (SELECT u.must_change_password FROM tenancy.users u WHERE u.id = s.user_id),
            (SELECT su.must_change_password FROM tenancy.sub_users su
             WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id),
            false));
END $$;

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
-- session of this call. Each session's account is looked up by its main
-- account and id: on Citus one shard each (a join with the sessions, a
-- coordinator table, would read every shard's accounts).
CREATE FUNCTION tenancy.list_sessions(before_id bigint DEFAULT NULL, max_rows integer DEFAULT 50)
    RETURNS TABLE (id bigint, account text, current boolean, mfa_verified boolean,
                   created_at timestamptz, expires_at timestamptz)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    x tenancy.sessions;
BEGIN
    PERFORM tenancy._refuse_restricted();
    IF max_rows IS NULL OR max_rows NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_rows must be 1 to 1000' USING ERRCODE = '22023';
    END IF;
    FOR x IN SELECT * FROM tenancy.sessions y
             WHERE y.principal_kind = s.principal_kind
               AND y.user_id IS NOT DISTINCT FROM s.user_id
               AND y.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id
               AND y.sub_user_id IS NOT DISTINCT FROM s.sub_user_id
               AND y.revoked_at IS NULL AND y.expires_at > now()
               AND (before_id IS NULL OR y.id < before_id)
             ORDER BY y.id DESC
             LIMIT max_rows LOOP
        id := x.id;
        SELECT a.public_id INTO account FROM tenancy.accounts a
        WHERE a.main_id = x.account_main_id AND a.id = x.account_id;
        IF NOT FOUND THEN  -- promoted since: a new main id
            SELECT a.public_id INTO account FROM tenancy.accounts a WHERE a.id = x.account_id;
        END IF;
        current := x.id = s.id;
        mfa_verified := x.mfa_verified;
        created_at := x.created_at;
        expires_at := x.expires_at;
        RETURN NEXT;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION tenancy._login_answer(text) FROM PUBLIC;
