-- The SHA-256 chain per main account: sealing, verification, tampering of
-- every kind (as a superuser) caught and named, and the DBA's purge.
\set VERBOSITY terse
SET client_min_messages = warning;

-- The background sealer waits while this session holds the sealers' lock:
-- blocks form exactly where this test seals (taken before the first entry,
-- so that a busy machine's sealer cannot seal part of block 1 first).
SELECT pg_advisory_lock(1952804449, 1635083369);
SELECT tenancy.create_main_account('Chain Main', 'owner@chain.test', 'pw-chain-1') AS main \gset
SELECT tenancy.admin_create_api_key(:'main', 'owner key') AS owner_key \gset
SELECT tenancy.admin_create_api_key(:'main', 'member key', 'member') AS member_key \gset
SELECT a.main_id AS main_id, a.path::text AS main_path FROM tenancy.accounts a WHERE a.public_id = :'main' \gset

-- Block 1: the configuration entries so far; block 2: 4 events; block 3 (a
-- moment later): 4 more.
SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.early', format('e%s', g), jsonb_build_object('n', g)))
FROM generate_series(1, 4) g;
-- An aborted transaction's entry consumes an id, never a chain position.
BEGIN;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.aborted', 'x', NULL) > 0 AS written;
ROLLBACK;
SELECT tenancy.audit_seal() AS sealed_early;
SELECT pg_sleep(0.01);
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.late', format('l%s', g), jsonb_build_object('n', g)))
FROM generate_series(1, 4) g;
SELECT tenancy.audit_seal() AS sealed_late;
SELECT tenancy.audit_seal() AS nothing_left;
-- The chain: three blocks, positions 1..12, each entry once, in id order
-- within its block; every digest is its entry's.
SELECT first_pos, n, cardinality(entry_ids) = n AND cardinality(entry_xids) = n AS sized,
       length(digests) = 32 * n AND length(hash) = 32 AS hashed
FROM tenancy.audit_chain WHERE main_id = :main_id ORDER BY first_pos;
CREATE TEMP VIEW chained AS
SELECT c.main_id, c.first_pos + u.k - 1 AS pos, u.xid, u.id, substring(c.digests FROM (u.k::integer - 1) * 32 + 1 FOR 32) AS digest
FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k);
SELECT count(*) AS entries, count(c.id) AS chained, count(DISTINCT c.pos) AS positions,
       max(l.id) - min(l.id) + 1 > count(*) AS ids_have_gaps,
       array_agg(c.pos ORDER BY l.id) = array_agg(c.pos ORDER BY c.pos) AS in_id_order,
       bool_and(c.digest = tenancy._audit_entry_digest(l.main_id, l.id, l.account_path, l.at, l.actor_kind, l.actor_id,
           l.credential_id, l.action, l.target, l.row_key, l.change)) AS digests_match
FROM tenancy.audit_log l LEFT JOIN chained c ON c.main_id = l.main_id AND c.xid = l.xid AND c.id = l.id
WHERE l.main_id = :main_id;
-- Each block links to the one before; the head holds the last position and hash.
SELECT bool_and(c.hash = tenancy._audit_chain_step(NULL, coalesce(p.hash, '\x0000000000000000000000000000000000000000000000000000000000000000'),
                                                   tenancy._audit_block_link(c.first_pos, c.sealed_at, c.digests))) AS linked
FROM tenancy.audit_chain c
LEFT JOIN tenancy.audit_chain p ON p.main_id = c.main_id AND p.first_pos + p.n = c.first_pos
WHERE c.main_id = :main_id;
SELECT h.last_pos, h.last_hash = c.hash AS head_matches, h.base_pos
FROM tenancy.audit_heads h JOIN tenancy.audit_chain c ON c.main_id = h.main_id AND c.first_pos + c.n - 1 = h.last_pos
WHERE h.main_id = :main_id;
SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify(:'main');
-- The link's input is checked.
SELECT tenancy._audit_block_link(1, now(), '\x00');
SELECT tenancy._audit_block_link(1, NULL, '\x00');

-- ---- tampering (superuser), each undone afterwards -------------------------------------
CREATE FUNCTION pg_temp.check(account text) RETURNS TABLE (ok boolean, first_bad bigint, reason text)
    LANGUAGE sql AS $$
    SELECT v.ok, v.first_bad, regexp_replace(v.reason, '(entry|account) [0-9]+', '\1 N', 'g')
    FROM tenancy.audit_verify(account) v $$;
-- The entry at a chain position.
CREATE FUNCTION pg_temp.entry_at(m bigint, at_pos bigint) RETURNS bigint
    LANGUAGE sql AS $$ SELECT c.id FROM pg_temp.chained c WHERE c.main_id = m AND c.pos = at_pos $$;
-- Re-seal the block at first_pos (and only it) over its listed entries, from
-- the stored hash of the block before.
CREATE FUNCTION pg_temp.rehash(m bigint, fp bigint) RETURNS void
    LANGUAGE sql AS $$
    UPDATE tenancy.audit_chain c SET n = cardinality(c.entry_ids),
        digests = (SELECT string_agg(tenancy._audit_entry_digest(l.main_id, l.id, l.account_path, l.at, l.actor_kind,
                              l.actor_id, l.credential_id, l.action, l.target, l.row_key, l.change), ''::bytea ORDER BY u.k)
                   FROM unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
                   JOIN tenancy.audit_log l ON l.main_id = m AND l.xid = u.xid AND l.id = u.id)
    WHERE c.main_id = m AND c.first_pos = fp;
    UPDATE tenancy.audit_chain c SET hash = tenancy._audit_chain_step(NULL,
            (SELECT p.hash FROM tenancy.audit_chain p WHERE p.main_id = m AND p.first_pos < fp ORDER BY p.first_pos DESC LIMIT 1),
            tenancy._audit_block_link(c.first_pos, c.sealed_at, c.digests))
    WHERE c.main_id = m AND c.first_pos = fp $$;
SELECT first_pos AS b2, first_pos + n AS b3 FROM tenancy.audit_chain WHERE main_id = :main_id ORDER BY first_pos OFFSET 1 LIMIT 1 \gset

-- 1. A field edited.
BEGIN;
UPDATE tenancy.audit_log SET target = 'edited' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2 + 2);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 2. A field edited and its block re-sealed: the next block no longer links.
BEGIN;
UPDATE tenancy.audit_log SET change = '{"n": 99}' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2 + 2);
SELECT pg_temp.rehash(:main_id, :b2);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 3. An entry deleted ...
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and from its block.
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2);
UPDATE tenancy.audit_chain SET entry_xids = entry_xids[2:], entry_ids = entry_ids[2:], n = n - 1,
    digests = substring(digests FROM 33)
WHERE main_id = :main_id AND first_pos = :b2;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and its block re-sealed.
BEGIN;
DELETE FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2);
UPDATE tenancy.audit_chain SET entry_xids = entry_xids[2:], entry_ids = entry_ids[2:]
WHERE main_id = :main_id AND first_pos = :b2;
SELECT pg_temp.rehash(:main_id, :b2);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 4. A forged entry inserted in the middle of block 2, the block re-sealed
-- and the next one moved up ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, id + 100000, xid, account_path, at, 'dba', 'mallory', 'forged', 'x'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2 + 1);
UPDATE tenancy.audit_chain SET entry_xids = entry_xids[1:1] || entry_xids[2] || entry_xids[2:],
    entry_ids = entry_ids[1:1] || entry_ids[2] + 100000 || entry_ids[2:]
WHERE main_id = :main_id AND first_pos = :b2;
SELECT pg_temp.rehash(:main_id, :b2);
UPDATE tenancy.audit_chain SET first_pos = first_pos + 1 WHERE main_id = :main_id AND first_pos = :b3;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and one appended after the end in a correctly linked block.
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, id + 100000, xid, account_path, at, 'dba', 'mallory', 'forged', 'x'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 12);
INSERT INTO tenancy.audit_chain (main_id, first_pos, n, entry_xids, entry_ids, digests, hash, sealed_at)
SELECT main_id, 13, 1, ARRAY[xid], ARRAY[id + 100000], '\x00', '\x00', now()
FROM pg_temp.chained WHERE main_id = :main_id AND pos = 12;
SELECT pg_temp.rehash(:main_id, 13);
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- ... and one inserted outside the chain. Whether an entry should be in the
-- chain is decided by its transaction id against the snapshot of the
-- sealer's last round, never by its time (which the forger writes); verify
-- names it: first_bad is then the entry's id (it has no chain position).
CREATE FUNCTION pg_temp.check_outside(account text, forged bigint) RETURNS TABLE (ok boolean, names_it boolean, reason text)
    LANGUAGE sql AS $$
    SELECT v.ok, v.first_bad = forged, regexp_replace(v.reason, '(entry|account|transaction) [0-9]+', '\1 N', 'g')
    FROM tenancy.audit_verify(account) v $$;
-- With an old time and an old transaction id ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), 3, :'main_path', now() - interval '1 hour', 'dba', 'forged')
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
ROLLBACK;
-- ... dated 50 years ahead (the bound on `at` never came) ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), 3, :'main_path', now() + interval '50 years', 'dba', 'forged')
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
ROLLBACK;
-- ... dated now, with the transaction id of a chained entry (a copy of one
-- with another id) ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, nextval('tenancy.audit_seq'), xid, account_path, now(), 'dba', 'mallory', 'forged', 'x'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2 + 1)
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
-- (the DBA's verification of every main account, and the owner's in its
-- context, name it too)
SELECT v.ok, v.first_bad = :forged AS names_it FROM tenancy.audit_verify() v WHERE v.main_id = :main_id;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT v.ok, v.first_bad = :forged AS names_it FROM tenancy.audit_verify() v;
ROLLBACK;
-- ... an altered copy of a chained entry, with its xid and id (readers of
-- the chain see the original, readers of audit_log both) ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, actor_id, action, target)
SELECT main_id, id, xid, account_path, at, actor_kind, actor_id, action, 'altered copy'
FROM tenancy.audit_log WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, :b2 + 1)
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
SELECT count(*) AS rows_with_that_id, count(*) FILTER (WHERE target = 'altered copy') AS altered
FROM tenancy.audit_log WHERE main_id = :main_id AND id = :forged;
ROLLBACK;
-- ... with a transaction id no transaction has had yet ...
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), txid_current() + 1000000, :'main_path', now(), 'dba', 'forged')
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
ROLLBACK;
-- ... and with a transaction id the sealer has not seen yet, dated ahead.
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), txid_current(), :'main_path', now() + interval '50 years', 'dba', 'forged')
RETURNING id AS forged \gset
SELECT * FROM pg_temp.check_outside(:'main', :forged);
ROLLBACK;
-- 5. Two entries swapped in their block.
BEGIN;
UPDATE tenancy.audit_chain SET entry_xids = entry_xids[1:0] || entry_xids[2] || entry_xids[1] || entry_xids[3:],
    entry_ids = entry_ids[1:0] || entry_ids[2] || entry_ids[1] || entry_ids[3:]
WHERE main_id = :main_id AND first_pos = :b2;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 6. The tail truncated.
BEGIN;
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND first_pos = :b3;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- 7. The tail truncated and the head re-sealed over the new end with a wrong key.
BEGIN;
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND first_pos = :b3;
UPDATE tenancy.audit_heads h SET last_pos = :b3 - 1,
    last_hash = (SELECT c.hash FROM tenancy.audit_chain c WHERE c.main_id = h.main_id AND c.first_pos = :b2),
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
VALUES (:main_id, nextval('tenancy.audit_seq'), txid_current(), :'main_path', now() - interval '1 hour', 'dba', 'late')
RETURNING id AS late \gset
SELECT * FROM pg_temp.check_outside(:'main', :late);
ROLLBACK;
-- 10. A block row altered: its size, its sealing time.
BEGIN;
UPDATE tenancy.audit_chain SET n = n + 1 WHERE main_id = :main_id AND first_pos = :b2;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
BEGIN;
UPDATE tenancy.audit_chain SET sealed_at = sealed_at + interval '1 second' WHERE main_id = :main_id AND first_pos = :b2;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- What a superuser can still do: with the key (in tenancy.audit_keys) a
-- rewritten chain and head verify. Anchor heads outside the database.
BEGIN;
UPDATE tenancy.audit_log SET change = '{"n": 99}' WHERE main_id = :main_id AND id = pg_temp.entry_at(:main_id, 12);
SELECT pg_temp.rehash(:main_id, :b3);
UPDATE tenancy.audit_heads h SET last_hash = c.hash FROM tenancy.audit_chain c
WHERE h.main_id = :main_id AND c.main_id = h.main_id AND c.first_pos = :b3;
SELECT * FROM pg_temp.check(:'main');
UPDATE tenancy.audit_heads h SET mac = tenancy._audit_head_mac(h) WHERE h.main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
-- Everything undone: the chain verifies again.
SELECT * FROM pg_temp.check(:'main');
-- Entries committed after the sealer's last round and dated now only wait
-- for the next round: not reported (the background sealer waits for this
-- session's lock).
SELECT tenancy.create_main_account('Chain Waiting', 'owner@waiting.chain.test', 'pw-chain-2') AS waiting \gset
SELECT count(*) > 0 AS entries_waiting FROM tenancy.audit_log l JOIN tenancy.accounts a ON a.main_id = l.main_id
WHERE a.public_id = :'waiting';
SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify(:'waiting');
SELECT pg_advisory_unlock(1952804449, 1635083369);

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
-- Whole blocks were purged: blocks 1 and 2 (all older than the cut).
SELECT min(c.pos) AS first_pos, max(c.pos) AS last_pos, count(*) AS entries, count(c.id) AS chained
FROM tenancy.audit_log l LEFT JOIN pg_temp.chained c ON c.main_id = l.main_id AND c.xid = l.xid AND c.id = l.id
WHERE l.main_id = :main_id;
SELECT action, actor_kind, change ->> 'purged_through_position' AS through, change ->> 'entries' AS purged,
       change ->> 'checkpoint_hash' = encode(h.base_hash, 'hex') AS checkpoint_in_head
FROM tenancy.audit_log l JOIN tenancy.audit_heads h USING (main_id)
WHERE main_id = :main_id AND action = 'audit.purge';
SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify(:'main');
-- The checkpoint still catches the first remaining block removed.
BEGIN;
DELETE FROM tenancy.audit_log l USING pg_temp.chained c
WHERE c.main_id = :main_id AND c.pos BETWEEN :b3 AND 12 AND l.main_id = c.main_id AND l.xid = c.xid AND l.id = c.id;
DELETE FROM tenancy.audit_chain WHERE main_id = :main_id AND first_pos = :b3;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;
BEGIN;
UPDATE tenancy.audit_heads h SET base_pos = 7 WHERE h.main_id = :main_id;
SELECT * FROM pg_temp.check(:'main');
ROLLBACK;

-- ---- a round larger than a block -----------------------------------------------------
-- 5,000 entries of one main account in one round: blocks of 4,096 and 904,
-- in (xid, id) order, linked, the head at the end; the chain verifies.
SELECT pg_advisory_lock(1952804449, 1635083369);
SELECT tenancy.audit_seal() >= 0 AS sealed;
SELECT last_pos AS before_bulk FROM tenancy.audit_heads WHERE main_id = :main_id \gset
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.bulk', format('b%s', g), jsonb_build_object('n', g)))
FROM generate_series(1, 5000) g;
SELECT tenancy.audit_seal() AS sealed_bulk;
SELECT first_pos - :before_bulk AS offset, n, entry_ids = (SELECT array_agg(x ORDER BY x) FROM unnest(entry_ids) x) AS in_id_order
FROM tenancy.audit_chain WHERE main_id = :main_id AND first_pos > :before_bulk ORDER BY first_pos;
SELECT last_pos - :before_bulk AS head_moved FROM tenancy.audit_heads WHERE main_id = :main_id;
SELECT ok, first_bad, reason FROM tenancy.audit_verify(:'main');
-- Entries of one transaction, some written in subtransactions that rolled
-- back: they share the transaction's xid, so the index cannot tell them
-- apart; the sealer's visibility check on the page does, and only the
-- committed ones are chained.
BEGIN;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.sub', 'kept-1', NULL) > 0 AS written;
SAVEPOINT s1;
SELECT count(tenancy._audit_record(:main_id, :'main_path', 'test.sub', format('undone-%s', g), NULL))
FROM generate_series(1, 300) g;
ROLLBACK TO SAVEPOINT s1;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.sub', 'kept-2', NULL) > 0 AS written;
SAVEPOINT s2;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.sub', 'undone-again', NULL) > 0 AS written;
ROLLBACK TO SAVEPOINT s2;
COMMIT;
SELECT tenancy.audit_seal() AS sealed_sub;
SELECT array_agg(l.target ORDER BY l.id) AS chained_targets
FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
JOIN tenancy.audit_log l ON l.xid = u.xid AND l.id = u.id AND l.main_id = c.main_id
WHERE c.main_id = :main_id AND l.action = 'test.sub';
SELECT ok, first_bad, reason FROM tenancy.audit_verify(:'main');
-- The sealer reads new entries through the log's xid index: without it, a
-- clear error and nothing sealed.
BEGIN;
SELECT tenancy._audit_record(:main_id, :'main_path', 'test.noindex', 'x', NULL) > 0 AS written;
DROP INDEX tenancy.audit_log_xid;
SELECT tenancy.audit_seal();
ROLLBACK;
-- Blocks record where their entries are: every bulk entry is at its TID.
SET enable_nestloop = off;  -- (the checks below join the log by (xid, id): one hash join)
SELECT bool_and(l.ctid = c.entry_tids[u.k]) AS at_recorded_tids, count(*) AS bulk_entries
FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
JOIN tenancy.audit_log l ON l.xid = u.xid AND l.id = u.id AND l.main_id = c.main_id
WHERE c.main_id = :main_id AND l.action = 'test.bulk';
-- The log's BRIN index summarises a range only when asked: the sealer asks
-- for the ranges the writers have left behind (all but the last 512 + 32
-- pages), so its rounds do not read an ever longer unsummarised tail.
-- (In the installation's chain, main_id 0: this main account's chain stays
-- small for the slow lookups below.)
SELECT count(tenancy._audit_record(0, NULL, 'test.many', format('m%s', g), jsonb_build_object('pad', repeat('x', 200))))
FROM generate_series(1, 40000) g;
SELECT tenancy.audit_seal() AS sealed_many;
SELECT pg_relation_size('tenancy.audit_log') / 8192 > 512 + 2 * 32 AS log_past_the_margin,
       brin_summarize_range('tenancy.audit_log_xid', 0) AS first_range_left_to_summarize,
       brin_summarize_range('tenancy.audit_log_xid', pg_relation_size('tenancy.audit_log') / 8192 - 1) AS last_range_left_to_summarize;
-- VACUUM FULL moves every entry: readers find them by xid instead (slowly),
-- the chain still verifies, and audit_relocate() records the new places.
VACUUM FULL tenancy.audit_log;
SELECT count(*) FILTER (WHERE l.ctid = c.entry_tids[u.k]) < count(*) AS entries_moved
FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
JOIN tenancy.audit_log l ON l.xid = u.xid AND l.id = u.id AND l.main_id = c.main_id
WHERE c.main_id = :main_id AND l.action = 'test.bulk';
SELECT ok, first_bad, reason FROM tenancy.audit_verify(:'main');
SELECT tenancy.audit_relocate() > 0 AS relocated, tenancy.audit_relocate() AS relocated_again;
SELECT bool_and(l.ctid = c.entry_tids[u.k]) AS at_recorded_tids_again
FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
JOIN tenancy.audit_log l ON l.xid = u.xid AND l.id = u.id AND l.main_id = c.main_id;
RESET enable_nestloop;
SELECT ok, first_bad, reason FROM tenancy.audit_verify(:'main');
SELECT pg_advisory_unlock(1952804449, 1635083369);
-- The heads' MAC is HMAC-SHA-256 (RFC 4231 test cases 1 and 6: a short and
-- a longer-than-a-block key), also when calls with different keys alternate.
SELECT encode(tenancy._hmac_sha256(decode(repeat('0b', 20), 'hex'), k.data), 'hex') = k.want AS rfc4231_case1,
       encode(tenancy._hmac_sha256(decode(repeat('aa', 131), 'hex'),
              'Test Using Larger Than Block-Size Key - Hash Key First'), 'hex')
         = '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54' AS rfc4231_case6
FROM (VALUES ('Hi There', 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7'),
             ('Hi There', 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7')) k(data, want);
