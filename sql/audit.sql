-- The audit log: what the trigger records (actor, action, target, row key,
-- changed columns, never secrets), events, and who may read what.
\set VERBOSITY terse
SET client_min_messages = warning;

-- A main account with a subaccount, and keys of several roles.
SELECT tenancy.create_main_account('Audit Main', 'owner@audit.test', 'pw-audit-1') AS main \gset
SELECT tenancy.create_main_account('Audit Other', 'owner@other.test', 'pw-audit-2') AS other \gset
SELECT tenancy.admin_create_api_key(:'main', 'owner key') AS owner_key \gset
SELECT tenancy.admin_create_api_key(:'main', 'admin key', 'admin') AS admin_key \gset
SELECT tenancy.admin_create_api_key(:'main', 'member key', 'member') AS member_key \gset
SELECT tenancy.admin_create_api_key(:'main', 'sub-user key', 'sub_user') AS subuser_key \gset
SELECT tenancy.admin_create_api_key(:'other', 'other key') AS other_key \gset
SELECT a.main_id AS main_id FROM tenancy.accounts a WHERE a.public_id = :'main' \gset

BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.create_account(:'main', 'Child') AS child \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'child', 'child key') AS child_key \gset

-- Configuration tables are audited: the DBA's writes carry session_user.
SELECT target, action, actor_kind, actor_id, credential_id IS NULL AS no_credential,
       row_key ? 'main_id' AS keyed
FROM tenancy.audit_log WHERE main_id = :main_id AND actor_kind = 'dba' AND action = 'insert'
ORDER BY id;

-- Never a secret: api_key_secrets is not audited, and no entry holds a hash.
SELECT count(*) AS secret_entries FROM tenancy.audit_log
WHERE target IN ('tenancy.api_key_secrets', 'tenancy.context_keys', 'tenancy.audit_log')
   OR change::text ~* '(secret_hash|password_hash|tnc_[0-9]+_[0-9]+_[A-Za-z0-9_-]{43})';

-- The subaccount was created through the owner key: actor = that key (by its
-- public id, as whoami() names it) and its credential.
SELECT e.actor_kind, e.actor_id = k.public_id AS actor_is_key, e.credential_id = k.id AS credential_is_key,
       e.change -> 'new' ->> 'name' AS name, e.account_path::text = a.path::text AS recorded_at_new_account
FROM tenancy.audit_log e
JOIN tenancy.accounts a ON a.public_id = :'child'
JOIN tenancy.api_keys k ON k.main_id = a.main_id AND k.name = 'owner key'
WHERE e.main_id = :main_id AND e.target = 'tenancy.accounts' AND e.action = 'insert'
  AND e.change -> 'new' ->> 'public_id' = :'child';

-- An application table under tenancy: secrets are stripped, updates carry only
-- changed columns, deletes the old row.
CREATE TABLE public.audit_agents (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    prompt text,
    temperature numeric,
    settings jsonb,
    webhook_token text,
    password_hint text,
    api_secret text,
    client_hash bytea
);
SELECT tenancy.protect('public.audit_agents', 'agents');
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.audit_agents'::regclass AND NOT tgisinternal;

BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SET LOCAL ROLE tenancy_app;
INSERT INTO public.audit_agents (name, prompt, temperature, settings, webhook_token, password_hint, api_secret, client_hash)
VALUES ('Ava', E'Say "hi"\n\tplease', 0.5, '{"voice": "alloy"}', 'tok-1', 'pw', 'sec', '\x01');
UPDATE public.audit_agents SET temperature = 'NaN', webhook_token = 'tok-2' WHERE name = 'Ava';
UPDATE public.audit_agents SET webhook_token = webhook_token WHERE name = 'Ava';  -- no change: no entry
DELETE FROM public.audit_agents WHERE name = 'Ava';
COMMIT;

SELECT action, row_key ? 'id' AS keyed,
       change #- '{new,main_id}' #- '{new,account_path}' #- '{old,main_id}' #- '{old,account_path}' AS change
FROM tenancy.audit_log WHERE target = 'public.audit_agents' ORDER BY id;

-- Column values become JSON by type: booleans and numbers as such (NaN and
-- infinities as strings), json and jsonb nested, everything else as its
-- text output; a composite key is the key object.
CREATE DOMAIN public.audit_label AS text CHECK (VALUE <> '');
CREATE TABLE public.audit_types (
    k1 integer, k2 text,
    b boolean, i2 smallint, i8 bigint, n numeric, n_nan numeric, n_inf numeric,
    f4 real, f8 double precision, f8_big double precision, f8_inf double precision, f8_nan double precision,
    t text, vc varchar(20), ch char(4), d public.audit_label, j json, js jsonb, js_scalar jsonb, js_null jsonb,
    ts timestamptz, by bytea, u uuid, arr integer[], nothing text,
    PRIMARY KEY (k1, k2)
);
SELECT tenancy.protect('public.audit_types', 'agents');
SET TIME ZONE 'UTC';
INSERT INTO public.audit_types (account_path, k1, k2, b, i2, i8, n, n_nan, n_inf, f4, f8, f8_big, f8_inf, f8_nan,
                                t, vc, ch, d, j, js, js_scalar, js_null, ts, by, u, arr)
SELECT a.path, 7, 'k', true, -3, 9223372036854775807, 12.340, 'NaN', '-Infinity', 1.5, 0.1, 1e20, 'Infinity', 'NaN',
       E'quote " backslash \\ tab \t nl \n bell \x07 é', 'short', 'ab', 'label',
       '{"z": [1, {"y": null}], "a": "x"}', '{"b": [true, 2.50], "a": {}}', '"just a string"', 'null',
       '2026-11-23 10:00:00+00', '\xdead', '00000000-0000-0000-0000-000000000001', '{1,NULL,3}'
FROM tenancy.accounts a WHERE a.public_id = :'main';
UPDATE public.audit_types SET f8 = -2.5e-7, js = '[1, "two"]', nothing = 'now set', b = false;
RESET TIME ZONE;
SELECT action, row_key, jsonb_pretty(change) AS change
FROM tenancy.audit_log WHERE target = 'public.audit_types' ORDER BY id;
-- The stored images are jsonb that round-trips through its own text.
SELECT bool_and(change = change::text::jsonb AND row_key = row_key::text::jsonb) AS round_trips
FROM tenancy.audit_log WHERE target = 'public.audit_types';
DROP TABLE public.audit_types;
DROP DOMAIN public.audit_label;

-- Moving rows of an account along with it is recorded once, on accounts.
SELECT count(*) AS entries_before_move FROM tenancy.audit_log WHERE main_id = :main_id \gset
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SET LOCAL ROLE tenancy_app;
INSERT INTO public.audit_agents (name, account_path)
SELECT 'Child agent', a.path FROM tenancy.accounts a WHERE a.public_id = :'child';
SELECT tenancy.create_account(:'main', 'New parent') AS new_parent \gset
SELECT tenancy.move_account(:'child', :'new_parent');
COMMIT;
-- (An insert's image leaves out the row's account columns: they are the
-- entry's own account_path and main_id. The move's update shows the path.)
SELECT target, action, change -> 'new' ? 'path' AS path_changed
FROM tenancy.audit_log WHERE main_id = :main_id ORDER BY id OFFSET :entries_before_move;

-- Events: audit_event in a context (secret-looking keys dropped).
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.audit_event('api.request', 'GET /v1/agents',
    '{"method": "GET", "status": 200, "request_id": "r-1", "access_token": "x", "password": "y", "key_hash": "z"}') > 0 AS recorded;
SELECT action, target, change, actor_kind FROM tenancy.audit_log WHERE action = 'api.request';
COMMIT;
-- ... also nested: members of objects at any depth, inside arrays too, any
-- case and any key length (the column rule of the row trigger).
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.audit_event('api.nested', 'POST /v1/x',
    '{"status": 201, "headers": {"Authorization_Token": "t1", "accept": "json"},
      "items": [{"PassWord": "p1", "n": 1}, [{"client_secret": "s1"}], "password"],
      "deep": {"a": {"b": {"refresh_token": {"v": "t2"}, "keep": true}}}}') > 0 AS recorded;
SELECT change FROM tenancy.audit_log WHERE action = 'api.nested';
SELECT change::text ~* '(t1|p1|s1|t2)' AS a_secret_is_stored FROM tenancy.audit_log WHERE action = 'api.nested';
COMMIT;
SELECT tenancy._audit_redact_detail(jsonb_build_object(repeat('x', 100) || 'Token', 1, 'password_hint', 2,
           'pass', 3, 'hash', 4, 'ok', 5)) AS long_and_short_keys,
       tenancy._audit_redact_detail('{"secret": {"a": [1, {"b": 2}]}, "z": [{}]}') AS container_skipped,
       tenancy._audit_redact_detail('"token"') AS scalar_root,
       tenancy._audit_redact_detail('[{"token": 1}, 2]') AS array_root;
-- ... refused outside a context and with bad input.
SET ROLE tenancy_app;
SELECT tenancy.audit_event('api.request', 'GET /');
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.audit_event('', 'x');
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT tenancy.audit_event('api.request', 'x', '[1, 2]');
ROLLBACK;
-- The internal writer is not for clients.
SELECT tenancy._audit_record(1, '1', 'login.success', 'x', NULL);
RESET ROLE;
-- _audit_record checks its input (for the identity and core code).
SELECT tenancy._audit_record(5, '6.5', 'login.success', 'x', NULL);
SELECT tenancy._audit_record(:main_id, NULL, 'login.success', 'x', NULL);
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'login.failure', 'owner@audit.test',
                             '{"reason": "bad password"}') > 0 AS recorded;
SELECT actor_kind, actor_id, action, target, change FROM tenancy.audit_log WHERE action = 'login.failure';
-- An explicit actor (events before any context exists) and the
-- installation's chain (main_id 0, no path) for events naming no account.
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'login.success', 'owner@audit.test',
                             NULL, 'user', '42', 7) > 0 AS recorded;
SELECT tenancy._audit_record(0, NULL, 'login.failure', 'nobody@audit.test', '{"reason": "unknown"}',
                             'anonymous') > 0 AS recorded;
SELECT main_id, account_path, actor_kind, actor_id, credential_id, action, target
FROM tenancy.audit_log WHERE action IN ('login.success', 'login.failure') AND actor_kind <> 'dba' ORDER BY main_id DESC;
SELECT tenancy._audit_record(0, (:main_id)::text::tenancy.account_path, 'login.failure', 'x', NULL, 'anonymous');
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'login.failure', 'x', NULL, 'root');

-- After its move the child's new entries lie under its new path.
SELECT tenancy.admin_create_api_key(:'child', 'child key after the move') IS NOT NULL AS created;

-- ---- who reads what ----------------------------------------------------------------
SET ROLE tenancy_app;
-- No context: nothing.
SELECT count(*) AS visible_without_context FROM tenancy.audit_log;
-- The owner of the main account reads its whole subtree, nothing of another main account.
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT count(*) > 0 AS owner_reads,
       bool_and(main_id = :main_id) AS only_own_main,
       count(*) FILTER (WHERE account_path::text LIKE '%.%') > 0 AS sees_child_entries
FROM tenancy.audit_log;
COMMIT;
-- Admin may read the log; member and sub_user may not.
BEGIN;
SELECT tenancy.authenticate(:'admin_key') IS NOT NULL AS authenticated;
SELECT count(*) > 0 AS admin_reads FROM tenancy.audit_log;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'member_key') IS NOT NULL AS authenticated;
SELECT count(*) AS member_reads FROM tenancy.audit_log;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'subuser_key') IS NOT NULL AS authenticated;
SELECT count(*) AS sub_user_reads FROM tenancy.audit_log;
COMMIT;
-- The child reads its own subtree only: never the parent's entries.
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT count(*) > 0 AS child_reads,
       bool_and(account_path::text LIKE '%.%') AS only_below_main
FROM tenancy.audit_log;
COMMIT;
-- Another main account sees none of these.
BEGIN;
SELECT tenancy.authenticate(:'other_key') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE main_id = :main_id) AS other_main_reads FROM tenancy.audit_log;
COMMIT;
-- audit_trail (the indexed read path, sealed entries with position, digest and block)
-- shows each reader exactly what audit_log's policy shows it.
RESET ROLE;
SELECT tenancy.audit_seal() >= 0 AS sealed;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
SELECT (SELECT count(*) FROM tenancy.audit_trail) = (SELECT count(*) FROM tenancy.audit_log) AS owner_trail_matches,
       (SELECT bool_and(length(digest) = 32 AND length(block_hash) = 32 AND chain_pos >= block_pos)
        FROM tenancy.audit_trail) AS with_chain;
-- It has an index path: the chain's key by main account (newest blocks
-- first), then each entry at its TID.
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    line text;
    plan text := '';
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        plan := plan || line || E'\n';
    END LOOP;
    RETURN plan;
END $$;
SET LOCAL enable_seqscan = off;
SELECT p LIKE '%audit_chain_pkey%' AS by_main_account, p LIKE '%Tid Scan on audit_log%' AS entry_by_tid
FROM pg_temp.plan_of('SELECT * FROM tenancy.audit_trail ORDER BY block_pos DESC, chain_pos DESC LIMIT 20') p;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT (SELECT count(*) FROM tenancy.audit_trail) = (SELECT count(*) FROM tenancy.audit_log) AS child_trail_matches,
       (SELECT count(*) FROM tenancy.audit_trail) > 0 AS child_trail_reads,
       (SELECT bool_and(account_path::text LIKE '%.%') FROM tenancy.audit_trail) AS only_below_main;
-- A child verifies its main chain but learns only its own entry count.
SELECT v.ok, v.entries = (SELECT count(*) FROM tenancy.audit_trail) AS own_count_only, v.reason
FROM tenancy.audit_verify() v;
COMMIT;
-- An entry slipped into the log behind the chain's back (a superuser's
-- insert) is named to the child only if it lies in the child's subtree.
RESET ROLE;
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
SELECT :main_id, nextval('tenancy.audit_seq'), 3, a.path, now(), 'dba', 'forged'
FROM tenancy.accounts a WHERE a.public_id = :'child'
RETURNING id AS forged \gset
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT v.ok, v.first_bad = :forged AS names_it, regexp_replace(v.reason, '[0-9]+', 'N', 'g') AS reason
FROM tenancy.audit_verify() v;
ROLLBACK;
BEGIN;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, nextval('tenancy.audit_seq'), 3, (:main_id)::text::tenancy.account_path, now(), 'dba', 'forged');
SET LOCAL ROLE tenancy_app;
SELECT tenancy.authenticate(:'child_key') IS NOT NULL AS authenticated;
SELECT v.ok, v.first_bad, v.reason FROM tenancy.audit_verify() v;
ROLLBACK;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'member_key') IS NOT NULL AS authenticated;
SELECT count(*) AS member_trail_reads FROM tenancy.audit_trail;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'other_key') IS NOT NULL AS authenticated;
SELECT count(*) FILTER (WHERE main_id = :main_id) AS other_main_trail_reads FROM tenancy.audit_trail;
COMMIT;
SELECT count(*) AS trail_without_context FROM tenancy.audit_trail;
SELECT count(*) FROM tenancy.audit_chain;
-- tenancy_app can only read, in or out of a context.
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
INSERT INTO tenancy.audit_log (main_id, id, xid, account_path, at, actor_kind, action)
VALUES (:main_id, 0, 1, (:main_id)::text::tenancy.account_path, now(), 'dba', 'forged');
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
UPDATE tenancy.audit_log SET action = 'x';
ROLLBACK;
BEGIN;
SELECT tenancy.authenticate(:'owner_key') IS NOT NULL AS authenticated;
DELETE FROM tenancy.audit_log;
ROLLBACK;
SELECT * FROM tenancy.audit_heads;
SELECT * FROM tenancy.audit_keys;
RESET ROLE;
-- Neither can the DBA role directly (it purges through audit_purge).
SET ROLE tenancy_admin;
DELETE FROM tenancy.audit_log;
RESET ROLE;

-- The trigger refuses misuse.
CREATE TABLE public.audit_misuse (x int);
CREATE TRIGGER t AFTER INSERT ON public.audit_misuse FOR EACH ROW EXECUTE FUNCTION tenancy._audit_trigger();
INSERT INTO public.audit_misuse VALUES (1);
DROP TABLE public.audit_misuse;

-- Indexes a DBA adds to the log are maintained: a plain one on the direct
-- write path, one with an expression through the executor.
CREATE INDEX audit_log_test_at ON tenancy.audit_log (main_id, at);
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'test.plain_index', 't', NULL) > 0 AS written;
CREATE INDEX audit_log_test_expr ON tenancy.audit_log (lower(action));
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'Test.Expr_Index', 't', NULL) > 0 AS written;
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT count(*) AS by_plain_index FROM tenancy.audit_log
WHERE main_id = :main_id AND at > now() - interval '1 hour' AND action LIKE 'test.plain%';
SELECT count(*) AS by_expression_index FROM tenancy.audit_log WHERE lower(action) = 'test.expr_index';
SELECT (SELECT count(*) FROM tenancy.audit_log WHERE lower(action) = 'test.expr_index')
     = (SELECT count(*) FROM tenancy.audit_log l WHERE l.xid > 0 AND l.action = 'Test.Expr_Index') AS expr_index_complete;
SELECT pg_temp.plan_of(format('SELECT count(*) FROM tenancy.audit_log WHERE main_id = %s AND at > now() - interval ''1 hour''', :main_id))
           LIKE '%audit_log_test_at%' AS plain_index_used,
       pg_temp.plan_of('SELECT count(*) FROM tenancy.audit_log WHERE lower(action) = ''test.expr_index''')
           LIKE '%audit_log_test_expr%' AS expression_index_used;
ROLLBACK;
DROP INDEX tenancy.audit_log_test_at, tenancy.audit_log_test_expr;
-- An index of another access method also goes through the executor; an
-- index created after this session cached the log's indexes is maintained.
CREATE INDEX audit_log_test_hash ON tenancy.audit_log USING hash (target);
SELECT tenancy._audit_record(:main_id, (:main_id)::text::tenancy.account_path, 'test.hash_index', 'hash-t', NULL) > 0 AS written;
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT count(*) AS by_hash_index FROM tenancy.audit_log WHERE target = 'hash-t';
SELECT pg_temp.plan_of('SELECT count(*) FROM tenancy.audit_log WHERE target = ''hash-t''')
           LIKE '%audit_log_test_hash%' AS hash_index_used;
ROLLBACK;
DROP INDEX tenancy.audit_log_test_hash;

-- The writer keeps the target's name and reserves ids per backend: a
-- renamed table or schema is named anew at once, and one backend's entries
-- are numbered in order.
CREATE SCHEMA audit_names;
CREATE TABLE audit_names.renamed (id bigint PRIMARY KEY, name text);
SELECT tenancy.protect('audit_names.renamed', 'agents');
INSERT INTO audit_names.renamed (id, name, account_path) VALUES (1, 'a', (:main_id)::text::tenancy.account_path);
ALTER TABLE audit_names.renamed RENAME TO renamed_table;
INSERT INTO audit_names.renamed_table (id, name, account_path) VALUES (2, 'b', (:main_id)::text::tenancy.account_path);
ALTER SCHEMA audit_names RENAME TO audit_names_2;
INSERT INTO audit_names_2.renamed_table (id, name, account_path) VALUES (3, 'c', (:main_id)::text::tenancy.account_path);
SELECT row_key ->> 'id' AS row, target FROM tenancy.audit_log WHERE target LIKE 'audit_names%' ORDER BY id;
SELECT array_agg(id ORDER BY id) = array_agg(id ORDER BY row_key ->> 'id') AS ids_in_write_order
FROM tenancy.audit_log WHERE target LIKE 'audit_names%';
DROP SCHEMA audit_names_2 CASCADE;

-- audit_entries(): the DBA's reader of the whole log; on one node exactly
-- this node's audit_log (all of it, or one main account's); refused to
-- clients (tenancy_app), granted to tenancy_admin.
SELECT (SELECT count(*) FROM tenancy.audit_entries()) = (SELECT count(*) FROM tenancy.audit_log) AS entries_all,
       (SELECT count(*) FROM tenancy.audit_entries(:main_id))
         = (SELECT count(*) FROM tenancy.audit_log WHERE main_id = :main_id) AS entries_of_main,
       (SELECT count(*) FROM tenancy.audit_entries(:main_id)) > 0 AS some_entries,
       NOT EXISTS (SELECT FROM tenancy.audit_entries(:main_id) WHERE main_id <> :main_id) AS only_that_main;
SELECT has_function_privilege('tenancy_app', 'tenancy.audit_entries(bigint)', 'EXECUTE') AS app_may,
       has_function_privilege('tenancy_admin', 'tenancy.audit_entries(bigint)', 'EXECUTE') AS admin_may;
SET ROLE tenancy_app;
SELECT count(*) FROM tenancy.audit_entries();
RESET ROLE;
-- audit_rehome() (after Citus shard moves) has nothing to do on one node: it
-- says so, and changes nothing.
DO $$
BEGIN
    PERFORM tenancy.audit_rehome();
    RAISE EXCEPTION 'audit_rehome() ran on one node';
EXCEPTION WHEN feature_not_supported THEN  -- 0A000
    RAISE WARNING '0A000: %', SQLERRM;
END $$;
