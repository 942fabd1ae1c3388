-- The tamper-evident audit log: its tables and the C++ functions that write and hash
-- it (extension/src/audit.cpp, audit_worker.cpp); the design of the whole is below.
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
