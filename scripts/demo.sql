-- The demo tree scripts/run seeds once: an agency with two client accounts,
-- one of them with a region below it, and a bootstrap API key. Prints the key
-- (only when it creates the tree).
\set QUIET on
SELECT NOT EXISTS (SELECT FROM tenancy.accounts WHERE name = 'Demo Agency') AS seed \gset
\if :seed
SELECT tenancy.create_main_account('Demo Agency', 'owner@demo.test', 'demo password 1', 'enterprise') AS agency \gset
SELECT tenancy.admin_create_api_key(:'agency', 'demo bootstrap') AS key \gset
BEGIN;
SELECT tenancy.authenticate(:'key') IS NOT NULL AS ok \gset
SELECT tenancy.create_account(:'agency', 'Acme Dental') AS acme \gset
SELECT tenancy.create_account(:'acme', 'Acme Dental North') AS acme_north \gset
SELECT tenancy.create_account(:'agency', 'Bravo Clinics') AS bravo \gset
COMMIT;
\echo :key
\endif
