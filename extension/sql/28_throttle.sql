-- Login throttling in shared memory (extension/src/throttle.cpp): a failure
-- count that survives a rollback. The SQL wrappers and the table counter are
-- in 301_identity_throttle_audit.sql. Keys are login names ('user:<email>', ...), lower case.
-- Every function returns NULL when tenancy.so was not loaded through
-- shared_preload_libraries (no shared table): callers then rely on the table
-- counter alone.

-- May the attempt go on? Counts it as a failure at once (until
-- _throttle_success); false, counting nothing, while the key is throttled.
CREATE FUNCTION tenancy._throttle_attempt(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_attempt' LANGUAGE C VOLATILE STRICT;
-- Is the key throttled now? Counts nothing.
CREATE FUNCTION tenancy._throttle_check(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_check' LANGUAGE C VOLATILE STRICT;
-- Failures within the window, attempts under way included (audit detail:
-- shows attempts whose own entries a rollback discarded).
CREATE FUNCTION tenancy._throttle_count(login_key text) RETURNS integer
    AS 'MODULE_PATHNAME', 'tenancy_throttle_count' LANGUAGE C VOLATILE STRICT;
-- Forgets the key's failures (after a success).
CREATE FUNCTION tenancy._throttle_success(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_success' LANGUAGE C VOLATILE STRICT;
-- Is the shared table there (tenancy in shared_preload_libraries)?
CREATE FUNCTION tenancy._throttle_available() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_throttle_available' LANGUAGE C VOLATILE;
-- DBA: moves every recorded failure `by` into the past, in shared memory and
-- in this database's table tenancy.login_failures; returns the shared entries
-- touched (NULL without the preload). Lets the tests end a cooling period;
-- '1 day' lifts every lock. The advisory lock (key: 'tenancy' in ASCII) is the
-- one the login audit writer holds while it checks and inserts a queued row,
-- so no row comes back un-rewound.
CREATE FUNCTION tenancy._throttle_rewind_shared(by interval) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_throttle_rewind' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION tenancy._throttle_rewind(by interval) RETURNS bigint
    LANGUAGE plpgsql VOLATILE STRICT
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    touched bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(32762622053868409);
    touched := tenancy._throttle_rewind_shared(by);
    UPDATE tenancy.login_failures f SET failed_at = f.failed_at - by;
    RETURN touched;
END $$;

REVOKE ALL ON FUNCTION tenancy._throttle_attempt(text), tenancy._throttle_check(text), tenancy._throttle_count(text),
    tenancy._throttle_success(text), tenancy._throttle_available(),
    tenancy._throttle_rewind_shared(interval), tenancy._throttle_rewind(interval) FROM PUBLIC;

-- The failed-login queue (extension/src/login_queue.cpp): what a failed login
-- writes in the caller's transaction, kept in shared memory until that
-- transaction ends and written again by a background worker if it did not
-- commit. NULL without shared_preload_libraries (and on a standby); false
-- when the queue is full.
-- The table counter row of a failure _throttle_attempt counted (login_key as
-- given to it).
CREATE FUNCTION tenancy._login_queue_row(login_key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_row' LANGUAGE C VOLATILE STRICT;
-- A failed login's audit entries: kind 'user' or 'sub_user', the user's id if
-- known, the login name as audited, the main account email typed (sub-user),
-- the reason and the recent failures.
CREATE FUNCTION tenancy._login_queue_audit(kind text, user_id bigint, name text, main_name text,
                                           reason text, recent_failures integer) RETURNS boolean
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_audit' LANGUAGE C VOLATILE;
-- Records queued, every database (tests, monitoring).
CREATE FUNCTION tenancy._login_queue_length() RETURNS integer
    AS 'MODULE_PATHNAME', 'tenancy_login_queue_length' LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION tenancy._login_queue_row(text),
    tenancy._login_queue_audit(text, bigint, text, text, text, integer),
    tenancy._login_queue_length() FROM PUBLIC;
