-- Verifying the audit chain: audit_verify() and the helpers that walk each main
-- account's blocks and find entries outside the chain.

-- A chained entry, at the TID its block recorded, or by xid (BRIN) if it is
-- not there: Append runs its branches in order and LIMIT 1 stops at the
-- first row, so the second runs only on a miss. The TID is not trusted:
-- (main_id, xid, id) must match. No SET clause and qualified operators, so
-- that the planner inlines it into the verification and purge statements
-- (which run as the extension's owner). audit_trail spells the same lookup
-- out: an inlined function's tables are read as the caller, the view's as
-- its owner.
CREATE FUNCTION tenancy._audit_entry_at(m bigint, entry_xid bigint, entry_id bigint, entry_tid tid)
    RETURNS SETOF tenancy.audit_log
    LANGUAGE sql STABLE ROWS 1
    AS $$
    SELECT x.* FROM tenancy.audit_log x
    WHERE x.ctid OPERATOR(pg_catalog.=) entry_tid AND x.xid OPERATOR(pg_catalog.=) entry_xid
      AND x.id OPERATOR(pg_catalog.=) entry_id AND x.main_id OPERATOR(pg_catalog.=) m
    UNION ALL
    SELECT x.* FROM tenancy.audit_log x
    WHERE x.xid OPERATOR(pg_catalog.=) entry_xid AND x.id OPERATOR(pg_catalog.=) entry_id
      AND x.main_id OPERATOR(pg_catalog.=) m
    LIMIT 1
$$;
REVOKE ALL ON FUNCTION tenancy._audit_entry_at(bigint, bigint, bigint, tid) FROM PUBLIC;

-- Entries older than this and still unsealed are reported by audit_verify.
CREATE FUNCTION tenancy._audit_seal_bound() RETURNS interval
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT interval '10 seconds' $$;
REVOKE ALL ON FUNCTION tenancy._audit_seal_bound() FROM PUBLIC;

-- check_outside: also look for entries of m outside the chain (a scan of the
-- whole log, which has no index by account; verify-all does it once for all).
-- Entries are looked up one by one at their TID (LATERAL ... LIMIT 1, no
-- sequential scans): with stale statistics (right after a bulk load) the
-- planner would otherwise scan the whole log per main account, or worse.
CREATE FUNCTION tenancy._audit_verify_main(m bigint, check_outside boolean DEFAULT true, OUT ok boolean,
                                           OUT entries bigint, OUT first_bad bigint, OUT reason text,
                                           OUT outside_path tenancy.account_path)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    SET enable_seqscan = off
    AS $$
DECLARE
    h tenancy.audit_heads;
    blk record;
    e record;
    expect_pos bigint;
    prev bytea;
    o record;
BEGIN
    ok := true;
    entries := 0;
    SELECT * INTO h FROM tenancy.audit_heads x WHERE x.main_id = m;
    IF NOT FOUND THEN
        h.main_id := m;
        h.base_pos := 0;
        h.base_hash := '\x0000000000000000000000000000000000000000000000000000000000000000';
        h.last_pos := 0;
        h.last_hash := h.base_hash;
        h.mac := tenancy._audit_head_mac(h);
    END IF;
    IF h.mac IS DISTINCT FROM tenancy._audit_head_mac(h) THEN
        ok := false;
        first_bad := h.last_pos;
        reason := format('chain head of main account %s: signature invalid (head rewritten without the key)', m);
        RETURN;
    END IF;
    -- Set-based, first the blocks: each one must start where the one before
    -- ended, be well-formed and link to the stored hash before it.
    SELECT r.* INTO blk FROM (
        SELECT c.first_pos, c.n, c.expect_pos,
               CASE WHEN c.first_pos < c.expect_pos
                        THEN format('positions %s to %s appear twice (entries inserted into the chain)',
                                    c.first_pos, c.expect_pos - 1)
                    WHEN c.first_pos > c.expect_pos
                        THEN format('positions %s to %s missing (entries deleted with their chain)',
                                    c.expect_pos, c.first_pos - 1)
                    WHEN c.n < 1 OR cardinality(c.entry_xids) IS DISTINCT FROM c.n
                         OR cardinality(c.entry_ids) IS DISTINCT FROM c.n OR length(c.digests) <> 32 * c.n
                        THEN format('block at position %s is malformed (chain altered)', c.first_pos)
                    WHEN c.hash IS DISTINCT FROM tenancy._audit_chain_step(NULL, c.prev_hash,
                             tenancy._audit_block_link(c.first_pos, c.sealed_at, c.digests))
                        THEN format('block at positions %s to %s: hash mismatch (chain altered, or its predecessor altered)',
                                    c.first_pos, c.first_pos + c.n - 1) END AS reason
        FROM (SELECT x.*, coalesce(lag(x.first_pos + x.n) OVER w, h.base_pos + 1) AS expect_pos,
                     coalesce(lag(x.hash) OVER w, h.base_hash) AS prev_hash
              FROM tenancy.audit_chain x WHERE x.main_id = m
              WINDOW w AS (ORDER BY x.first_pos)) c) r
    WHERE r.reason IS NOT NULL
    ORDER BY r.first_pos LIMIT 1;
    -- Then every entry before that block: present, and matching its digest.
    -- (entry_tids[k], not a three-array unnest: a tid array of another
    -- length than the ids must not add rows.)
    SELECT r.* INTO e FROM (
        SELECT c.first_pos + u.k - 1 AS pos, u.id, l.id IS NULL AS missing
        FROM tenancy.audit_chain c
        CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
        LEFT JOIN LATERAL tenancy._audit_entry_at(m, u.xid, u.id, c.entry_tids[u.k]) l ON true
        WHERE c.main_id = m AND (blk.first_pos IS NULL OR c.first_pos < least(blk.first_pos, blk.expect_pos))
          AND (l.id IS NULL
               OR tenancy._audit_entry_digest(m, l.id, l.account_path, l.at, l.actor_kind, l.actor_id,
                      l.credential_id, l.action, l.target, l.row_key, l.change)
                  IS DISTINCT FROM substring(c.digests FROM (u.k::integer - 1) * 32 + 1 FOR 32))) r
    ORDER BY r.pos LIMIT 1;
    IF e.pos IS NOT NULL THEN
        ok := false;
        first_bad := e.pos;
        reason := CASE WHEN e.missing
            THEN format('entry %s at position %s is missing (deleted entry)', e.id, e.pos)
            ELSE format('entry %s at position %s: digest mismatch (entry altered, or entries swapped)', e.id, e.pos) END;
        RETURN;
    END IF;
    IF blk.first_pos IS NOT NULL THEN
        ok := false;
        first_bad := least(blk.first_pos, blk.expect_pos);
        reason := blk.reason;
        RETURN;
    END IF;
    SELECT coalesce(sum(c.n), 0) INTO entries FROM tenancy.audit_chain c WHERE c.main_id = m;
    SELECT c.hash INTO prev FROM tenancy.audit_chain c WHERE c.main_id = m ORDER BY c.first_pos DESC LIMIT 1;
    expect_pos := h.base_pos + entries + 1;
    prev := coalesce(prev, h.base_hash);
    IF expect_pos - 1 <> h.last_pos OR prev IS DISTINCT FROM h.last_hash THEN
        ok := false;
        first_bad := CASE WHEN expect_pos - 1 > h.last_pos THEN h.last_pos + 1 ELSE expect_pos END;
        reason := format('chain of main account %s ends at position %s but its head says %s (entries removed or appended)',
                         m, expect_pos - 1, h.last_pos);
        RETURN;
    END IF;
    -- Entries outside the chain: not sealed yet, or inserted behind its back.
    IF NOT check_outside THEN
        reason := 'ok';
        RETURN;
    END IF;
    SELECT * INTO o FROM tenancy._audit_outside_chain() x WHERE x.main_id = m;
    IF o.outside > 0 THEN
        -- No chain position: first_bad is the entry's id (the reason says so).
        ok := false;
        first_bad := o.first_id;
        outside_path := o.first_path;
        reason := o.reason;
        RETURN;
    END IF;
    reason := 'ok';
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_main(bigint, boolean) FROM PUBLIC;

-- Entries of the log that are not in the chain and should be, per main
-- account, in one pass over the log joined to the chain's entries: how many,
-- and the first of them (the most telling kind first, then in (xid, id)
-- order) with its path and the reason. Whether an entry should be in the
-- chain is decided by its transaction id against what the sealer has seen,
-- not by its time (`at`, which whoever inserts a row writes):
--   * a second row with a chained entry's (xid, id), away from the TID its
--     block recorded: an inserted copy;
--   * its xid was not committed when verification read the log (running,
--     or beyond the next xid, or negative): no writer left such an entry;
--   * its xid was committed as of the snapshot of the sealer's last round
--     (audit_sealer.snap): that round or an earlier one would have sealed
--     it, so it was inserted behind the chain's back, whatever its `at`;
--   * otherwise it waits for the sealer's next round: reported only if it
--     is dated in the future (forged: an entry's time is its writer's clock)
--     or older than the bound (is the sealer running?).
CREATE FUNCTION tenancy._audit_outside_chain()
    RETURNS TABLE (main_id bigint, outside bigint, first_id bigint, first_path tenancy.account_path, reason text)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    SET enable_seqscan = on  -- called from _audit_verify_main, which turns it off
    -- A pass over the whole log looks expensive to the planner; compiling it
    -- (JIT) took longer than running it (1.7 s against 0.3 s on 45k entries).
    SET jit = off
    AS $$
    WITH loose AS MATERIALIZED (
        -- In no block, or a second row with a chained entry's (xid, id) away
        -- from where its block recorded it (a copy: readers of audit_log
        -- would see both).
        SELECT l.main_id, l.id, l.xid, l.at, l.account_path, ch.xid IS NOT NULL AS copy
        FROM (SELECT x.main_id, x.id, x.xid, x.at, x.account_path, x.ctid,
                     count(*) OVER (PARTITION BY x.main_id, x.xid, x.id) AS copies
              FROM tenancy.audit_log x) l
        LEFT JOIN (SELECT c.main_id, u.xid, u.id, u.tid FROM tenancy.audit_chain c
                   CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)) ch
               ON ch.main_id = l.main_id AND ch.xid = l.xid AND ch.id = l.id
        WHERE ch.xid IS NULL OR (l.copies > 1 AND l.ctid IS DISTINCT FROM ch.tid)
    ), judged AS (
        SELECT o.*, CASE
            WHEN o.copy THEN 2
            WHEN o.xid < 0 OR (NOT pg_visible_in_snapshot(o.xid::text::xid8, pg_current_snapshot())
                               AND o.xid::text::xid8 IS DISTINCT FROM pg_current_xact_id_if_assigned()) THEN 1
            -- (a snapshot from the future, in a restored copy of
            -- audit_sealer, tells nothing: the sealer starts over from it too)
            WHEN pg_visible_in_snapshot(o.xid::text::xid8,
                     (SELECT s.snap FROM tenancy.audit_sealer s
                      WHERE pg_snapshot_xmax(s.snap) <= pg_snapshot_xmax(pg_current_snapshot()))) THEN 2
            WHEN o.at > clock_timestamp() + tenancy._audit_seal_bound() THEN 3
            WHEN o.at < now() - tenancy._audit_seal_bound() THEN 4 END AS kind
        FROM loose o
    ), counted AS (
        SELECT j.*, count(*) OVER (PARTITION BY j.main_id) AS n,
               row_number() OVER (PARTITION BY j.main_id ORDER BY j.kind, j.xid, j.id) AS k
        FROM judged j WHERE j.kind IS NOT NULL
    )
    SELECT c.main_id, c.n, c.id, c.account_path,
           CASE c.kind
               WHEN 1 THEN format('entry %s outside the chain names transaction %s, which had not committed when the log was read (forged entry)',
                                  c.id, c.xid)
               WHEN 2 THEN CASE WHEN c.copy
                   THEN format('entry %s (transaction %s) appears twice in the log, once away from where the chain recorded it (inserted copy)',
                               c.id, c.xid)
                   ELSE format('entry %s is not in the chain, though its transaction %s had committed before the sealer''s last round: inserted behind the chain''s back',
                               c.id, c.xid) END
               WHEN 3 THEN format('entry %s outside the chain is dated in the future (forged entry)', c.id)
               ELSE format('entry %s has been outside the chain for longer than %s s (is the sealer running?)',
                           c.id, extract(epoch FROM tenancy._audit_seal_bound())::bigint) END
           || CASE WHEN c.n > 1 THEN format('; %s entries outside the chain in all', c.n) ELSE '' END
    FROM counted c WHERE c.k = 1
$$;
REVOKE ALL ON FUNCTION tenancy._audit_outside_chain() FROM PUBLIC;

-- The DBA's verification (EXECUTE granted to tenancy_admin only): every main
-- account (account NULL, one row each) or the main chain of any account.
CREATE FUNCTION tenancy._audit_verify_dba(account text)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    -- On Citus each chain is verified on the node holding it (97_citus_audit.sql).
    IF account IS NULL AND tenancy._citus_audit_coordinator() THEN
        RETURN QUERY SELECT * FROM tenancy._citus_audit_verify_all();
        RETURN;
    END IF;
    IF account IS NULL THEN
        RETURN QUERY
        WITH outside AS MATERIALIZED (SELECT * FROM tenancy._audit_outside_chain())
        SELECT v.ok AND o.outside IS NULL, v.entries,
               CASE WHEN v.ok THEN o.first_id ELSE v.first_bad END,
               CASE WHEN v.ok AND o.outside IS NOT NULL THEN o.reason ELSE v.reason END,
               m.id
        FROM (SELECT x.main_id AS id FROM tenancy.audit_heads x
              UNION SELECT o2.main_id FROM outside o2) m
        CROSS JOIN LATERAL tenancy._audit_verify_main(m.id, false) v
        LEFT JOIN outside o ON o.main_id = m.id
        ORDER BY m.id;
        RETURN;
    END IF;
    a := tenancy._find_account(account);
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    IF tenancy._citus_audit_coordinator() THEN
        RETURN QUERY SELECT v.*, a.main_id
                     FROM tenancy._citus_audit_verify_at(a.main_id, a.main_id::text::tenancy.account_path) v;
        RETURN;
    END IF;
    RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason, a.main_id FROM tenancy._audit_verify_main(a.main_id) v;
END $$;

-- The main chain of main account m as the account at path p may learn of it
-- (p is m's own path: everything). Runs where the chain lives: here, or on
-- the worker holding it (_citus_audit_verify_at).
CREATE FUNCTION tenancy._audit_verify_subtree(m bigint, p tenancy.account_path)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    v record;
    bad_path tenancy.account_path;
BEGIN
    SELECT * INTO v FROM tenancy._audit_verify_main(m);
    IF p OPERATOR(tenancy.=) m::text::tenancy.account_path THEN
        RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason;
        RETURN;
    END IF;
    -- A subaccount verifies the whole main chain (its entries are in it) but
    -- learns only about its own subtree: its entry count, and the bad
    -- position only if that entry is its own (an entry outside the chain
    -- comes with its path; a chain position is looked up).
    bad_path := v.outside_path;
    IF bad_path IS NULL THEN
        SELECT l.account_path INTO bad_path
        FROM (SELECT c.main_id, c.entry_xids[v.first_bad - c.first_pos + 1] AS xid,
                     c.entry_ids[v.first_bad - c.first_pos + 1] AS id, c.entry_tids[v.first_bad - c.first_pos + 1] AS tid
              FROM tenancy.audit_chain c
              WHERE c.main_id = m AND c.first_pos <= v.first_bad
              ORDER BY c.first_pos DESC LIMIT 1) u
        CROSS JOIN LATERAL tenancy._audit_entry_at(u.main_id, u.xid, u.id, u.tid) l;
    END IF;
    RETURN QUERY
    SELECT v.ok,
           (SELECT count(*) FROM tenancy.audit_chain c
            CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)
            CROSS JOIN LATERAL tenancy._audit_entry_at(c.main_id, u.xid, u.id, u.tid) l
            WHERE c.main_id = m AND l.account_path OPERATOR(tenancy.<@) p),
           CASE WHEN bad_path OPERATOR(tenancy.<@) p THEN v.first_bad END,
           CASE WHEN v.ok OR bad_path OPERATOR(tenancy.<@) p THEN v.reason
                ELSE 'the main account''s chain has a bad entry outside this account''s subtree' END;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_subtree(bigint, tenancy.account_path) FROM PUBLIC;

-- In a context: the main chain of the active account (or of a visible
-- account), if the role may read the audit log.
CREATE FUNCTION tenancy._audit_verify_context(account text)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    PERFORM tenancy._require('audit', 'read');
    a := tenancy._visible_account(coalesce(account, tenancy._context_field('account')));
    -- On Citus the chain is verified on the node holding it (97_citus_audit.sql).
    IF tenancy._citus_audit_coordinator() THEN
        RETURN QUERY SELECT v.*, a.main_id FROM tenancy._citus_audit_verify_at(a.main_id, a.path) v;
    ELSE
        RETURN QUERY SELECT v.*, a.main_id FROM tenancy._audit_verify_subtree(a.main_id, a.path) v;
    END IF;
END $$;

-- audit_verify(account DEFAULT NULL): in a context, that account's main chain
-- (the role must may read `audit`); outside one, the DBA: all main accounts
-- (NULL) or the named account's. The DBA path is guarded by the EXECUTE
-- privilege on _audit_verify_dba, so this wrapper runs as the caller.
CREATE FUNCTION tenancy.audit_verify(account text DEFAULT NULL)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF tenancy._context_field('account') IS NOT NULL THEN
        RETURN QUERY SELECT * FROM tenancy._audit_verify_context(account);
    ELSIF has_function_privilege('tenancy._audit_verify_dba(text)', 'EXECUTE') THEN
        RETURN QUERY SELECT * FROM tenancy._audit_verify_dba(account);
    ELSE
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_verify_dba(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy._audit_verify_dba(text) TO tenancy_admin;

