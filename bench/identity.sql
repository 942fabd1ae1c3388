-- Identity latencies (psql -f bench/identity.sql on a fresh database with the extension).
\set QUIET on
SELECT tenancy.create_main_account('Bench', 'bench@b.test', 'bench-pass-1') AS acc \gset
BEGIN; SELECT tenancy.login('bench@b.test', 'bench-pass-1') AS tok \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'acc', 'k') AS key \gset
SET bench.tok = :'tok';
SET bench.key = :'key';
\timing on
-- 20 logins (argon2id)
SELECT count(tenancy.login('bench@b.test', 'bench-pass-1')) FROM generate_series(1, 20);
-- 20 failed logins
SELECT count(tenancy.login('nobody@b.test', 'x')) FROM generate_series(1, 20);
-- 2000 session-token authentications
DO $$ DECLARE t text := current_setting('bench.tok'); BEGIN
  FOR i IN 1..2000 LOOP PERFORM tenancy.authenticate(t); END LOOP; END $$;
-- 2000 API-key authentications
DO $$ DECLARE t text := current_setting('bench.key'); BEGIN
  FOR i IN 1..2000 LOOP PERFORM tenancy.authenticate(t); END LOOP; END $$;
-- wrong password for an existing email (5 verified, then throttled), unknown email
SELECT count(tenancy.login('bench@b.test', 'wrong-' || g)) FROM generate_series(1, 5) g;
SELECT count(tenancy.login('bench@b.test', 'wrong-' || g)) FROM generate_series(1, 20) g;
SELECT count(tenancy.login('nobody2@b.test', 'wrong-' || g)) FROM generate_series(1, 5) g;
