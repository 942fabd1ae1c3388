-- The background sealer: with tenancy in shared_preload_libraries and this
-- database in tenancy.audit_databases (tests/postgresql.conf), committed
-- entries get sealed without anyone calling audit_seal().
\set VERBOSITY terse
SELECT 'contrib_regression' = ANY (string_to_array(current_setting('tenancy.audit_databases'), ',')) AS listed;

SELECT tenancy.create_main_account('Worker Main', 'owner@worker.test', 'pw-worker-1') AS main \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset
SELECT count(*) > 0 AS written FROM tenancy.audit_log WHERE main_id = :main_id;

-- Wait (at most 60 s) until the sealer has linked them.
SELECT set_config('audit_test.main_id', :'main_id', false) IS NOT NULL AS set;
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM tenancy.audit_log l
                              WHERE l.main_id = current_setting('audit_test.main_id')::bigint
                                AND NOT EXISTS (SELECT FROM tenancy.audit_chain c
                                                WHERE c.main_id = l.main_id AND l.id = ANY (c.entry_ids)));
        PERFORM pg_sleep(0.1);
    END LOOP;
END $$;
SELECT count(*) FILTER (WHERE c.first_pos IS NULL) AS unsealed, min(c.first_pos) AS first_pos,
       bool_and(c.sealed_at IS NOT NULL) AS all_sealed
FROM tenancy.audit_log l LEFT JOIN tenancy.audit_chain c ON c.main_id = l.main_id AND l.id = ANY (c.entry_ids)
WHERE l.main_id = :main_id;
SELECT ok, reason FROM tenancy.audit_verify(:'main');
