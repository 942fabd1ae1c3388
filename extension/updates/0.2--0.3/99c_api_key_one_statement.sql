-- 0.2 -> 0.3: authenticate() checks an API key's secret in the statement
-- that reads the key (one round trip to the worker less on Citus), as in
-- extension/sql/24_authenticate.sql. The key lookup takes the presented
-- secret: a new signature, so the old one is dropped.
DROP FUNCTION tenancy._establish_api_key(bigint, bigint, bigint, text);

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
REVOKE ALL ON FUNCTION tenancy._establish_api_key(bigint, bigint, bigint, text, boolean, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenancy._establish(kind text, main_id bigint, credential_id bigint,
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

CREATE OR REPLACE FUNCTION tenancy.authenticate(credential text, session boolean DEFAULT false) RETURNS text
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
