-- Self-test of the C/C++ error boundary: throws each kind of C++ exception (or a
-- PostgreSQL error through C++ frames) and must come back as a clean SQL error.
CREATE FUNCTION tenancy._boundary_selftest(kind text) RETURNS text
    AS 'MODULE_PATHNAME', 'tenancy_boundary_selftest'
    LANGUAGE C STRICT VOLATILE;
REVOKE ALL ON FUNCTION tenancy._boundary_selftest(text) FROM PUBLIC;
