-- tenancy upgrade 0.2 -> 0.3, assembled from extension/updates/0.2--0.3/*.sql
-- in name order. Each part carries one concern's changes to the schema that
-- 0.2 installed (extension/releases/tenancy--0.2.sql); a fresh install of 0.3
-- (extension/sql/) and 0.2 updated by this script must end up the same, which
-- tests/suites/11_upgrade.sh checks object by object.
\echo Use "ALTER EXTENSION tenancy UPDATE TO '0.3'" to load this file. \quit
