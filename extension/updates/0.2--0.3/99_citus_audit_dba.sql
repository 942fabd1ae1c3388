-- 0.2 -> 0.3: the DBA's audit functions on Citus, as in
-- extension/sql/97_citus_audit.sql: audit_entries(), the reader of every node's
-- log, and audit_rehome(), which brings a chain to its shard's new worker.

-- The DBA's reader of the whole log: every entry (of one main account, or
-- all), wherever it is kept. On one node, this node's audit_log. On a Citus
-- coordinator, its own entries and every worker's (run_command_on_workers,
-- each worker's matching entries as one JSON value), read under the sealers'
-- lock: no forwarding round (_citus_audit_forward) moves entries between
-- nodes while they are read, so none is missed or counted twice. The lock is
-- the caller's until its transaction ends: sealing waits meanwhile. A worker
-- that cannot answer is an error naming it, never a silently shorter log.
-- SECURITY INVOKER: each node's policy applies to the caller there.
CREATE FUNCTION tenancy.audit_entries(main bigint DEFAULT NULL) RETURNS SETOF tenancy.audit_log
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    node record;
BEGIN
    IF NOT tenancy._citus_audit_coordinator() THEN
        RETURN QUERY SELECT * FROM tenancy.audit_log l WHERE main IS NULL OR l.main_id = main;
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);  -- audit_seal's
    RETURN QUERY SELECT * FROM tenancy.audit_log l WHERE main IS NULL OR l.main_id = main;
    FOR node IN EXECUTE format(
            'SELECT nodename, nodeport, success, result FROM run_command_on_workers(%L)',
            format('SELECT coalesce(json_agg(l), %L) FROM tenancy.audit_log l WHERE %s', '[]',
                   CASE WHEN main IS NULL THEN 'true' ELSE format('l.main_id = %s', main) END)) LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'audit_entries: cannot read the log of node %:%: %',
                node.nodename, node.nodeport, node.result
                USING ERRCODE = '58000', HINT = 'Start the worker, or read its log there.';
        END IF;
        RETURN QUERY SELECT * FROM json_populate_recordset(NULL::tenancy.audit_log, node.result::json);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION tenancy.audit_entries(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_entries(bigint) TO tenancy_admin;

-- Runs one command on one worker in a transaction of its own
-- (master_run_on_worker); its one-value answer, or an error naming the node.
CREATE FUNCTION tenancy._citus_on_node(host text, port integer, command text) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    ok boolean;
    answer text;
BEGIN
    EXECUTE 'SELECT success, result FROM master_run_on_worker(ARRAY[$1], ARRAY[$2], ARRAY[$3], false)'
        INTO ok, answer USING host, port, command;
    IF NOT ok THEN
        RAISE EXCEPTION 'node %:% failed: %', host, port, answer USING ERRCODE = '58000';
    END IF;
    RETURN answer;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_on_node(text, integer, text) FROM PUBLIC;

-- After a shard move (citus_move_shard_placement, citus_rebalance_start) a
-- main account's audit chain stays on the worker it was written on, and its
-- new entries start a second chain on the worker now holding its shard. This
-- brings the old chain over, for the DBA, in two steps, each a call (run it
-- until it returns no row; a chain is removed only after its copy committed):
--   copy: the old chain, verified where it is (a chain that does not verify,
--     or has entries not sealed yet, is skipped and named), goes entry by
--     entry, in chain order, to the new worker's log through audit_inbox (its
--     times, actors and changes kept; ids and positions are the new node's),
--     followed by an audit.rehome entry naming the old node and the old
--     head (last position and hash); the new worker's sealer chains them
--     after whatever it holds already: run it right after the move;
--   remove: once that audit.rehome entry is on the new worker, the old
--     chain (entries, blocks, head) is deleted on the old worker, under its
--     sealers' lock, only if its head is still the one copied.
-- Chains on the coordinator (sealed there before distribute()) stay there.
CREATE FUNCTION tenancy.audit_rehome()
    RETURNS TABLE (main_id bigint, from_node text, to_node text, entries bigint, action text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    w record;
    m bigint;
    home record;
    old jsonb;
    copied text;
BEGIN
    IF NOT tenancy._citus_audit_coordinator() THEN
        RAISE EXCEPTION 'audit_rehome() runs on the coordinator of a distributed install'
            USING ERRCODE = '0A000';
    END IF;
    FOR w IN EXECUTE format('SELECT nodename, nodeport, success, result FROM run_command_on_workers(%L)',
                            'SELECT coalesce(json_agg(main_id ORDER BY main_id), ''[]'') '
                            'FROM tenancy.audit_heads WHERE main_id <> 0') LOOP
        IF NOT w.success THEN
            RAISE EXCEPTION 'audit_rehome: cannot read the chains of node %:%: %', w.nodename, w.nodeport, w.result
                USING ERRCODE = '58000';
        END IF;
        FOR m IN SELECT x::bigint FROM json_array_elements_text(w.result::json) x LOOP
            EXECUTE 'SELECT p.nodename, p.nodeport FROM pg_dist_shard_placement p
                     WHERE p.shardid = get_shard_id_for_distribution_column(''tenancy.accounts'', $1)'
                INTO home USING m;
            CONTINUE WHEN home.nodename IS NULL
                OR (home.nodename = w.nodename AND home.nodeport = w.nodeport);
            main_id := m;
            from_node := w.nodename || ':' || w.nodeport;
            to_node := home.nodename || ':' || home.nodeport;
            -- The old chain's head as it is now.
            old := tenancy._citus_on_node(w.nodename, w.nodeport, format(
                'SELECT jsonb_build_object(%L, h.last_pos, %L, encode(h.last_hash, %L)) '
                'FROM tenancy.audit_heads h WHERE h.main_id = %s', 'last_pos', 'last_hash', 'hex', m))::jsonb;
            -- Copied before (its audit.rehome entry, naming this head, is on
            -- the new worker)? Then only the old chain's removal is left.
            copied := tenancy._citus_on_node(home.nodename, home.nodeport, format(
                'SELECT coalesce(max((change->>%L)::bigint)::text, %L) FROM tenancy.audit_log '
                'WHERE main_id = %s AND action = %L AND change->>%L = %L AND change->>%L = %L',
                'entries', 'none', m, 'audit.rehome', 'from', from_node, 'last_hash', old->>'last_hash'));
            IF copied <> 'none' THEN
                entries := copied::bigint;
                PERFORM tenancy._citus_on_node(w.nodename, w.nodeport, format($q$
                    DO $d$ BEGIN
                        PERFORM pg_advisory_xact_lock(1952804449, 1635083369);
                        IF NOT EXISTS (SELECT FROM tenancy.audit_heads h WHERE h.main_id = %1$s
                                       AND h.last_pos = %2$s AND h.last_hash = decode(%3$L, 'hex')) THEN
                            RAISE EXCEPTION 'the chain of main account %1$s moved on since it was copied';
                        END IF;
                        DELETE FROM tenancy.audit_log WHERE main_id = %1$s;
                        DELETE FROM tenancy.audit_chain WHERE main_id = %1$s;
                        DELETE FROM tenancy.audit_heads WHERE main_id = %1$s;
                    END $d$ $q$, m, old->>'last_pos', old->>'last_hash'));
                action := 'removed from the old node';
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- The old chain itself: verified, its head, its entries in chain
            -- order (read as the DBA, under no policy).
            old := tenancy._citus_on_node(w.nodename, w.nodeport, format($q$
                SELECT jsonb_build_object('ok', v.ok, 'reason', v.reason, 'n', v.entries,
                    'last_pos', h.last_pos, 'last_hash', encode(h.last_hash, 'hex'),
                    'entries', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                    'account_path', l.account_path::text, 'at', l.at, 'actor_kind', l.actor_kind,
                                    'actor_id', l.actor_id, 'credential_id', l.credential_id, 'action', l.action,
                                    'target', l.target, 'row_key', l.row_key, 'change', l.change)
                                  ORDER BY c.first_pos, u.k), '[]')
                                FROM tenancy.audit_chain c
                                CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
                                JOIN tenancy.audit_log l ON l.main_id = c.main_id AND l.xid = u.xid AND l.id = u.id
                                WHERE c.main_id = %1$s))
                FROM tenancy._audit_verify_main(%1$s, true) v, tenancy.audit_heads h
                WHERE h.main_id = %1$s$q$, m))::jsonb;
            entries := (old->>'n')::bigint;
            IF NOT (old->>'ok')::boolean THEN
                action := 'skipped: ' || coalesce(old->>'reason', 'does not verify');
            ELSE
                INSERT INTO tenancy.audit_inbox (main_id, account_path, at, actor_kind, actor_id, credential_id,
                                                 action, target, row_key, change)
                SELECT m, (x.e->>'account_path')::tenancy.account_path, (x.e->>'at')::timestamptz,
                       x.e->>'actor_kind', x.e->>'actor_id', (x.e->>'credential_id')::bigint, x.e->>'action',
                       x.e->>'target', x.e->'row_key', x.e->'change'
                FROM jsonb_array_elements(old->'entries') WITH ORDINALITY x(e, k) ORDER BY x.k;
                INSERT INTO tenancy.audit_inbox (main_id, account_path, at, actor_kind, actor_id, credential_id,
                                                 action, target, row_key, change)
                VALUES (m, m::text::tenancy.account_path, now(), 'dba', session_user, NULL, 'audit.rehome',
                        'audit chain', NULL,
                        jsonb_build_object('from', from_node, 'entries', entries,
                                           'last_pos', (old->>'last_pos')::bigint, 'last_hash', old->>'last_hash'));
                action := 'copied';
            END IF;
            RETURN NEXT;
        END LOOP;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION tenancy.audit_rehome() FROM PUBLIC;
