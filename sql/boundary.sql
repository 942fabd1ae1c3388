-- The C/C++ error boundary: every kind of C++ exception, and a PostgreSQL error
-- raised through C++ frames, must become a clean SQL error with a SQLSTATE, and
-- the backend must survive every one of them.
CREATE FUNCTION pg_temp.sqlstate_of(kind text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tenancy._boundary_selftest(kind);
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

SELECT pg_backend_pid() AS pid_before \gset
SELECT tenancy._boundary_selftest('destructors_run') AS destructors_before;
SELECT tenancy._boundary_selftest('ok');

-- Each kind, reported at top level (message, detail, hint)...
SELECT tenancy._boundary_selftest('sql_error');
SELECT tenancy._boundary_selftest('runtime_error');
SELECT tenancy._boundary_selftest('bad_alloc');
SELECT tenancy._boundary_selftest('unknown');
SELECT tenancy._boundary_selftest('pg_error');
SELECT tenancy._boundary_selftest('no such kind');

-- ...and with its SQLSTATE, caught by PL/pgSQL like any other error.
SELECT kind, pg_temp.sqlstate_of(kind)
FROM unnest(ARRAY['ok', 'sql_error', 'runtime_error', 'bad_alloc', 'unknown', 'pg_error']) AS kind;

-- The C++ frames unwound: one destructor per call above (8 + 6), none skipped
-- by a longjmp.
SELECT tenancy._boundary_selftest('destructors_run') AS destructors_after;

-- The backend is still alive and usable.
SELECT pg_backend_pid() = :pid_before AS same_backend, 1 + 1 AS still_works;

-- Not callable by ordinary roles.
SELECT has_function_privilege('public', 'tenancy._boundary_selftest(text)', 'execute') AS public_can_execute;
