-- tenancy install script, assembled from extension/sql/*.sql in name order.
\echo Use "CREATE EXTENSION tenancy" to load this file. \quit

COMMENT ON SCHEMA tenancy IS 'Hierarchical accounts, request context, row-level security and audit';
