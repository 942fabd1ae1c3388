-- 0.2 -> 0.3: reads of an account's subtree or ancestor line name its main
-- account, so that on Citus each goes to that main account's shard alone; as
-- in extension/sql/22_accounts.sql, 52_security_settings.sql and
-- 55_effective_settings.sql.

CREATE OR REPLACE FUNCTION tenancy.account_tree(account text DEFAULT NULL) RETURNS jsonb
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
    FOR depth IN REVERSE (SELECT max(tenancy.nlevel(a.path)) FROM tenancy.accounts a
                          WHERE a.main_id = top.main_id AND a.path <@ top.path)
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
              WHERE a.main_id = top.main_id AND a.path <@ top.path AND tenancy.nlevel(a.path) = depth) x;
    END LOOP;
    RETURN nodes[1];
END $$;

CREATE OR REPLACE FUNCTION tenancy._effective(account text, what text) RETURNS jsonb
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

CREATE OR REPLACE FUNCTION tenancy.effective_security(account_id bigint) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.account_path;
    main bigint := tenancy.current_main_id();
BEGIN
    IF tenancy._context_field('account') IS NULL AND NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    -- In a context only its main account can hold it: naming that (a value,
    -- not a function call) keeps the lookup on one shard on Citus.
    IF tenancy._context_field('account') IS NOT NULL THEN
        SELECT a.path INTO p FROM tenancy.accounts a
        WHERE a.main_id = main AND a.id = effective_security.account_id;
    ELSE
        SELECT a.path INTO p FROM tenancy.accounts a WHERE a.id = effective_security.account_id;
    END IF;
    IF p IS NULL OR (tenancy._context_field('account') IS NOT NULL
                     AND NOT (p OPERATOR(tenancy.<@) tenancy.current_path())) THEN
        RAISE EXCEPTION 'account % not found', account_id USING ERRCODE = 'P0002';
    END IF;
    RETURN tenancy._effective_security(p);
END $$;

CREATE OR REPLACE FUNCTION tenancy._subtree_member(user_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    -- A value, not a function call in the query: on Citus the lookup then
    -- goes to the main account's shard alone.
    main bigint := tenancy.root_id(tenancy.current_path());
BEGIN
    RETURN tenancy.may('members', 'read')
           AND EXISTS (SELECT 1 FROM tenancy.memberships m
                       WHERE m.main_id = main
                         AND m.user_id = _subtree_member.user_id
                         AND m.account_path OPERATOR(tenancy.<@) tenancy.current_path());
END $$;

CREATE OR REPLACE FUNCTION tenancy.list_sessions(before_id bigint DEFAULT NULL, max_rows integer DEFAULT 50)
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
