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
        RETURN tenancy._establish_api_key(main_id, credential_id, account_id, scope, false, NULL);
    ELSIF kind IN ('user', 'sub_user') THEN
        RETURN tenancy._establish_session(kind, main_id, credential_id, account_id, scope);
    END IF;
    RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
END $$;

-- One statement finds the key, its stored secret, its account, the target
-- account and whether anything on the target's ancestor line is inactive:
-- authenticate() is on every request's path, each PL/pgSQL statement costs
-- microseconds, and on Citus each is a round trip to the worker.
-- check_secret: authenticate() passes the presented secret, compared here
-- first (invalid credential, whatever else is wrong), and the key's use is
-- recorded once it is proven; false where this backend proved the key
-- already (a session-scoped context's refresh, act_as).
CREATE FUNCTION tenancy._establish_api_key(main_id bigint, credential_id bigint,
                                           account_id bigint, scope text,
                                           check_secret boolean, secret text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    -- Its lookups are by key: re-planning them per call (custom plans) cost
    -- about 70 us once the accounts table had statistics.
    SET plan_cache_mode = force_generic_plan
    AS $$
DECLARE
    stored bytea;
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
    -- correlated `@>` here was planned as a scan of the whole tree). The
    -- subqueries name the main account by the parameter (home's and t's are
    -- the key's, by the joins), not by a correlated column: on Citus that
    -- makes the whole statement one router query to the main account's
    -- shard instead of a query on every shard.
    -- max_days: the strictest maximum key lifetime on the key's own ancestor
    -- line (settings.api_keys.max_lifetime_days, 41_key_rotation.sql).
    SELECT s.secret_hash, k.role, k.revoked_at, k.expires_at, home.id, home.path,
           t.id, t.main_id, t.public_id, t.path,
           t.id IS NOT NULL AND EXISTS (SELECT 1 FROM tenancy.accounts a
                                        WHERE a.main_id = _establish_api_key.main_id
                                          AND a.path = ANY (tenancy.ancestors(t.path))
                                          AND a.status <> 'active'),
           k.created_at,
           (SELECT min((a.settings #>> '{api_keys,max_lifetime_days}')::float8)
            FROM tenancy.accounts a
            WHERE a.main_id = _establish_api_key.main_id
              AND a.path = ANY (tenancy.ancestors(home.path))
              AND jsonb_typeof(a.settings #> '{api_keys,max_lifetime_days}') = 'number')
    INTO stored, key_role, revoked_at, expires_at, home_id, home_path,
         target_id, target_main_id, target_public_id, target_path, inactive, key_created_at, max_days
    FROM tenancy.api_keys k
    JOIN tenancy.accounts home ON home.main_id = k.main_id AND home.id = k.account_id
    LEFT JOIN tenancy.accounts t
        ON t.main_id = k.main_id AND t.id = coalesce(_establish_api_key.account_id, k.account_id)
    LEFT JOIN tenancy.api_key_secrets s ON s.main_id = k.main_id AND s.key_id = k.id
    WHERE k.main_id = _establish_api_key.main_id AND k.id = credential_id;
    IF check_secret THEN
        -- Compare even when no key matched, so timing says nothing.
        IF tenancy._secret_equal(secret, coalesce(stored, '\x00'::bytea)) IS NOT TRUE OR stored IS NULL THEN
            RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
        END IF;
        PERFORM tenancy._touch_api_key(main_id, credential_id);
    END IF;
    -- No such key (role is NOT NULL; FOUND was reset by the PERFORM above).
    IF key_role IS NULL THEN
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
        WHERE m.main_id = target.main_id AND m.user_id = s.user_id AND m.account_path @> target.path
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
    IF EXISTS (SELECT 1 FROM tenancy.accounts a
               WHERE a.main_id = target.main_id AND a.path = ANY (tenancy.ancestors(target.path))
                 AND a.status <> 'active') THEN
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
    tenancy._establish_api_key(bigint, bigint, bigint, text, boolean, text),
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
    -- The secret is checked with the key's lookup, in one statement.
    RETURN tenancy._establish_api_key(parts[1]::bigint, parts[2]::bigint, NULL,
                                      CASE WHEN session THEN 'session' ELSE 'transaction' END,
                                      true, parts[3]);
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
                SELECT 1 FROM tenancy.memberships m
                WHERE m.main_id = target.main_id AND m.user_id = tenancy._context_field('principal_id')::bigint
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
