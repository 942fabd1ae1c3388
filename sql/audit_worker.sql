-- The background sealer: with tenancy in shared_preload_libraries and this
-- database in tenancy.audit_databases (tests/postgresql.conf), committed
-- entries get sealed without anyone calling audit_seal().
\set VERBOSITY terse
SELECT 'contrib_regression' = ANY (string_to_array(current_setting('tenancy.audit_databases'), ',')) AS listed;

SELECT tenancy.create_main_account('Worker Main', 'owner@worker.test', 'pw-worker-1') AS main \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
SELECT count(*) > 0 AS written FROM tenancy.audit_log WHERE main_id = :main_id;

-- Wait (at most 60 s) until the sealer has linked them.
CREATE FUNCTION pg_temp.wait_sealed(m bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..600 LOOP
        IF NOT EXISTS (SELECT FROM tenancy.audit_log l
                       WHERE l.main_id = m
                         AND NOT EXISTS (SELECT FROM tenancy.audit_chain c
                                         WHERE c.main_id = l.main_id AND l.id = ANY (c.entry_ids))) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END $$;
SELECT pg_temp.wait_sealed(:main_id) AS sealed;
SELECT count(*) FILTER (WHERE c.first_pos IS NULL) AS unsealed, min(c.first_pos) AS first_pos,
       bool_and(c.sealed_at IS NOT NULL) AS all_sealed
FROM tenancy.audit_log l LEFT JOIN tenancy.audit_chain c ON c.main_id = l.main_id AND l.id = ANY (c.entry_ids)
WHERE l.main_id = :main_id;
SELECT ok, reason FROM tenancy.audit_verify(:'main');

-- After a round, the sealer keeps empty pages in the log's free space map
-- (audit_log_space.cpp) ...
SELECT a.path::text AS main_path FROM tenancy.accounts a WHERE a.id = :main_id \gset
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.burst', 'x', jsonb_build_object('n', g)))
FROM generate_series(1, 2000) g;
SELECT pg_temp.wait_sealed(:main_id) AS sealed;
SELECT pg_relation_size('tenancy.audit_log') / 8192 AS pages_before \gset
CREATE TEMP TABLE used_before AS SELECT DISTINCT (l.ctid::text::point)[0]::bigint AS blk FROM tenancy.audit_log l;
SELECT :pages_before - count(*) > 0 AS empty_pages_ahead FROM used_before;
-- ... where the next writes land, without extending the log.
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.after_burst', 'x', jsonb_build_object('n', g)))
FROM generate_series(1, 100) g;
SELECT count(*) > 0 AS landed_in_empty_pages FROM tenancy.audit_log l
WHERE l.action = 'test.after_burst' AND (l.ctid::text::point)[0]::bigint < :pages_before
  AND (l.ctid::text::point)[0]::bigint NOT IN (SELECT blk FROM used_before);
SELECT pg_temp.wait_sealed(:main_id) AS sealed;
SELECT ok, reason FROM tenancy.audit_verify(:'main');
