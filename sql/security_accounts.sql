-- Account lifecycle under the plan's limits: create, depth and count limits,
-- move with every row following, refusals, promotion, ownership transfer.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS regress;
RESET client_min_messages;
GRANT USAGE ON SCHEMA regress TO PUBLIC;
CREATE OR REPLACE FUNCTION regress.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(SQLERRM,
        'acc_[0-9]+_[0-9a-f]{12}', 'acc_*', 'g'), 'key_[0-9]+_[0-9]+', 'key_*', 'g');
END $$;
-- A small plan to hit the limits quickly.
INSERT INTO tenancy.plans (name, max_subaccounts, max_depth, max_sub_users, max_api_keys)
VALUES ('tiny', 4, 3, 2, 2);

-- Bad input to the DBA functions.
SELECT regress.try('SELECT tenancy.create_main_account('''', ''a@example.test'', ''password123'')');
SELECT regress.try('SELECT tenancy.create_main_account(''X'', ''not-an-email'', ''password123'')');
SELECT regress.try('SELECT tenancy.create_main_account(''X'', ''a@example.test'', ''password123'', ''gold'')');
SELECT regress.try('SELECT tenancy.admin_create_api_key(''acc_1_ffffffffffff'', ''k'')');

SELECT tenancy.create_main_account('Tiny Co', 'tiny@example.test', 'a long enough password', 'tiny') AS t \gset
SELECT tenancy.admin_create_api_key(:'t', 'owner') AS t_key \gset
SELECT regress.try(format('SELECT tenancy.admin_create_api_key(%L, %L, %L)', :'t', 'k', 'emperor')) AS unknown_role;
CREATE TABLE regress.agents (id serial PRIMARY KEY, name text NOT NULL);
SELECT tenancy.protect('regress.agents', 'agents');
GRANT SELECT ON regress.agents TO tenancy_app;

-- Clients log in as their own roles, members of tenancy_app (pg_regress
-- creates regress_client: REGRESS_OPTS in the Makefile).
SET client_min_messages = warning;  -- the grant may be there already
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse
BEGIN;
SELECT tenancy.authenticate(:'t_key') = :'t' AS owner;
SELECT tenancy.create_account(:'t', 'A') AS a \gset
SELECT tenancy.create_account(:'a', 'A1') AS a1 \gset
SELECT tenancy.create_account(:'t', 'B') AS b \gset
-- depth: tiny allows 3 levels (Tiny Co . A . A1)
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'a1', 'too deep')) AS too_deep;
SELECT tenancy.create_account(:'b', 'B1') AS b1 \gset
-- count: tiny allows 4 subaccounts
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'b', 'fifth')) AS too_many;
-- names
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'b', '   ')) AS blank_name;
SELECT regress.try(format('SELECT tenancy.create_account(%L, %L)', :'b', repeat('x', 201))) AS long_name;
-- API keys: plan limit per account, expiry in the past, unknown role
SELECT tenancy.create_api_key(:'a', 'k1', 'viewer') IS NOT NULL AS key1;
SELECT tenancy.create_api_key(:'a', 'k2', 'viewer') IS NOT NULL AS key2;
SELECT regress.try(format('SELECT tenancy.create_api_key(%L, %L, %L)', :'a', 'k3', 'viewer')) AS third_key;
SELECT regress.try(format('SELECT tenancy.create_api_key(%L, %L, %L, now() - interval ''1 day'')', :'b', 'old', 'viewer')) AS expired_at_birth;
SELECT regress.try(format('SELECT tenancy.create_api_key(%L, %L, %L)', :'b', 'k', 'emperor')) AS unknown_role;
SELECT tenancy.create_api_key(:'a1', 'a1 key', 'owner') AS a1_key \gset
-- the full key is shown once; afterwards only its prefix
SELECT k.name, k.role, k.prefix ~ '^tnc_[0-9]+_[0-9]+_.{4}$' AS prefix_only, u.last_used_at IS NULL AS unused
FROM tenancy.api_keys k JOIN tenancy.api_key_usage u ON u.main_id = k.main_id AND u.key_id = k.id
ORDER BY k.id;
COMMIT;

-- Rows of every account.
BEGIN;
SELECT tenancy.authenticate(:'t_key') IS NOT NULL AS owner;
SELECT tenancy.act_as(:'a1') IS NOT NULL AS in_a1;
INSERT INTO regress.agents (name) VALUES ('agent of A1');
SELECT tenancy.act_as(:'a') IS NOT NULL AS in_a;
INSERT INTO regress.agents (name) VALUES ('agent of A');
SELECT tenancy.act_as(:'b1') IS NOT NULL AS in_b1;
INSERT INTO regress.agents (name) VALUES ('agent of B1');
COMMIT;

-- Moves: owners only, never under itself or its own descendant, within depth.
BEGIN;
SELECT tenancy.authenticate(:'t_key') IS NOT NULL AS owner;
SELECT regress.try(format('SELECT tenancy.move_account(%L, %L)', :'a', :'a1')) AS under_own_descendant;
SELECT regress.try(format('SELECT tenancy.move_account(%L, %L)', :'a', :'a')) AS under_itself;
SELECT regress.try(format('SELECT tenancy.move_account(%L, %L)', :'t', :'b')) AS move_main;
SELECT regress.try(format('SELECT tenancy.move_account(%L, %L)', :'a', :'b')) AS too_deep_after_move;
-- A1 (with its key and agent) moves under B.
SELECT tenancy.move_account(:'a1', :'b');
SELECT a.name, (SELECT p.name FROM tenancy.accounts p WHERE p.id = a.parent_id) AS parent,
       tenancy.nlevel(a.path) AS level
FROM tenancy.accounts a ORDER BY a.path;
SELECT g.name, (SELECT a.name FROM tenancy.accounts a WHERE a.path OPERATOR(tenancy.=) g.account_path) AS account
FROM regress.agents g ORDER BY g.name;
COMMIT;
-- The moved account's key now sees exactly its own rows; B sees the newcomer,
-- A no longer does.
BEGIN;
SELECT tenancy.authenticate(:'a1_key') = :'a1' AS a1_key_still_works;
SELECT name FROM regress.agents;
SELECT tenancy.reset();
SELECT tenancy.authenticate(:'t_key') IS NOT NULL AS owner;
SELECT tenancy.act_as(:'b') IS NOT NULL AS in_b;
SELECT name FROM regress.agents ORDER BY name;
SELECT tenancy.act_as(:'a') IS NOT NULL AS in_a;
SELECT name FROM regress.agents ORDER BY name;
COMMIT;
-- A non-owner may not move.
BEGIN;
SELECT tenancy.authenticate(:'t_key') IS NOT NULL AS owner;
SELECT tenancy.create_api_key(:'b', 'b admin', 'admin') AS b_admin_key \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'b_admin_key') IS NOT NULL AS admin;
SELECT regress.try(format('SELECT tenancy.move_account(%L, %L)', :'a1', :'b1')) AS admin_moves;
COMMIT;

-- Promotion (DBA): B becomes a main account with its subtree and rows; its
-- keys are revoked; public ids keep working.
\c - postgres
\set VERBOSITY terse
SELECT regress.try(format('SELECT tenancy.promote_account(%L)', :'t')) AS promote_main;
SELECT tenancy.promote_account(:'b');
SELECT a.name, a.parent_id IS NULL AS is_main, tenancy.nlevel(a.path) AS level,
       a.main_id = a.id AS own_main
FROM tenancy.accounts a WHERE a.public_id IN (:'b', :'b1', :'a1') ORDER BY a.path;
SELECT k.name, k.revoked_at IS NOT NULL AS revoked FROM tenancy.api_keys k
WHERE k.name IN ('a1 key', 'b admin') ORDER BY k.name;
SELECT (tenancy._find_account(:'b1')).name AS found_by_old_public_id;
SELECT g.name, a.name AS account, g.main_id = a.main_id AS same_main
FROM regress.agents g JOIN tenancy.accounts a ON a.path OPERATOR(tenancy.=) g.account_path ORDER BY g.name;

-- Ownership transfer (DBA only).
SELECT regress.try(format('SELECT tenancy.transfer_ownership(%L, %L)', :'t', 'nobody@example.test')) AS unknown_user;
SELECT tenancy.create_main_account('Second', 'second@example.test', 'a long enough password') AS second \gset
SELECT tenancy.transfer_ownership(:'t', 'second@example.test');
SELECT u.email, m.role FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id
WHERE a.public_id = :'t' ORDER BY u.email;
\c - regress_client
SELECT regress.try(format('SELECT tenancy.transfer_ownership(%L, %L)', :'t', 'tiny@example.test')) AS by_app;
SELECT regress.try(format('SELECT tenancy.promote_account(%L)', :'a')) AS promote_by_app;
