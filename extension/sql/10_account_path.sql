-- tenancy.account_path: the path of account ids from a main account down to an
-- account ('17.4031.90211'). Layout and algorithms: extension/src/account_path_codec.hpp.
--
-- LEAKPROOF is set only on functions that cannot raise an error for any
-- valid input (comparisons, <@, @>, accessors that never fail): row-level
-- security policies use <@, and the planner pushes user predicates below a
-- policy only through leakproof operators. Functions that can fail (input,
-- ||, subpath, to_account_path) are not leakproof: their errors depend on data.

CREATE TYPE tenancy.account_path;

CREATE FUNCTION tenancy.account_path_in(cstring) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_out(tenancy.account_path) RETURNS cstring
    AS 'MODULE_PATHNAME', 'account_path_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_recv(internal) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_send(tenancy.account_path) RETURNS bytea
    AS 'MODULE_PATHNAME', 'account_path_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
-- ANALYZE: the standard statistics plus per-depth subtree sizes, which the
-- <@ and @> estimators read (extension/src/path_selectivity.cpp).
CREATE FUNCTION tenancy.account_path_typanalyze(internal) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_typanalyze' LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE TYPE tenancy.account_path (
    INPUT = tenancy.account_path_in,
    OUTPUT = tenancy.account_path_out,
    RECEIVE = tenancy.account_path_recv,
    SEND = tenancy.account_path_send,
    ANALYZE = tenancy.account_path_typanalyze,
    INTERNALLENGTH = VARIABLE,
    ALIGNMENT = int4,  -- required for varlena; packed 1-byte-header values are not padded
    STORAGE = extended
);
COMMENT ON TYPE tenancy.account_path IS
    'Path of account ids from a main account down to an account, e.g. 17.4031.90211';

-- Comparison (tree order: a node before its descendants, siblings by id).
CREATE FUNCTION tenancy.account_path_cmp(tenancy.account_path, tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_eq(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_ne(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_lt(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_le(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_gt(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_ge(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_sortsupport(internal) RETURNS void
    AS 'MODULE_PATHNAME', 'account_path_sortsupport' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_hash(tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION tenancy.account_path_hash_extended(tenancy.account_path, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

-- Planner support: selectivity of <@ (a subtree: the histogram range
-- [P, subtree_upper(P)) and the per-depth subtree sizes) and @> (the
-- ancestors of P: the sum of their equality selectivities), and the btree
-- index conditions.
CREATE FUNCTION tenancy.account_path_descendant_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_descendant_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_ancestor_sel(internal, oid, internal, integer) RETURNS float8
    AS 'MODULE_PATHNAME', 'account_path_ancestor_sel' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_descendant_support(internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'account_path_descendant_support' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_ancestor_support(internal) RETURNS internal
    AS 'MODULE_PATHNAME', 'account_path_ancestor_support' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- a <@ b: a is b or below b.  a @> b: a is b or above b.
CREATE FUNCTION tenancy.account_path_descendant(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_descendant' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF
    SUPPORT tenancy.account_path_descendant_support;
CREATE FUNCTION tenancy.account_path_ancestor(tenancy.account_path, tenancy.account_path) RETURNS boolean
    AS 'MODULE_PATHNAME', 'account_path_ancestor' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF
    SUPPORT tenancy.account_path_ancestor_support;

CREATE OPERATOR tenancy.= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_eq, COMMUTATOR = OPERATOR(tenancy.=),
    NEGATOR = OPERATOR(tenancy.<>), RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES);
CREATE OPERATOR tenancy.<> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ne, COMMUTATOR = OPERATOR(tenancy.<>),
    NEGATOR = OPERATOR(tenancy.=), RESTRICT = neqsel, JOIN = neqjoinsel);
CREATE OPERATOR tenancy.< (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_lt, COMMUTATOR = OPERATOR(tenancy.>),
    NEGATOR = OPERATOR(tenancy.>=), RESTRICT = scalarltsel, JOIN = scalarltjoinsel);
CREATE OPERATOR tenancy.<= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_le, COMMUTATOR = OPERATOR(tenancy.>=),
    NEGATOR = OPERATOR(tenancy.>), RESTRICT = scalarlesel, JOIN = scalarlejoinsel);
CREATE OPERATOR tenancy.> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_gt, COMMUTATOR = OPERATOR(tenancy.<),
    NEGATOR = OPERATOR(tenancy.<=), RESTRICT = scalargtsel, JOIN = scalargtjoinsel);
CREATE OPERATOR tenancy.>= (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ge, COMMUTATOR = OPERATOR(tenancy.<=),
    NEGATOR = OPERATOR(tenancy.<), RESTRICT = scalargesel, JOIN = scalargejoinsel);
CREATE OPERATOR tenancy.<@ (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_descendant, COMMUTATOR = OPERATOR(tenancy.@>),
    RESTRICT = tenancy.account_path_descendant_sel, JOIN = contjoinsel);
CREATE OPERATOR tenancy.@> (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path,
    FUNCTION = tenancy.account_path_ancestor, COMMUTATOR = OPERATOR(tenancy.<@),
    RESTRICT = tenancy.account_path_ancestor_sel, JOIN = contjoinsel);

CREATE OPERATOR CLASS tenancy.account_path_ops
    DEFAULT FOR TYPE tenancy.account_path USING btree AS
        OPERATOR 1 tenancy.<,
        OPERATOR 2 tenancy.<=,
        OPERATOR 3 tenancy.=,
        OPERATOR 4 tenancy.>=,
        OPERATOR 5 tenancy.>,
        FUNCTION 1 tenancy.account_path_cmp(tenancy.account_path, tenancy.account_path),
        FUNCTION 2 tenancy.account_path_sortsupport(internal),
        FUNCTION 4 pg_catalog.btequalimage(oid);
CREATE OPERATOR CLASS tenancy.account_path_hash_ops
    DEFAULT FOR TYPE tenancy.account_path USING hash AS
        OPERATOR 1 tenancy.=,
        FUNCTION 1 tenancy.account_path_hash(tenancy.account_path),
        FUNCTION 2 tenancy.account_path_hash_extended(tenancy.account_path, bigint);

-- Tree functions (ltree's names and position rules).
CREATE FUNCTION tenancy.nlevel(tenancy.account_path) RETURNS integer
    AS 'MODULE_PATHNAME', 'account_path_nlevel' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.nlevel(tenancy.account_path) IS 'number of labels (1 for a main account)';
CREATE FUNCTION tenancy.parent(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_parent' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.parent(tenancy.account_path) IS 'path without its last label; NULL for a main account';
CREATE FUNCTION tenancy.root(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_root' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.root(tenancy.account_path) IS 'path of the main account (first label)';
CREATE FUNCTION tenancy.root_id(tenancy.account_path) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_root_id' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.root_id(tenancy.account_path) IS 'id of the main account (first label)';
CREATE FUNCTION tenancy.leaf(tenancy.account_path) RETURNS bigint
    AS 'MODULE_PATHNAME', 'account_path_leaf' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.leaf(tenancy.account_path) IS 'id of the account itself (last label)';
CREATE FUNCTION tenancy.subpath(tenancy.account_path, integer, integer) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subpath3' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.subpath(tenancy.account_path, integer, integer) IS
    'labels from offset (negative: from the end), len labels (negative: leave that many off the end)';
CREATE FUNCTION tenancy.subpath(tenancy.account_path, integer) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subpath2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.subpath(tenancy.account_path, integer) IS
    'labels from offset (negative: from the end) to the end';
CREATE FUNCTION tenancy.lca(tenancy.account_path, tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_lca2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.lca(tenancy.account_path, tenancy.account_path) IS
    'longest common proper ancestor (as ltree); NULL if none';
CREATE FUNCTION tenancy.lca(tenancy.account_path[]) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_lca_array' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.lca(tenancy.account_path[]) IS
    'longest common proper ancestor of all elements (as ltree); NULL if none, for an empty array or a NULL element';
CREATE FUNCTION tenancy.account_path_concat(tenancy.account_path, tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_concat' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION tenancy.account_path_append(tenancy.account_path, bigint) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_append' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR tenancy.|| (
    LEFTARG = tenancy.account_path, RIGHTARG = tenancy.account_path, FUNCTION = tenancy.account_path_concat);
CREATE OPERATOR tenancy.|| (
    LEFTARG = tenancy.account_path, RIGHTARG = bigint, FUNCTION = tenancy.account_path_append);
CREATE FUNCTION tenancy.labels(tenancy.account_path) RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'account_path_labels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.labels(tenancy.account_path) IS 'the account ids of the path, main account first';
CREATE FUNCTION tenancy.to_account_path(bigint[]) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_from_labels' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tenancy.to_account_path(bigint[]) IS 'path from account ids, main account first';
CREATE FUNCTION tenancy.ancestors(tenancy.account_path) RETURNS tenancy.account_path[]
    AS 'MODULE_PATHNAME', 'account_path_ancestors' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.ancestors(tenancy.account_path) IS
    'the path and all its ancestors, main account first: the values x with x @> path';
CREATE FUNCTION tenancy.subtree_upper(tenancy.account_path) RETURNS tenancy.account_path
    AS 'MODULE_PATHNAME', 'account_path_subtree_upper' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION tenancy.subtree_upper(tenancy.account_path) IS
    'exclusive upper bound of the subtree in sort order (the next sibling): x <@ p  <=>  p <= x < subtree_upper(p)';
