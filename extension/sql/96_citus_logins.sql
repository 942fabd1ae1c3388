-- Citus scale-out: the worker logins of tenancy_app and tenancy_owner
-- (docs/operations/scale-out.md).
--
-- Citus runs a statement's shard queries over connections to the workers made
-- as the current role. The gateway runs each request as tenancy_app, and a
-- shard move (citus_move_shard_placement(), citus_rebalance_start()) connects
-- as the owner of the tables, tenancy_owner, to create the shards on the
-- target (their triggers too: it needs CREATE on the schema and EXECUTE on
-- the trigger functions there; the rows are copied as the DBA). Both are
-- NOLOGIN (no client may log in as them): on the workers only, each may log
-- in, with a random password that only the coordinator holds, in
-- pg_dist_authinfo (readable by superusers only). The workers' pg_hba must
-- still keep clients off (the suite's does: only the superuser without a
-- password). Each call draws new passwords: run it again after
-- citus_add_node() (Citus creates the roles there NOLOGIN, as on the
-- coordinator) and after ALTER EXTENSION tenancy UPDATE (new functions).
CREATE FUNCTION tenancy.citus_worker_logins() RETURNS TABLE (node text, action text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    r text;
    password text;
    failed text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database' USING ERRCODE = '55000';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenancy.citus_worker_logins() is for the DBA (a superuser)'
            USING ERRCODE = '42501';
    END IF;
    FOREACH r IN ARRAY ARRAY['tenancy_app', 'tenancy_owner'] LOOP
        password := tenancy.random_token(32);
        -- On the workers only: the coordinator's role stays NOLOGIN.
        EXECUTE $q$SELECT string_agg(nodename || ':' || nodeport || ' ' || result, '; ')
                   FROM run_command_on_workers($1) WHERE NOT success$q$
            USING format('SET citus.enable_ddl_propagation = off; '
                         'ALTER ROLE %I LOGIN PASSWORD %L', r, password)
                  || CASE WHEN r = 'tenancy_owner'
                          THEN '; GRANT CREATE ON SCHEMA tenancy TO tenancy_owner'
                               '; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tenancy TO tenancy_owner'
                          ELSE '' END
            INTO failed;
        IF failed IS NOT NULL THEN
            RAISE EXCEPTION 'could not give % a login on the workers: %', r, failed
                USING ERRCODE = '55000';
        END IF;
        EXECUTE 'DELETE FROM pg_catalog.pg_dist_authinfo WHERE rolename = $1' USING r;
        EXECUTE 'INSERT INTO pg_catalog.pg_dist_authinfo (nodeid, rolename, authinfo) '
                'VALUES (0, $1, $2)' USING r, 'password=' || password;
        RETURN QUERY EXECUTE 'SELECT nodename || '':'' || nodeport, '
                             '$1 || '' may log in (password in pg_dist_authinfo)'' '
                             'FROM pg_catalog.pg_dist_node WHERE groupid <> 0 ORDER BY nodeid' USING r;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION tenancy.citus_worker_logins() FROM PUBLIC;
