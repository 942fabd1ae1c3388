-- account_path: selectivity estimators for <@ and @> that know subtree sizes
-- (extension/src/path_selectivity.cpp), and the typanalyze that stores the
-- per-depth statistics they read. Columns analyzed before this update keep
-- their old statistics until the next ANALYZE (the estimators then use the
-- histogram alone).
CREATE FUNCTION tenancy.account_path_typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_typanalyze' LANGUAGE C STABLE STRICT PARALLEL SAFE;
ALTER TYPE tenancy.account_path SET (ANALYZE = tenancy.account_path_typanalyze);

CREATE FUNCTION tenancy.account_path_descendant_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_descendant_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_ancestor_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_ancestor_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
ALTER OPERATOR tenancy.<@ (tenancy.account_path, tenancy.account_path)
    SET (RESTRICT = tenancy.account_path_descendant_sel);
ALTER OPERATOR tenancy.@> (tenancy.account_path, tenancy.account_path)
    SET (RESTRICT = tenancy.account_path_ancestor_sel);
-- 0.1's estimator (the operator tried on MCVs and histogram entries); its C
-- symbol stays in the library for the frozen 0.1 script.
DROP FUNCTION tenancy.account_path_tree_sel(internal, oid, internal, integer);
