-- One page of an account subtree's audit log, as GET /v1/accounts/{id}/audit-log
-- answers it, read where the chain lives (docs/audit-log.md, and
-- docs/operations/scale-out.md for Citus).

-- The page from this node's audit_trail: sealed entries under p, newest
-- first, after the filters (NULL: any), positions below before_pos, at most
-- lim. SECURITY INVOKER: audit_trail shows the caller what audit_log's policy
-- lets it see.
CREATE FUNCTION tenancy._audit_page_here(p tenancy.account_path, actor text, action text,
                                         from_at timestamptz, to_at timestamptz, before_pos bigint,
                                         lim integer) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    -- block_pos <= chain_pos: the cursor bounds the chain's key range too.
    RETURN (SELECT coalesce(jsonb_agg(e ORDER BY (e->>'position')::bigint DESC), '[]')
            FROM (SELECT jsonb_build_object('position', t.chain_pos, 'id', t.id, 'at', t.at,
                                            'account_path', t.account_path::text,
                                            'actor', jsonb_build_object('kind', t.actor_kind, 'id', t.actor_id,
                                                                        'credential_id', t.credential_id),
                                            'action', t.action, 'target', t.target, 'row_key', t.row_key,
                                            'change', t.change, 'digest', encode(t.digest, 'hex'),
                                            'sealed_at', t.sealed_at) AS e
                  FROM tenancy.audit_trail t
                  WHERE t.account_path OPERATOR(tenancy.<@) p
                    AND (actor IS NULL OR t.actor_id = actor)
                    AND (_audit_page_here.action IS NULL OR t.action = _audit_page_here.action)
                    AND (from_at IS NULL OR t.at >= from_at) AND (to_at IS NULL OR t.at < to_at)
                    AND (before_pos IS NULL OR (t.chain_pos < before_pos AND t.block_pos < before_pos))
                  ORDER BY t.block_pos DESC, t.chain_pos DESC
                  LIMIT lim) page);
END $$;

-- The page, here on one node; on a Citus coordinator, on the worker holding
-- the main account's chain: a one-shard query on p's own account row carries
-- the call there, run with the caller's role and context (so the account
-- must be visible to the caller, as audit_trail's rows must be). Not visible:
-- an empty page.
CREATE FUNCTION tenancy.audit_page(p tenancy.account_path, actor text DEFAULT NULL,
                                   action text DEFAULT NULL, from_at timestamptz DEFAULT NULL,
                                   to_at timestamptz DEFAULT NULL, before_pos bigint DEFAULT NULL,
                                   lim integer DEFAULT 50) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    page jsonb;
BEGIN
    IF lim IS NULL OR lim NOT BETWEEN 1 AND 1001 THEN
        RAISE EXCEPTION 'a page holds 1 to 1001 entries' USING ERRCODE = '22023';
    END IF;
    IF NOT tenancy._citus_audit_coordinator() THEN
        RETURN tenancy._audit_page_here(p, actor, action, from_at, to_at, before_pos, lim);
    END IF;
    EXECUTE format('SELECT tenancy._audit_page_here(a.path, %L, %L, %L::timestamptz, %L::timestamptz, '
                   '%L::bigint, %s) FROM tenancy.accounts a WHERE a.main_id = %s AND a.path = %L',
                   actor, action, from_at, to_at, before_pos, lim, tenancy.root_id(p), p::text)
        INTO page;
    RETURN coalesce(page, '[]');
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_page_here(tenancy.account_path, text, text, timestamptz, timestamptz,
                                                bigint, integer),
    tenancy.audit_page(tenancy.account_path, text, text, timestamptz, timestamptz, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._audit_page_here(tenancy.account_path, text, text, timestamptz, timestamptz,
                                                   bigint, integer),
    tenancy.audit_page(tenancy.account_path, text, text, timestamptz, timestamptz, bigint, integer)
    TO tenancy_app, tenancy_admin;
