-- 0.2 -> 0.3: audit_entries(), the DBA's reader of every node's audit log (as in
-- extension/sql/97_citus_audit.sql).

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
