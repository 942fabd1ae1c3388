-- tenancy upgrade 0.1 -> 0.2, assembled from extension/updates/0.1--0.2/*.sql
-- in name order. Each part carries one concern's changes to the schema that
-- 0.1 installed (extension/releases/tenancy--0.1.sql); a fresh install of 0.2
-- (extension/sql/) and 0.1 updated by this script must end up the same, which
-- tests/suites/11_upgrade.sh checks object by object.
\echo Use "ALTER EXTENSION tenancy UPDATE TO '0.2'" to load this file. \quit
