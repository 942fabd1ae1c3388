-- The tamper-evident audit log (extension/src/audit.cpp, audit_worker.cpp).
--
-- Writers (the C++ row trigger, audit_event, _audit_record) only INSERT into
-- audit_log: no chain lock, no later update, so writers never wait on each
-- other and an entry row is written once. Each entry carries the full id of
-- its writer's top-level transaction (xid).
--
-- The sealer (tenancy.audit_seal(), run every ~200 ms by the background
-- worker or by the gateway) links committed entries into one SHA-256 chain
-- per main account, one block per round (audit_chain: the entries' positions,
-- ids and digests, and a hash linking the block to the one before), and moves
-- the main account's chain head (audit_heads), whose last position and hash
-- are MACed with a server key no client role can read, so a truncated tail or
-- a rewritten chain is detected by audit_verify().
--
-- Finding the entries to seal without a queue: the sealer records the MVCC
-- snapshot its round ran in (audit_sealer.snap). The next round takes exactly
-- the entries visible now but not in that snapshot: their xid is at least the
-- snapshot's xmin (the pages a BRIN index on xid points to) and the snapshot
-- did not see it committed. An aborted transaction's entries never become
-- visible: no gap. The chain records where each entry is (its TID): readers
-- reach entries through the chain, not through an index on the log.
--
-- Entries are immutable history: account_path is the path at the time of the
-- event, not a foreign key. When a subtree moves, its old entries stay under
-- the old path: whoever was an ancestor then still reads them, the new parent
-- reads only what happened after the move. A row update is recorded under the
-- row's path before the change (an account move or promotion is visible to the
-- old ancestors). Entries stay in their main account's chain forever (also
-- after a promotion).

-- Ids need only be unique (the chain orders entries): one nextval reserves
-- the next 64 ids for the writing backend (audit.cpp), so consecutive entries
-- of a backend are numbered in order and a nextval is paid once per 64.
-- Altering this sequence while entries are written can repeat ids.
CREATE SEQUENCE tenancy.audit_seq INCREMENT BY 64 CACHE 1;

CREATE TABLE tenancy.audit_log (
    main_id bigint NOT NULL,
    id bigint NOT NULL,                -- from audit_seq: unique
    xid bigint NOT NULL,               -- full id of the writer's top-level transaction
    account_path tenancy.account_path, -- NULL only in the installation's chain (main_id 0)
    at timestamptz NOT NULL,
    actor_kind text NOT NULL,          -- api_key, user, sub_user, anonymous, dba
    actor_id text,                     -- principal id, or session_user for dba
    credential_id bigint,
    action text NOT NULL,              -- insert/update/delete, or an event name
    target text,                       -- schema.table, or the event's target
    row_key jsonb,                     -- primary key of the changed row
    change jsonb,                      -- {"old": {...}, "new": {...}} or event detail
    CHECK ((main_id = 0) = (account_path IS NULL))
);
-- The log's only index, paid for by every audited write: BRIN on xid, one
-- summary per 32 pages (~850 entries). Writers append in xid order, so the
-- summaries are tight; an insert into a range not summarised yet (the tail)
-- writes nothing to the index. A btree on (xid, id), used before, was an
-- index write (and its WAL) per entry, the same cost as the entry's own heap
-- insert: 8-client single-row updates ran ~10% faster with BRIN, the sealer
-- included (bench/RESULTS.md). The sealer summarises the ranges the writers
-- have left behind (audit_seal.cpp) and reads the pages of the ranges that
-- may hold new xids; readers reach entries by the TIDs in the chain, and by
-- xid through this index only when an entry is not at its TID (after a
-- VACUUM FULL or CLUSTER of the log, which move every entry).
CREATE INDEX audit_log_xid ON tenancy.audit_log USING brin (xid) WITH (pages_per_range = 32);
-- No planner statistics on the payload: nothing is planned on it, and while
-- the log is young autovacuum re-analyses it often (jsonb statistics nearly
-- doubled the cost of ANALYZE, measured).
ALTER TABLE tenancy.audit_log ALTER COLUMN row_key SET STATISTICS 0, ALTER COLUMN change SET STATISTICS 0;
-- The sealer keeps empty pages ahead of the writers (audit_log_space.cpp);
-- VACUUM must not cut them off the end, which takes an ACCESS EXCLUSIVE lock
-- that stalls every audited write meanwhile.
--
-- Re-analysed when it has doubled, not at every 10% of growth: an
-- append-only log's statistics barely change (the planner asks the xid
-- index for the current maximum itself), and each ANALYZE reads a 30,000-row
-- sample (0.24 s on 840k entries, measured); at 10% a log growing from 1k to
-- 1M entries is analysed ~70 times, at 100% ~10.
ALTER TABLE tenancy.audit_log SET (vacuum_truncate = false, autovacuum_analyze_scale_factor = 1.0);

-- The chain: one block per main account and sealing round (at most 4096
-- entries), written by the sealer only. A block lists its entries in chain
-- order (positions first_pos .. first_pos + n - 1) by (xid, id), with each
-- entry's 32-byte digest (_audit_entry_digest), and links to the block before:
--     hash = SHA-256(previous block's hash || _audit_block_link(first_pos, sealed_at, digests))
-- One narrow row and one index entry per block instead of per entry: the
-- sealer's cost per entry is reading and digesting it (measured in
-- bench/RESULTS.md). A changed entry no longer matches its digest; a changed,
-- removed or inserted block breaks the links; a cut tail no longer matches the
-- MACed head.
CREATE TABLE tenancy.audit_chain (
    main_id bigint NOT NULL,
    first_pos bigint NOT NULL,
    n integer NOT NULL,
    entry_xids bigint[] NOT NULL,
    entry_ids bigint[] NOT NULL,
    -- Where the entries were written: a locator for readers, not evidence (an
    -- entry is found by TID only if its xid and id match; NULL: by xid).
    entry_tids tid[],
    digests bytea NOT NULL,
    hash bytea NOT NULL,
    sealed_at timestamptz NOT NULL,
    PRIMARY KEY (main_id, first_pos)
);
-- Digests are random bytes: do not try to compress them. No planner
-- statistics on the block contents.
ALTER TABLE tenancy.audit_chain ALTER COLUMN digests SET STORAGE EXTERNAL,
    ALTER COLUMN digests SET STATISTICS 0, ALTER COLUMN entry_xids SET STATISTICS 0,
    ALTER COLUMN entry_ids SET STATISTICS 0, ALTER COLUMN entry_tids SET STATISTICS 0,
    ALTER COLUMN hash SET STATISTICS 0;
-- A block of a busy round (a few dozen entries, 48 bytes each) passes the
-- default 2 kB toast threshold: its digests then went to the toast table, one
-- more row, index entry and WAL record per block (5% of the sealer's time,
-- perf). Blocks stay whole in their row up to a full page; only a bulk
-- round's big blocks are toasted.
ALTER TABLE tenancy.audit_chain SET (toast_tuple_target = 8160);
-- A bulk round's blocks (up to 4096 entries) are compressed: lz4, not pglz,
-- where the server has it. pglz took a fifth of such a round (perf); with lz4
-- the round cost 3.3 instead of 3.9 us per entry, for id arrays a fifth larger.
DO $$
BEGIN
    ALTER TABLE tenancy.audit_chain ALTER COLUMN entry_xids SET COMPRESSION lz4,
        ALTER COLUMN entry_ids SET COMPRESSION lz4, ALTER COLUMN entry_tids SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    NULL;  -- built without lz4: pglz
END $$;

-- One chain head per main account. base_*: the checkpoint left by
-- audit_purge (entries up to base_pos were purged); last_*: the end of the
-- chain. mac = HMAC-SHA-256(audit key, all of them).
CREATE TABLE tenancy.audit_heads (
    main_id bigint PRIMARY KEY,
    base_pos bigint NOT NULL DEFAULT 0,
    base_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    last_pos bigint NOT NULL DEFAULT 0,
    last_hash bytea NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000',
    mac bytea,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The sealer's progress: the snapshot of its last round that sealed something
-- (NULL: never ran, so every visible entry is new).
CREATE TABLE tenancy.audit_sealer (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    snap pg_snapshot,
    sealed_at timestamptz
);
INSERT INTO tenancy.audit_sealer DEFAULT VALUES;

CREATE TABLE tenancy.audit_keys (
    id smallint PRIMARY KEY,
    secret bytea NOT NULL CHECK (length(secret) = 32)
);
INSERT INTO tenancy.audit_keys VALUES (1, tenancy._random_bytes(32));

-- ---- C++ ----------------------------------------------------------------------

CREATE FUNCTION tenancy._audit_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tenancy_audit_trigger' LANGUAGE C;
-- One step of the chain as verification recomputes it: SHA-256(state ||
-- payload), a NULL state standing for `start`.
CREATE FUNCTION tenancy._audit_chain_step(state bytea, start bytea, payload bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_chain_step' LANGUAGE C IMMUTABLE;
-- The sealer's round (audit_seal.cpp): the entries committed as of snapshot
-- cur and not as of prev, with xid >= lower_xid, digested, grouped per main
-- account into blocks of at most 4096 in (xid, id) order, each chained to
-- the one before from the main account's head. last_pos is where the head
-- moves (on the row whose block ends there). Writes nothing.
CREATE FUNCTION tenancy._audit_seal_blocks(lower_xid bigint, prev pg_snapshot, cur pg_snapshot,
                                           sealed_at timestamptz)
    RETURNS TABLE (main_id bigint, first_pos bigint, n integer, entry_xids bigint[], entry_ids bigint[],
                   entry_tids tid[], digests bytea, hash bytea, last_pos bigint)
    AS 'MODULE_PATHNAME', 'tenancy_audit_seal_blocks' LANGUAGE C VOLATILE;
CREATE FUNCTION tenancy._hmac_sha256(key bytea, data text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_hmac_sha256' LANGUAGE C IMMUTABLE STRICT;
-- Internal writer for events that are not row changes (login, context switch,
-- API calls). The actor comes from the context (or session_user outside one)
-- unless given: actor_kind api_key, user, sub_user or anonymous (a login
-- attempt before any context exists). main_id 0 with a NULL path is the
-- installation's own chain, read by the DBA only: events that name no known
-- account (a failed login for an unknown email).
CREATE FUNCTION tenancy._audit_record(main_id bigint, account_path tenancy.account_path,
                                      action text, target text, detail jsonb,
                                      actor_kind text DEFAULT NULL, actor_id text DEFAULT NULL,
                                      credential_id bigint DEFAULT NULL) RETURNS bigint
    AS 'MODULE_PATHNAME', 'tenancy_audit_record' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION tenancy._audit_trigger(),
    tenancy._audit_chain_step(bytea, bytea, bytea),
    tenancy._audit_seal_blocks(bigint, pg_snapshot, pg_snapshot, timestamptz),
    tenancy._hmac_sha256(bytea, text),
    tenancy._audit_record(bigint, tenancy.account_path, text, text, jsonb, text, text, bigint) FROM PUBLIC;

-- The canonical serialisation (audit.cpp), independent of settings (DateStyle,
-- TimeZone): every field length-prefixed, numbers and times as 8-byte
-- big-endian integers; the path, texts and jsonb as their stored bytes,
-- hashed into one 32-byte digest per entry. A block's link binds the
-- concatenated digests to the block's first position and sealing time.
CREATE FUNCTION tenancy._audit_entry_digest(main_id bigint, id bigint, account_path tenancy.account_path,
        at timestamptz, actor_kind text, actor_id text, credential_id bigint, action text, target text,
        row_key jsonb, change jsonb) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_entry_digest' LANGUAGE C IMMUTABLE;
CREATE FUNCTION tenancy._audit_block_link(first_pos bigint, sealed_at timestamptz, digests bytea) RETURNS bytea
    AS 'MODULE_PATHNAME', 'tenancy_audit_block_link' LANGUAGE C IMMUTABLE;
REVOKE ALL ON FUNCTION tenancy._audit_entry_digest(bigint, bigint, tenancy.account_path, timestamptz, text, text,
    bigint, text, text, jsonb, jsonb), tenancy._audit_block_link(bigint, timestamptz, bytea) FROM PUBLIC;

-- The head's MAC with a given key. No SET clause and no FROM, so that the
-- planner inlines it into the sealer's statement (every name is qualified).
CREATE FUNCTION tenancy._audit_head_mac(h tenancy.audit_heads, secret bytea) RETURNS bytea
    LANGUAGE sql STABLE
    AS $$
    SELECT tenancy._hmac_sha256(secret,
        pg_catalog.format('tenancy-audit-head|%s|%s|%s|%s|%s', h.main_id, h.base_pos,
                          pg_catalog.encode(h.base_hash, 'hex'), h.last_pos, pg_catalog.encode(h.last_hash, 'hex')))
$$;
CREATE FUNCTION tenancy._audit_head_mac(h tenancy.audit_heads) RETURNS bytea
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT tenancy._audit_head_mac(h, k.secret) FROM tenancy.audit_keys k WHERE k.id = 1 $$;
REVOKE ALL ON FUNCTION tenancy._audit_head_mac(tenancy.audit_heads),
    tenancy._audit_head_mac(tenancy.audit_heads, bytea) FROM PUBLIC;

-- ---- sealing ----------------------------------------------------------------------

-- Links every committed entry not yet in a chain; returns how many. Callable
-- by the gateway's worker too; concurrent calls take turns.
CREATE FUNCTION tenancy.audit_seal() RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    SET work_mem = '64MB'  -- a round after an outage keeps its blocks in memory
    AS $$
DECLARE
    prev pg_snapshot;
    new_snap pg_snapshot;
    lower_xid bigint;
    sealed bigint;
    ts timestamptz := clock_timestamp();
    zero bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
BEGIN
    -- Sealers (and purges) take turns. An advisory lock, not a row lock: a
    -- round that finds nothing writes nothing and burns no transaction id.
    PERFORM pg_advisory_xact_lock(1952804449, 1635083369);  -- 'tena', 'audi'
    SELECT s.snap INTO prev FROM tenancy.audit_sealer s;
    -- A snapshot from the future (a restored copy of this table in another
    -- cluster) would hide new entries: start over from every visible entry.
    IF prev IS NOT NULL AND pg_snapshot_xmax(prev) > pg_snapshot_xmax(pg_current_snapshot()) THEN
        prev := NULL;
    END IF;
    lower_xid := coalesce(pg_snapshot_xmin(prev)::text::bigint, 0);
    -- This round seals exactly the entries committed as of this snapshot and
    -- not as of the previous one (an entry committing meanwhile waits a round).
    new_snap := pg_current_snapshot();
    -- One statement: the blocks of every main account's new entries
    -- (_audit_seal_blocks, in C), then the block rows and the moved heads.
    WITH blocks AS MATERIALIZED (
        SELECT * FROM tenancy._audit_seal_blocks(lower_xid, prev, new_snap, ts)
    ), linked AS (
        INSERT INTO tenancy.audit_chain (main_id, first_pos, n, entry_xids, entry_ids, entry_tids, digests, hash, sealed_at)
        SELECT b.main_id, b.first_pos, b.n, b.entry_xids, b.entry_ids, b.entry_tids, b.digests, b.hash, ts FROM blocks b
        RETURNING audit_chain.n
    ), moved AS (
        -- Heads move only under the sealers' lock (audit_purge takes it too),
        -- so the base read here is still the head's.
        INSERT INTO tenancy.audit_heads AS x (main_id, base_pos, base_hash, last_pos, last_hash, mac, updated_at)
        SELECT t.main_id, t.base_pos, t.base_hash, t.last_pos, t.hash,
               tenancy._audit_head_mac(ROW(t.main_id, t.base_pos, t.base_hash, t.last_pos, t.hash, NULL, NULL)::tenancy.audit_heads,
                                       k.secret), ts
        FROM (SELECT b.main_id, b.last_pos, b.hash, coalesce(h.base_pos, 0) AS base_pos,
                     coalesce(h.base_hash, zero) AS base_hash
              FROM blocks b LEFT JOIN tenancy.audit_heads h ON h.main_id = b.main_id
              WHERE b.first_pos + b.n - 1 = b.last_pos) t
        CROSS JOIN tenancy.audit_keys k
        WHERE k.id = 1
        ON CONFLICT (main_id) DO UPDATE
        SET last_pos = excluded.last_pos, last_hash = excluded.last_hash, mac = excluded.mac, updated_at = ts
    )
    SELECT coalesce(sum(k.n), 0) INTO sealed FROM linked k;
    IF sealed = 0 THEN
        RETURN 0;  -- the recorded snapshot still finds everything new
    END IF;
    UPDATE tenancy.audit_sealer s SET snap = new_snap, sealed_at = ts;
    RETURN sealed;
END $$;

-- ---- verification -------------------------------------------------------------------

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
    RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason, a.main_id FROM tenancy._audit_verify_main(a.main_id) v;
END $$;

-- In a context: the main chain of the active account (or of a visible
-- account), if the role may read the audit log.
CREATE FUNCTION tenancy._audit_verify_context(account text)
    RETURNS TABLE (ok boolean, entries bigint, first_bad bigint, reason text, main_id bigint)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    v record;
    bad_path tenancy.account_path;
BEGIN
    PERFORM tenancy._require('audit', 'read');
    a := tenancy._visible_account(coalesce(account, tenancy._context_field('account')));
    SELECT * INTO v FROM tenancy._audit_verify_main(a.main_id);
    IF a.id = a.main_id THEN
        RETURN QUERY SELECT v.ok, v.entries, v.first_bad, v.reason, a.main_id;
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
              WHERE c.main_id = a.main_id AND c.first_pos <= v.first_bad
              ORDER BY c.first_pos DESC LIMIT 1) u
        CROSS JOIN LATERAL tenancy._audit_entry_at(u.main_id, u.xid, u.id, u.tid) l;
    END IF;
    RETURN QUERY
    SELECT v.ok,
           (SELECT count(*) FROM tenancy.audit_chain c
            CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) u(xid, id, tid)
            CROSS JOIN LATERAL tenancy._audit_entry_at(c.main_id, u.xid, u.id, u.tid) l
            WHERE c.main_id = a.main_id AND l.account_path OPERATOR(tenancy.<@) a.path),
           CASE WHEN bad_path OPERATOR(tenancy.<@) a.path THEN v.first_bad END,
           CASE WHEN v.ok OR bad_path OPERATOR(tenancy.<@) a.path THEN v.reason
                ELSE 'the main account''s chain has a bad entry outside this account''s subtree' END,
           a.main_id;
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

-- ---- events and purge ------------------------------------------------------------

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
-- purge. Returns how many entries were deleted.
CREATE FUNCTION tenancy.audit_purge(account text, before timestamptz) RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
    m bigint;
    h tenancy.audit_heads;
    cut record;
    deleted bigint;
    moved_deleted bigint;
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
    m := a.main_id;
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

-- DBA: records again where every chained entry is (entry_tids), in one pass
-- over the log. VACUUM FULL and CLUSTER move every entry: readers then find
-- each one by xid through the BRIN index, a range of pages per entry, which
-- is slow on a large log. Returns how many blocks changed.
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
    RETURN changed;
END $$;

-- ---- triggers -----------------------------------------------------------------------

-- Installs the audit trigger on a table whose rows carry their account in
-- `path_column` (and main_id). Called by protect().
CREATE FUNCTION tenancy._audit_attach(tbl regclass, path_column text DEFAULT 'account_path') RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = tbl AND t.tgname = 'tenancy_audit') THEN
        EXECUTE format('DROP TRIGGER tenancy_audit ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER tenancy_audit AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION tenancy._audit_trigger(%L)', tbl, path_column);
END $$;
REVOKE ALL ON FUNCTION tenancy._audit_attach(regclass, text) FROM PUBLIC;

SELECT tenancy._audit_attach('tenancy.accounts', 'path');
SELECT tenancy._audit_attach('tenancy.memberships');
SELECT tenancy._audit_attach('tenancy.api_keys');
-- Provisioning within an account: sub-users (created, activated, edited,
-- deactivated, deleted; password hashes only named under "redacted", last
-- login bookkeeping not recorded) and invitations (sent, accepted, revoked;
-- the token hash only named).
SELECT tenancy._audit_attach('tenancy.sub_users');
SELECT tenancy._audit_attach('tenancy.invitations');
SELECT tenancy._audit_attach(p.tbl) FROM tenancy.protected_tables p;

-- ---- ownership and access --------------------------------------------------------------

ALTER TABLE tenancy.audit_log OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_heads OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_chain OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_sealer OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_keys OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.audit_seq OWNER TO tenancy_owner;
ALTER TABLE tenancy.audit_log ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_heads ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_chain ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_sealer ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.audit_keys ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.audit_log, tenancy.audit_heads, tenancy.audit_chain, tenancy.audit_sealer,
    tenancy.audit_keys, tenancy.audit_seq FROM PUBLIC;

-- Parents read their subtree's log if their role may read `audit`.
CREATE POLICY subtree_read ON tenancy.audit_log FOR SELECT
    USING (main_id = (SELECT tenancy.current_main_id())
           AND account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path())
           AND (SELECT tenancy.may('audit', 'read')));
GRANT SELECT ON tenancy.audit_log TO tenancy_app, tenancy_admin;
-- A block mixes the main account's subtrees: readers get it only through
-- audit_trail, which shows the entries audit_log's policy lets them see.
CREATE POLICY main_read ON tenancy.audit_chain FOR SELECT
    USING (main_id = (SELECT tenancy.current_main_id()) AND (SELECT tenancy.may('audit', 'read')));

-- The indexed way to read the log: sealed entries with their chain position,
-- digest and block, through the chain's (main_id, first_pos) key and the
-- entries' TIDs (by xid for an entry no longer at its TID): the lookup of
-- _audit_entry_at, spelled out so that audit_log is read as the view's owner.
-- The TIDs come from a three-array unnest: a plain parameter, which the
-- planner takes for a Tid Scan under audit_log's row security (entry_tids[k]
-- it does not). The view
-- runs as tenancy_owner, under both tables' policies, so a reader sees
-- exactly what audit_log's policy shows it (minus the last ~0.5 s not yet
-- sealed). For the newest entries first, order by block_pos DESC, chain_pos
-- DESC: the blocks come in key order. audit_log itself stays readable, but
-- has no index by account.
CREATE VIEW tenancy.audit_trail WITH (security_barrier) AS
SELECT c.main_id, c.first_pos + u.k - 1 AS chain_pos, l.id, l.account_path, l.at, l.actor_kind, l.actor_id,
       l.credential_id, l.action, l.target, l.row_key, l.change,
       substring(c.digests FROM (u.k::integer - 1) * 32 + 1 FOR 32) AS digest,
       c.first_pos AS block_pos, c.hash AS block_hash, c.sealed_at
FROM tenancy.audit_chain c
CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids, c.entry_tids) WITH ORDINALITY u(xid, id, tid, k)
CROSS JOIN LATERAL (SELECT x.* FROM tenancy.audit_log x
                    WHERE x.ctid = u.tid AND x.xid = u.xid AND x.id = u.id AND x.main_id = c.main_id
                    UNION ALL
                    SELECT x.* FROM tenancy.audit_log x
                    WHERE x.xid = u.xid AND x.id = u.id AND x.main_id = c.main_id
                    LIMIT 1) l;
ALTER VIEW tenancy.audit_trail OWNER TO tenancy_owner;
REVOKE ALL ON tenancy.audit_trail FROM PUBLIC;
GRANT SELECT ON tenancy.audit_trail TO tenancy_app;
GRANT SELECT ON tenancy.audit_heads, tenancy.audit_chain, tenancy.audit_sealer TO tenancy_admin;
-- No INSERT/UPDATE/DELETE grant to any role: entries are written by the
-- extension's C code (which bypasses the executor's checks), sealed and purged
-- by SECURITY DEFINER functions. Only a superuser can change them otherwise.

REVOKE ALL ON FUNCTION tenancy.audit_seal(), tenancy.audit_purge(text, timestamptz), tenancy.audit_relocate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_relocate() TO tenancy_admin;
GRANT EXECUTE ON FUNCTION tenancy.audit_seal() TO tenancy_app, tenancy_admin;
GRANT EXECUTE ON FUNCTION tenancy.audit_purge(text, timestamptz) TO tenancy_admin;
