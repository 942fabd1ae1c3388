-- Ownership, row security and grants of the audit tables, and the audit_trail view.

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
