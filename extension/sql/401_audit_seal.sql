-- Sealing the audit log: audit_seal() links committed entries into each main
-- account's chain (the design: 400_audit_log.sql).

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
    -- On a Citus coordinator the entries of main accounts go to the nodes
    -- holding their shards, to be sealed there (97_citus_audit.sql); a node
    -- that is down holds them back, not the installation's chain.
    IF tenancy._citus_audit_coordinator() THEN
        BEGIN
            PERFORM tenancy._citus_audit_forward();
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'tenancy: audit entries not moved to their workers this round: %', SQLERRM;
        END;
    END IF;
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

