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
             WHERE x.main_id = a.main_id AND x.path = ANY (tenancy.ancestors(a.path))
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
