-- Events and housekeeping of the audit log: audit_event() for what is not a row
-- change, audit_purge() and audit_relocate() for space.

-- detail without the members whose key may name a credential (*hash*,
-- *secret*, *token*, password*: the row trigger's rule for column names), at
-- any depth (extension/src/audit_detail.cpp).
CREATE FUNCTION tenancy._audit_redact_detail(detail jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'tenancy_audit_redact_detail' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._audit_redact_detail(jsonb) FROM PUBLIC;

-- The detail's size in bytes (uncompressed), read without detoasting it.
CREATE FUNCTION tenancy._audit_detail_size(detail jsonb) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_audit_detail_size' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
REVOKE ALL ON FUNCTION tenancy._audit_detail_size(jsonb) FROM PUBLIC;

-- An event that is not a row change, recorded in the active account. Two
-- kinds of writer:
--   * the system: the gateway (its login role is a member of tenancy_gateway;
--     it then does SET LOCAL ROLE tenancy_app, so session_user is checked, which
--     SET ROLE does not change) and superuser sessions. Any action name
--     (api.request: method, route, status, request id); detail up to 64 kB.
--   * every other client: only the reserved namespace app.* (so nothing a
--     client writes can pass for a login, a row change or an API call), only
--     with a role that may write the account's settings (owner, admin: those
--     who configure the account may add to its record; not member,
--     support_agent, viewer, sub_user), and a detail up to 8 kB.
-- The extension's own events (logins, context switches, ...) go through
-- _audit_record, which no client may call. Targets are at most 1000 bytes.
-- Members of detail whose key looks like a secret are dropped, also nested
-- ones. Every refusal raises before anything is written.
CREATE FUNCTION tenancy.audit_event(action text, target text, detail jsonb DEFAULT NULL) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    -- The gateway's login role, or a superuser (20_roles.sql).
    system_writer boolean := tenancy._session_is_gateway();
    detail_cap bigint := CASE WHEN system_writer THEN 65536 ELSE 8192 END;
    detail_size bigint := tenancy._audit_detail_size(detail);
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    IF action IS NULL OR action !~ '^[A-Za-z][A-Za-z0-9_.:-]{0,99}$' THEN
        RAISE EXCEPTION 'audit action must be 1 to 100 characters [A-Za-z0-9_.:-], starting with a letter'
            USING ERRCODE = '22023';
    END IF;
    IF action ~ '^app\.' THEN
        IF action !~ '^app\.[A-Za-z0-9]' THEN
            RAISE EXCEPTION 'audit action "%" needs a name after "app."', action USING ERRCODE = '22023';
        END IF;
        PERFORM tenancy._refuse_restricted();
        IF NOT tenancy.may('settings', 'write') THEN
            RAISE EXCEPTION 'role % may not record audit events (app.* needs write access to settings)',
                tenancy._context_field('role') USING ERRCODE = '42501';
        END IF;
    ELSIF NOT system_writer THEN
        RAISE EXCEPTION 'audit action "%" is reserved for the system: a client records only app.* events', action
            USING ERRCODE = '42501',
                  HINT = 'Name the event app.<something>, for instance app.' || lower(action) || '.';
    END IF;
    IF octet_length(target) > 1000 THEN
        RAISE EXCEPTION 'audit target is % bytes, more than the 1000 allowed', octet_length(target)
            USING ERRCODE = '54000';
    END IF;
    IF detail_size > detail_cap THEN
        RAISE EXCEPTION 'audit detail is % bytes of jsonb, more than the % allowed', detail_size, detail_cap
            USING ERRCODE = '54000';
    END IF;
    IF detail IS NOT NULL AND jsonb_typeof(detail) <> 'object' THEN
        RAISE EXCEPTION 'audit detail must be a JSON object' USING ERRCODE = '22023';
    END IF;
    IF detail IS NOT NULL THEN
        detail := tenancy._audit_redact_detail(detail);
    END IF;
    -- A restricted context (MFA pending, password change) has a path no row
    -- lies under; the gateway's record of its refused request goes to the
    -- session's account, where its owners read it.
    IF tenancy._context_field('role') IN ('mfa_pending', 'password_change') THEN
        RETURN tenancy._audit_record(tenancy.current_main_id(),
            (SELECT a.path FROM tenancy.accounts a
             WHERE a.main_id = tenancy.current_main_id() AND a.public_id = tenancy._context_field('account')),
            action, target, detail);
    END IF;
    RETURN tenancy._audit_record(tenancy.current_main_id(), tenancy.current_path(), action, target, detail);
END $$;

-- DBA: delete the sealed entries of an account's main chain older than
-- `before`. The head keeps the last purged position and hash as a checkpoint
-- (the remaining chain still verifies from it), and a new entry records the
-- purge. Returns how many entries were deleted. On a Citus coordinator the
-- chain is purged where it lives, on the worker holding the main account's
-- shard (97_citus_audit.sql), in this transaction; and here too, where a
-- chain sealed before distribute() stays.
CREATE FUNCTION tenancy.audit_purge(account text, before timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
    deleted bigint;
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RAISE EXCEPTION 'audit_purge is for the DBA, outside any tenancy context' USING ERRCODE = '42501';
    END IF;
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    IF before IS NULL THEN
        RAISE EXCEPTION 'before must not be NULL' USING ERRCODE = '22004';
    END IF;
    deleted := tenancy._audit_purge_main(a.main_id, before);
    IF tenancy._citus_audit_coordinator() THEN
        deleted := deleted + tenancy._citus_audit_purge_at(a.main_id, before);
    END IF;
    RETURN deleted;
END $$;

-- audit_purge() of main account m's chain on this node.
CREATE FUNCTION tenancy._audit_purge_main(m bigint, before timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    h tenancy.audit_heads;
    cut record;
    deleted bigint;
    moved_deleted bigint;
BEGIN
    -- Sealing first also takes the sealer's lock: no round runs meanwhile.
    PERFORM tenancy.audit_seal();
    SELECT * INTO h FROM tenancy.audit_heads x WHERE x.main_id = m FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- A prefix of the chain in whole blocks (the checkpoint is a block's
    -- hash): up to the block before the first one holding an entry at or
    -- after `before`.
    SELECT c.first_pos + c.n - 1 AS last_pos, c.first_pos, c.hash INTO cut FROM tenancy.audit_chain c
    WHERE c.main_id = m AND c.first_pos < coalesce((
        SELECT min(k.first_pos) FROM tenancy.audit_chain k
        WHERE k.main_id = m AND EXISTS (
            SELECT FROM unnest(k.entry_xids, k.entry_ids, k.entry_tids) u(xid, id, tid)
            CROSS JOIN LATERAL tenancy._audit_entry_at(m, u.xid, u.id, u.tid) l
            WHERE l.at >= before)), 9223372036854775807)
    ORDER BY c.first_pos DESC LIMIT 1;
    IF cut.last_pos IS NULL OR cut.last_pos <= h.base_pos THEN
        RETURN 0;
    END IF;
    -- By TID where the entry still is (the fast way), else by xid.
    DELETE FROM tenancy.audit_log l
    USING tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)
    WHERE c.main_id = m AND c.first_pos <= cut.first_pos
      AND l.ctid = u.tid AND l.xid = u.xid AND l.id = u.id AND l.main_id = m;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    IF deleted < cut.last_pos - h.base_pos THEN
        -- Entries moved (VACUUM FULL, CLUSTER) or already gone: one pass by
        -- (xid, id) for the rest.
        DELETE FROM tenancy.audit_log l
        USING tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
        WHERE c.main_id = m AND c.first_pos <= cut.first_pos
          AND l.xid = u.xid AND l.id = u.id AND l.main_id = m;
        GET DIAGNOSTICS moved_deleted = ROW_COUNT;
        deleted := deleted + moved_deleted;
    END IF;
    DELETE FROM tenancy.audit_chain c WHERE c.main_id = m AND c.first_pos <= cut.first_pos;
    h.base_pos := cut.last_pos;
    h.base_hash := cut.hash;
    UPDATE tenancy.audit_heads x SET base_pos = h.base_pos, base_hash = h.base_hash,
        mac = tenancy._audit_head_mac(h), updated_at = clock_timestamp()
    WHERE x.main_id = m;
    PERFORM tenancy._audit_record(m, CASE WHEN m <> 0 THEN (m::text)::tenancy.account_path END, 'audit.purge', 'tenancy.audit_log',
        jsonb_build_object('purged_through_position', cut.last_pos, 'checkpoint_hash', encode(cut.hash, 'hex'),
                           'entries', deleted, 'before', before));
    RETURN deleted;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_purge_main(bigint, timestamptz) FROM PUBLIC;

-- DBA: records again where every chained entry is (entry_tids), in one pass
-- over the log. VACUUM FULL and CLUSTER move every entry: readers then find
-- each one by xid through the BRIN index, a range of pages per entry, which
-- is slow on a large log. Returns how many blocks changed. On a Citus
-- coordinator, on every node (97_citus_audit.sql).
CREATE FUNCTION tenancy.audit_relocate() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    -- One hash join, not a lookup per entry (nested loop) nor a merge on
    -- main_id alone (quadratic).
    SET enable_nestloop = off
    SET enable_mergejoin = off
    AS $$
DECLARE
    changed bigint;
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RAISE EXCEPTION 'audit_relocate is for the DBA, outside any tenancy context' USING ERRCODE = '42501';
    END IF;
    -- No sealing round or purge meanwhile.
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);
    WITH chained AS MATERIALIZED (
        SELECT c.main_id, c.first_pos, u.xid, u.id, u.k
        FROM tenancy.audit_chain c
        CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
    ), places AS (
        SELECT DISTINCT ON (l.main_id, l.xid, l.id) l.main_id, l.xid, l.id, l.ctid AS tid
        FROM tenancy.audit_log l ORDER BY l.main_id, l.xid, l.id, l.ctid
    ), located AS (
        SELECT e.main_id, e.first_pos, array_agg(p.tid ORDER BY e.k) AS tids
        FROM chained e
        LEFT JOIN places p ON p.main_id = e.main_id AND p.xid = e.xid AND p.id = e.id
        GROUP BY e.main_id, e.first_pos
    )
    UPDATE tenancy.audit_chain c SET entry_tids = x.tids FROM located x
    WHERE c.main_id = x.main_id AND c.first_pos = x.first_pos AND c.entry_tids IS DISTINCT FROM x.tids;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF tenancy._citus_audit_coordinator() THEN
        changed := changed + tenancy._citus_audit_relocate_workers();
    END IF;
    RETURN changed;
END $$;

