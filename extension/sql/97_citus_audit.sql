-- The audit log on Citus (docs/operations/scale-out.md, "The audit log on
-- Citus"): each main account's entries live, are sealed and are verified on
-- the node holding its shard; the installation's chain (main_id 0) stays on
-- the coordinator.
--
-- Row triggers of distributed tables fire on the worker holding the row and
-- write its local audit_log, which that worker's sealer chains. What the
-- coordinator writes for a main account (events of its functions, row
-- triggers of coordinator-only tables) is written locally first, in the
-- writer's transaction as on one node, and moved by the coordinator's sealer
-- round (audit_seal) through audit_inbox, a table distributed like accounts
-- whose trigger on the shard writes the entry into that worker's log. Moving
-- it later, in the sealer's own transaction, and not in the writer's: Citus
-- refuses a client's read of placements that a SECURITY DEFINER function
-- wrote earlier in the same transaction (over another role's connection).
-- The coordinator's sealer leaves such entries out of its chains
-- (audit_seal.cpp).

-- Is this node the coordinator of a distributed install? false on one node.
CREATE FUNCTION tenancy._citus_audit_coordinator() RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT tenancy._citus_distributed() THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_local_group WHERE groupid = 0)' INTO found;
    RETURN found;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_coordinator() FROM PUBLIC;

-- The way to a worker's log: a row inserted here (distributed by main_id,
-- co-located with accounts) becomes an entry of the log of the node holding
-- the shard, with that node's id and transaction; nothing is stored here.
-- Empty and unused on one node. No role but a superuser may write it.
CREATE TABLE tenancy.audit_inbox (
    main_id bigint NOT NULL CHECK (main_id <> 0),
    account_path tenancy.account_path NOT NULL,
    at timestamptz NOT NULL,
    actor_kind text NOT NULL,
    actor_id text,
    credential_id bigint,
    action text NOT NULL,
    target text,
    row_key jsonb,
    change jsonb
);
ALTER TABLE tenancy.audit_inbox OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_inbox ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.audit_inbox FROM PUBLIC;

-- On the shard: the row becomes an entry of this node's log (the time is the
-- writer's, kept; id and transaction are this node's, as the sealer finds
-- entries by their transaction here) and is not stored.
CREATE FUNCTION tenancy._audit_inbox_deliver() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, credential_id,
                                   action, target, row_key, change)
    VALUES (NEW.main_id, nextval('tenancy.audit_seq'), pg_current_xact_id()::text::bigint, NEW.account_path,
            NEW.at, NEW.actor_kind, NEW.actor_id, NEW.credential_id, NEW.action, NEW.target, NEW.row_key,
            NEW.change);
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_inbox_deliver() FROM PUBLIC;
CREATE TRIGGER deliver BEFORE INSERT ON tenancy.audit_inbox
    FOR EACH ROW EXECUTE FUNCTION tenancy._audit_inbox_deliver();

-- Where the coordinator's forwarding starts: the sealer's snapshot when
-- distribute() ran. Entries committed as of it are in the coordinator's
-- chains and stay there; later ones go to the workers.
CREATE TABLE tenancy.audit_citus (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    sealed_snap pg_snapshot
);
ALTER TABLE tenancy.audit_citus OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_citus ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.audit_citus FROM PUBLIC;

-- Called by distribute(): makes the inbox a distributed table (its trigger
-- goes to every shard) and records where forwarding starts, under the
-- sealers' lock (held until distribute() commits, so no round runs between).
CREATE FUNCTION tenancy._citus_audit_distribute() RETURNS TABLE (object text, action text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);  -- audit_seal's
    INSERT INTO tenancy.audit_citus (sealed_snap) SELECT s.snap FROM tenancy.audit_sealer s
    ON CONFLICT (singleton) DO UPDATE SET sealed_snap = excluded.sealed_snap;
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    EXECUTE 'SELECT create_distributed_table(''tenancy.audit_inbox'', ''main_id'', '
            'colocate_with => ''tenancy.accounts'')';
    object := 'tenancy.audit_inbox';
    action := 'distributed by main_id: the coordinator''s audit entries of main accounts go to their shard''s node';
    RETURN NEXT;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_distribute() FROM PUBLIC;

-- The coordinator's part of a sealer round (audit_seal, under the sealers'
-- lock): its committed entries of main accounts go to their shards' nodes
-- and leave its log, in this transaction (Citus commits the workers' part
-- with it). Returns how many. A full scan of the coordinator's log (which
-- keeps only the installation's chain, and chains sealed before distribute()).
CREATE FUNCTION tenancy._citus_audit_forward() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    snap pg_snapshot;
    tids tid[];
    moved bigint;
BEGIN
    SELECT c.sealed_snap INTO snap FROM tenancy.audit_citus c;
    IF NOT FOUND THEN
        RETURN 0;  -- distribute() has not run here
    END IF;
    SELECT array_agg(l.ctid) INTO tids FROM tenancy.audit_log l
    WHERE l.main_id <> 0
      AND (snap IS NULL OR NOT pg_visible_in_snapshot(l.xid::text::xid8, snap));
    IF tids IS NULL THEN
        RETURN 0;
    END IF;
    INSERT INTO tenancy.audit_inbox (main_id, account_path, at, actor_kind, actor_id, credential_id, action,
                                     target, row_key, change)
    SELECT l.main_id, l.account_path, l.at, l.actor_kind, l.actor_id, l.credential_id, l.action, l.target,
           l.row_key, l.change
    FROM tenancy.audit_log l WHERE l.ctid = ANY (tids) ORDER BY l.xid, l.id;
    DELETE FROM tenancy.audit_log l WHERE l.ctid = ANY (tids);
    GET DIAGNOSTICS moved = ROW_COUNT;
    RETURN moved;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_forward() FROM PUBLIC;

-- Verification of one account's main chain on the node holding it: a router
-- query on the main account's row, whose target list Citus runs there.
CREATE FUNCTION tenancy._citus_audit_verify_at(m bigint, p tenancy.account_path)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    v jsonb;
BEGIN
    EXECUTE format('SELECT tenancy._audit_verify_subtree_json(a.main_id, %L::tenancy.account_path) '
                   'FROM tenancy.accounts a WHERE a.main_id = %s AND a.id = %s', p::text, m, m) INTO v;
    IF v IS NULL THEN
        RAISE EXCEPTION 'main account % not found on its shard', m USING ERRCODE = 'P0002';
    END IF;
    RETURN QUERY SELECT (v->>'ok')::boolean, (v->>'entries')::bigint, (v->>'first_bad')::bigint, v->>'reason';
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_verify_at(bigint, tenancy.account_path) FROM PUBLIC;

-- audit_purge() of main account m's chain on the worker holding its shard:
-- a router query on the main account's row, whose target list Citus runs
-- there, in the caller's transaction.
CREATE FUNCTION tenancy._citus_audit_purge_at(m bigint, before timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    deleted bigint;
BEGIN
    EXECUTE format('SELECT tenancy._audit_purge_main(a.main_id, %L::timestamptz) '
                   'FROM tenancy.accounts a WHERE a.main_id = %s AND a.id = %s', before, m, m) INTO deleted;
    IF deleted IS NULL THEN
        RAISE EXCEPTION 'main account % not found on its shard', m USING ERRCODE = 'P0002';
    END IF;
    RETURN deleted;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_purge_at(bigint, timestamptz) FROM PUBLIC;

-- audit_relocate() on every worker; a worker that cannot answer is an
-- error naming it.
CREATE FUNCTION tenancy._citus_audit_relocate_workers() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    w record;
    changed bigint := 0;
BEGIN
    FOR w IN EXECUTE 'SELECT nodename, nodeport, success, result '
                     'FROM run_command_on_workers(''SELECT tenancy.audit_relocate()'')' LOOP
        IF NOT w.success THEN
            RAISE EXCEPTION 'audit_relocate: node %:% failed: %', w.nodename, w.nodeport, w.result
                USING ERRCODE = '58000';
        END IF;
        changed := changed + w.result::bigint;
    END LOOP;
    RETURN changed;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_relocate_workers() FROM PUBLIC;

-- _audit_verify_subtree as one value (what a router query carries back).
CREATE FUNCTION tenancy._audit_verify_subtree_json(m bigint, p tenancy.account_path) RETURNS jsonb
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT to_jsonb(v) FROM tenancy._audit_verify_subtree(m, p) v $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_subtree_json(bigint, tenancy.account_path) FROM PUBLIC;

-- One row of audit_verify() as a worker returns it (json) to the coordinator.
CREATE TYPE tenancy._citus_audit_result AS (ok boolean, entries bigint, first_bad bigint, reason text,
                                            main_id bigint);

-- The DBA's verification of every chain on a distributed install: the
-- coordinator's (the installation's chain, and chains sealed there before
-- distribute()) and every worker's, each verified where it lives. A node that
-- cannot answer is a failed row (main_id NULL) naming it.
CREATE FUNCTION tenancy._citus_audit_verify_all()
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    -- Here: entries of main accounts outside a chain are on their way to a
    -- worker (_citus_audit_forward); only the installation's are judged.
    RETURN QUERY
    WITH outside AS MATERIALIZED (SELECT * FROM tenancy._audit_outside_chain() x WHERE x.main_id = 0)
    SELECT v.ok AND o.outside IS NULL, v.entries,
           CASE WHEN v.ok THEN o.first_id ELSE v.first_bad END,
           CASE WHEN v.ok AND o.outside IS NOT NULL THEN o.reason ELSE v.reason END,
           m.id
    FROM (SELECT x.main_id AS id FROM tenancy.audit_heads x
          UNION SELECT o2.main_id FROM outside o2) m
    CROSS JOIN LATERAL tenancy._audit_verify_main(m.id, false) v
    LEFT JOIN outside o ON o.main_id = m.id
    ORDER BY m.id;
    RETURN QUERY EXECUTE $q$
        SELECT CASE WHEN w.success THEN r.ok ELSE false END,
               CASE WHEN w.success THEN r.entries ELSE 0 END,
               r.first_bad,
               CASE WHEN w.success THEN r.reason
                    ELSE format('node %s:%s could not verify its chains: %s', w.nodename, w.nodeport, w.result) END,
               r.main_id
        FROM run_command_on_workers(
                 'SELECT coalesce(json_agg(v), ''[]'') FROM tenancy._audit_verify_dba(NULL) v') w
        LEFT JOIN LATERAL json_populate_recordset(NULL::tenancy._citus_audit_result,
                                                  CASE WHEN w.success THEN w.result::json END) r ON true
        ORDER BY 5$q$;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_audit_verify_all() FROM PUBLIC;

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

-- audit_page() (406_audit_page.sql) runs as its caller and asks whether this
-- is a Citus coordinator.
GRANT EXECUTE ON FUNCTION tenancy._citus_distributed(), tenancy._citus_audit_coordinator()
    TO tenancy_app, tenancy_admin;

-- pg_dump keeps the extension's tables' rows (90_dump.sql): these two as
-- well (the inbox is always empty; audit_citus is the coordinator's marker).
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_inbox', '');
SELECT pg_catalog.pg_extension_config_dump('tenancy.audit_citus', '');
