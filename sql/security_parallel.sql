-- The context reaches parallel workers: a parallel scan under RLS returns
-- exactly the subtree's rows, whether every worker reads and verifies the
-- context itself (the policy) or the leader computes it once (an InitPlan).
\set VERBOSITY terse
SELECT tenancy.create_main_account('Parallel Co', 'parallel@example.test', 'a long enough password') AS m \gset
SELECT tenancy.admin_create_api_key(:'m', 'owner') AS m_key \gset
BEGIN;
SELECT tenancy.authenticate(:'m_key') IS NOT NULL AS ok;
SELECT tenancy.create_account(:'m', 'East') AS east \gset
SELECT tenancy.create_account(:'east', 'East 1') AS east1 \gset
SELECT tenancy.create_account(:'m', 'West') AS west \gset
SELECT tenancy.create_api_key(:'east', 'east key', 'viewer') AS east_key \gset
COMMIT;
CREATE SCHEMA IF NOT EXISTS regress_parallel;
GRANT USAGE ON SCHEMA regress_parallel TO tenancy_app;
CREATE TABLE regress_parallel.events (id bigint, payload text);
SELECT tenancy.protect('regress_parallel.events', 'calls');
-- 400,000 rows spread over the four accounts (East 1 gets every fourth).
INSERT INTO regress_parallel.events (id, payload, account_path)
SELECT i, 'event ' || i, (ARRAY(SELECT path FROM tenancy.accounts
                               WHERE main_id = (SELECT main_id FROM tenancy.accounts WHERE public_id = :'m')
                               ORDER BY path))[1 + i % 4]
FROM generate_series(1, 400000) AS i;
ANALYZE regress_parallel.events;
-- The truth, counted by the superuser with an explicit subtree condition.
SELECT count(*) AS east_subtree_rows FROM regress_parallel.events
WHERE account_path OPERATOR(tenancy.<@) (SELECT path FROM tenancy.accounts WHERE public_id = :'east');

-- Clients log in as their own roles, members of tenancy_app (pg_regress
-- creates regress_client: REGRESS_OPTS in the Makefile).
SET client_min_messages = warning;  -- the grant may be there already
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET enable_indexscan = off;
SET enable_bitmapscan = off;
BEGIN;
SELECT tenancy.authenticate(:'east_key') = :'east' AS east;
EXPLAIN (COSTS OFF) SELECT count(*) FROM regress_parallel.events;
SELECT count(*) AS east_rows_via_policy FROM regress_parallel.events;
-- The leader computes the context once and passes it to the workers.
EXPLAIN (COSTS OFF) SELECT count(*) FROM regress_parallel.events
WHERE account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path());
SELECT count(*) AS east_rows_leader_initplan FROM regress_parallel.events
WHERE account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path());
COMMIT;

-- The whole plan in a worker (force_parallel_mode): the worker verifies the
-- leader's token.
SET force_parallel_mode = on;
BEGIN;
SELECT tenancy.authenticate(:'east_key') = :'east' AS east;
SELECT count(*) AS east_rows_forced_parallel FROM regress_parallel.events;
SELECT tenancy.current_account() = :'east' AS worker_sees_context;
COMMIT;
-- A session-scoped context is refreshed by the leader before workers start.
SELECT tenancy.authenticate(:'east_key', session => true) = :'east' AS session;
SELECT count(*) AS east_rows_session_parallel FROM regress_parallel.events;
SELECT tenancy.current_account() = :'east' AS worker_sees_session;
SELECT tenancy.reset();
-- Without a context, workers see nothing either.
SELECT count(*) AS rows_without_context FROM regress_parallel.events;
RESET force_parallel_mode;
