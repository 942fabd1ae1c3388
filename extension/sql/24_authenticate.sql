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
DECLARE
    k tenancy.api_keys;
    home tenancy.accounts;
    target tenancy.accounts;
BEGIN
    IF kind <> 'api_key' THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO k FROM tenancy.api_keys x WHERE x.main_id = _establish.main_id AND x.id = credential_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    IF k.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'API key has been revoked' USING ERRCODE = '28000';
    END IF;
    IF k.expires_at IS NOT NULL AND k.expires_at <= now() THEN
        RAISE EXCEPTION 'API key has expired' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO home FROM tenancy.accounts a WHERE a.main_id = k.main_id AND a.id = k.account_id;
    IF account_id IS NULL OR account_id = home.id THEN
        target := home;
    ELSE
        SELECT * INTO target FROM tenancy.accounts a
        WHERE a.main_id = k.main_id AND a.id = _establish.account_id AND a.path <@ home.path;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account not found' USING ERRCODE = 'P0002';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM tenancy.accounts a
               WHERE a.path @> target.path AND a.status <> 'active') THEN
        RAISE EXCEPTION 'account is inactive' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._issue_context(scope, 'api_key', k.id, k.id, target.id, target.main_id,
        target.public_id, target.path, home.id, home.path, k.role,
        least(coalesce(k.expires_at, 'infinity'), now() + interval '12 hours'));
    RETURN target.public_id;
END $$;
REVOKE ALL ON FUNCTION tenancy._establish(text, bigint, bigint, bigint, text) FROM PUBLIC;

-- authenticate(credential): sets the context for this transaction, or for the
-- session with session => true (re-validated at the start of every transaction).
CREATE FUNCTION tenancy.authenticate(credential text, session boolean DEFAULT false) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := regexp_match(credential, '^tnc_([0-9]{1,18})_([0-9]{1,18})_([A-Za-z0-9_-]{43})$');
    stored bytea;
BEGIN
    IF parts IS NULL THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    SELECT s.secret_hash INTO stored FROM tenancy.api_key_secrets s
    WHERE s.main_id = parts[1]::bigint AND s.key_id = parts[2]::bigint;
    -- Compare even when no key matched, so timing says nothing.
    IF NOT tenancy._secret_equal(parts[3], coalesce(stored, '\x00'::bytea)) OR stored IS NULL THEN
        RAISE EXCEPTION 'invalid credential' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._touch_api_key(parts[1]::bigint, parts[2]::bigint);
    RETURN tenancy._establish('api_key', parts[1]::bigint, parts[2]::bigint, NULL,
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

-- Act in a descendant of the credential's account (downward only).
CREATE FUNCTION tenancy.act_as(account text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    target tenancy.accounts := tenancy._find_account(account);
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    IF target.id IS NULL OR NOT (target.path <@ tenancy._home_path()) THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002',
            HINT = 'Only the credential''s account and its descendants can be acted in.';
    END IF;
    RETURN tenancy._establish(tenancy._context_field('principal_kind'),
                              tenancy._context_field('main_id')::bigint,
                              tenancy._context_field('credential_id')::bigint, target.id, 'refresh');
END $$;

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
                      ELSE tenancy._context_field('principal_id') END),
        'account', tenancy._context_field('account'),
        'role', tenancy._context_field('role'),
        'scope', tenancy._context_field('scope'),
        'expires_at', CASE WHEN tenancy._context_field('expires_at')::bigint < 9223372036854775807
                           THEN to_timestamp(946684800 + tenancy._context_field('expires_at')::numeric / 1000000)
                      END)
    END
$$;
