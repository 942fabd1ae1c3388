-- The SHA-256 chain per main account: sealing, verification, tampering of
-- every kind (as a superuser) caught and named, and the DBA's purge.
\set VERBOSITY terse
SET client_min_messages = warning;

SELECT tenancy.create_main_account('Chain Main', 'owner@chain.test', 'pw-chain-1') AS main \gset
SELECT tenancy.admin_create_api_key(:'main', 'owner key') AS owner_key \gset
SELECT tenancy.admin_create_api_key(:'main', 'member key', 'member') AS member_key \gset
SELECT a.main_id AS main_id, a.path::text AS main_path FROM tenancy.accounts a WHERE a.public_id = :'main' \gset

-- 4 configuration entries so far; 4 events now, then (a moment later) 4 more.
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.early', format('e%s', g), jsonb_build_object('n', g)))
FROM generate_series(1, 4) g;
SELECT pg_sleep(0.01);
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.late', format('l%s', g), jsonb_build_object('n', g)))
FROM generate_series(1, 4) g;
-- An aborted transaction's entry consumes an id, never a chain position.
BEGIN;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.aborted', 'x', NULL) > 0 AS written;
ROLLBACK;

SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT tenancy.audit_seal() AS nothing_left;
-- The chain: one narrow row per entry, positions 1..n in id order.
SELECT count(*) AS entries, count(c.entry_id) AS chained, min(c.chain_pos) AS first_pos, max(c.chain_pos) AS last_pos,
       max(l.id) - min(l.id) + 1 > count(*) AS ids_have_gaps,
       bool_and(c.sealed_at IS NOT NULL AND length(c.hash) = 32) AS all_hashed,
       array_agg(c.chain_pos ORDER BY l.id) = array_agg(c.chain_pos ORDER BY c.chain_pos) AS in_id_order
FROM tenancy.audit_log l LEFT JOIN tenancy.audit_chain c ON c.main_id = l.main_id AND c.entry_id = l.id
WHERE l.main_id = :main_id;
-- Each hash links to its predecessor's; the head holds the last position and hash.
SELECT bool_and(c.hash = tenancy._audit_chain_step(NULL, p.hash, tenancy._audit_payload(l.main_id, l.id, c.chain_pos,
           l.account_path, l.at, l.actor_kind, l.actor_id, l.credential_id, l.action, l.target, l.row_key, l.change,
           c.sealed_at))) AS linked
FROM tenancy.audit_chain c
JOIN tenancy.audit_chain p ON p.main_id = c.main_id AND p.chain_pos = c.chain_pos - 1
JOIN tenancy.audit_log l ON l.main_id = c.main_id AND l.id = c.entry_id
WHERE c.main_id = :main_id;
SELECT h.last_pos, h.last_hash = c.hash AS head_matches, h.base_pos
FROM tenancy.audit_heads h JOIN tenancy.audit_chain c ON c.main_id = h.main_id AND c.chain_pos = h.last_pos
WHERE h.main_id = :main_id;
SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify(:'main');

-- ---- tampering (superuser), each undone afterwards -------------------------------------
CREATE FUNCTION pg_temp.check(account text) RETURNS TABLE (ok boolean, first_bad bigint, reason text)
    LANGUAGE sql AS $$
    SELECT v.ok, v.first_bad, regexp_replace(v.reason, '(entry|account) [0-9]+', '\1 N', 'g')
    FROM tenancy.audit_verify(account) v $$;
-- The entry at a chain position.
CREATE FUNCTION pg_temp.entry_at(m bigint, pos bigint) RETURNS bigint
    LANGUAGE sql AS $$ SELECT c.entry_id FROM tenancy.audit_chain c WHERE c.main_id = m AND c.chain_pos = pos $$;
-- Re-hash position pos (and only it) from its predecessor's stored hash.
CREATE FUNCTION pg_temp.rehash(m bigint, pos bigint) RETURNS void
    LANGUAGE sql AS $$
    UPDATE tenancy.audit_chain c SET hash = tenancy._audit_chain_step(NULL, p.hash, tenancy._audit_payload(l.main_id,
        l.id, c.chain_pos, l.account_path, l.at, l.actor_kind, l.actor_id, l.credential_id, l.action, l.target,
        l.row_key, l.change, c.sealed_at))
    FROM tenancy.audit_chain p, tenancy.audit_log l
    WHERE c.main_id = m AND c.chain_pos = pos AND p.main_id = m AND p.chain_pos = pos - 1
      AND l.main_id = m AND l.id = c.entry_id $$;

-- 1. A field edited.
BEGIN;
UPDATE tenancy.audit_log SET target = 'edited' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 7);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 2. A field edited and its own hash recomputed: the next entry no longer links.
BEGIN;
UPDATE tenancy.audit_log SET change = '{"n": 99}' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 7);
SELECT pg_temp.rehash(:main_id, 7);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 3. An entry deleted ...
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 5);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... with its chain row.
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 5);
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos = 5;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 4. A forged entry inserted in the middle (at position 6, the rest moved up) ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, id + 100000, xid, account_path, at, 'dba', 'mallory', 'forged', 'x'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 6);
UPDATE tenancy.audit_chain SET chain_pos = -chain_pos - 1 WHERE main_id = :main_id AND chain_pos >= 6;
UPDATE tenancy.audit_chain SET chain_pos = -chain_pos WHERE main_id = :main_id AND chain_pos < 0;
INSERT INTO tenancy.audit_chain (main_id, chain_pos, entry_xid, entry_id, account_path, hash, sealed_at)
SELECT main_id, 6, entry_xid, entry_id + 100000, account_path, hash, sealed_at
FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos = 7;
SELECT pg_temp.rehash(:main_id, 6);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and one appended after the end, correctly chained.
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, id + 100000, xid, account_path, at, 'dba', 'mallory', 'forged', 'x'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 12);
INSERT INTO tenancy.audit_chain (main_id, chain_pos, entry_xid, entry_id, account_path, hash, sealed_at)
SELECT main_id, 13, entry_xid, entry_id + 100000, account_path, hash, sealed_at
FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos = 12;
SELECT pg_temp.rehash(:main_id, 13);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and one inserted outside the chain, with an old time.
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), 3, :'main_path', now() - interval '1 hour', 'dba', 'forged');
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 5. Two entries swapped.
BEGIN;
UPDATE tenancy.audit_chain c SET entry_id = o.entry_id, entry_xid = o.entry_xid
FROM tenancy.audit_chain o
WHERE c.main_id = :main_id AND o.main_id = :main_id AND c.chain_pos IN (3, 4) AND o.chain_pos = 7 - c.chain_pos;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 6. The tail truncated.
BEGIN;
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos > 10;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 7. The tail truncated and the head re-sealed over the new end with a wrong key.
BEGIN;
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos > 10;
UPDATE tenancy.audit_heads h SET last_pos = 10,
    last_hash = (SELECT c.hash FROM tenancy.audit_chain c WHERE c.main_id = h.main_id AND c.chain_pos = 10),
    mac = tenancy._hmac_sha256(tenancy._random_bytes(32), 'a guess')
WHERE h.main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 8. The chain head deleted.
BEGIN;
DELETE FROM tenancy.audit_heads WHERE main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 9. An entry left unsealed for longer than the bound (is the sealer running?).
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), txid_current(), :'main_path', now() - interval '1 hour', 'dba', 'late');
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- What a superuser can still do: with the key (in tenancy.audit_keys) a
-- rewritten chain and head verify. Anchor heads outside the database.
BEGIN;
UPDATE tenancy.audit_log SET change = '{"n": 99}' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 12);
SELECT pg_temp.rehash(:main_id, 12);
UPDATE tenancy.audit_heads h SET last_hash = c.hash FROM tenancy.audit_chain c
WHERE h.main_id = :main_id AND c.main_id = h.main_id AND c.chain_pos = 12;
SELECT * FROM pg_temp.check(:'main');
UPDATE tenancy.audit_heads h SET mac = tenancy._audit_head_mac(h) WHERE h.main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- Everything undone: the chain verifies again.
SELECT * FROM pg_temp.check(:'main');

-- ---- verify: who may ------------------------------------------------------------------
SELECT bool_and(ok) AS all_mains_ok, count(*) FILTER (WHERE main_id = :main_id) AS listed
FROM tenancy.audit_verify();
SELECT * FROM tenancy.audit_verify('acc_1_000000000000');
SET ROLE tenancy_app;
SELECT * FROM tenancy.audit_verify();
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT ok, entries, reason FROM tenancy.audit_verify();
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'member_key') IS NOT NULL AS authenticated;
SELECT ok FROM tenancy.audit_verify();
ROLLBACK;
SELECT tenancy.audit_purge(:'main', now());
RESET ROLE;

-- ---- purge ---------------------------------------------------------------------------------
SELECT min(at) AS cut FROM tenancy.audit_log WHERE main_id = :main_id AND action = 'test.late' \gset
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.audit_purge(:'main', now());
ROLLBACK;
SELECT tenancy.audit_purge('acc_1_000000000000', now());
SELECT tenancy.audit_purge(:'main', :'cut');
SELECT tenancy.audit_purge(:'main', :'cut') AS purged_again;
SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT min(c.chain_pos) AS first_pos, max(c.chain_pos) AS last_pos, count(*) AS entries, count(c.entry_id) AS chained
FROM tenancy.audit_log l LEFT JOIN tenancy.audit_chain c ON c.main_id = l.main_id AND c.entry_id = l.id
WHERE l.main_id = :main_id;
SELECT action, actor_kind, change ->> 'purged_through_position' AS through, change ->> 'entries' AS purged,
       change ->> 'checkpoint_hash' = encode(h.base_hash, 'hex') AS checkpoint_in_head
FROM tenancy.audit_log l JOIN tenancy.audit_heads h USING (main_id)
WHERE main_id = :main_id AND action = 'audit.purge';
SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify(:'main');
-- The checkpoint still catches an edit of the first remaining entry's link.
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 9);
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND chain_pos = 9;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
BEGIN;
UPDATE tenancy.audit_heads h SET base_pos = 7 WHERE h.main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
