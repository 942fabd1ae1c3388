-- Team management for the gateway's routes (35_api_team.sql): sub-users and
-- API keys addressed through the account of the path, a manager's password reset.
-- (Named to run after audit*.sql: that test expects a database no earlier test
-- has put accounts or audit entries in.)
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS tmtest;
GRANT USAGE ON SCHEMA tmtest TO PUBLIC;
CREATE OR REPLACE FUNCTION tmtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+', '\1_X', 'g');
END $$;
-- the latest temporary password mailed to a recipient, and how many mails (DBA)
CREATE OR REPLACE FUNCTION tmtest.mailed_password(who text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from 'temporary password: (\S+)') FROM tenancy.outbox
    WHERE recipient = who ORDER BY id DESC LIMIT 1 $$;
CREATE OR REPLACE FUNCTION tmtest.mails(who text) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT count(*) FROM tenancy.outbox WHERE recipient = who $$;
REVOKE ALL ON FUNCTION tmtest.mailed_password(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tmtest.mails(text) TO PUBLIC;
-- a sub-user row as the DBA sees it (secrets reduced to facts)
CREATE OR REPLACE FUNCTION tmtest.sub(pub text) RETURNS TABLE (name text, surname text, status text, visible boolean,
        must_change boolean, temp_expiry boolean, hash_len_ok boolean)
    LANGUAGE sql SECURITY DEFINER AS $$
    SELECT name, surname, status, visible, must_change_password, temp_password_expires_at > now(),
           password_hash LIKE '$argon2id$%' FROM tenancy.sub_users WHERE public_id = pub $$;
GRANT EXECUTE ON FUNCTION tmtest.sub(text) TO PUBLIC;

SELECT tenancy.create_main_account('Team Co', 'owner@tm.test', 'owner-pass-1') AS co \gset
SELECT tenancy.create_main_account('Rival Co', 'rival@tm.test', 'rival-pass-1') AS rival \gset
INSERT INTO tenancy.users (email, password_hash) VALUES
    ('admin@tm.test', tenancy.hash_password('admin-pass-1')),
    ('member@tm.test', tenancy.hash_password('member-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, CASE u.email WHEN 'admin@tm.test' THEN 'admin' ELSE 'member' END
FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'co' AND u.email IN ('admin@tm.test', 'member@tm.test');
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('rival@tm.test', 'rival-pass-1') IS NOT NULL;
SELECT tenancy.create_sub_user_in(:'rival', 'r@tm.test', 'R', 'R', 'rival-temp-1') ->> 'id' AS rival_sub \gset
SELECT tenancy.create_api_key_in(:'rival', 'rk', 'owner') ->> 'id' AS rival_key \gset
COMMIT;

-- ---- sub-users: create in the main account of the path ----
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.create_account(:'co', 'Branch') AS branch \gset
SELECT tenancy.create_sub_user_in(:'co', 'ann@tm.test', 'Ann', 'Lee', 'ann-temp-1') AS ann_json \gset
SELECT :'ann_json'::jsonb ->> 'id' AS ann \gset
-- the answer: what the API shows, never a hash or password
SELECT key, CASE WHEN key IN ('id', 'created_at') THEN '(set)' ELSE value::text END AS value
FROM jsonb_each(:'ann_json'::jsonb) ORDER BY key;
SELECT :'ann' ~ '^sub_[0-9]+_[0-9]+$' AS id_format;
-- a subaccount has no sub-users; another tenant's account and a made-up one are "not found"
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''b@tm.test'', ''B'', ''B'', ''b-temp-12'')', :'branch')) AS in_subaccount;
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''b@tm.test'', ''B'', ''B'', ''b-temp-12'')', :'rival')) AS other_tenant;
SELECT tmtest.try('SELECT tenancy.create_sub_user_in(''acc_1_000000000000'', ''b@tm.test'', ''B'', ''B'', ''b-temp-12'')') AS missing;
-- the rules of create_sub_user still hold
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''ANN@tm.test'', ''A'', ''L'', ''ann-temp-1'')', :'co')) AS same_email;
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''c@tm.test'', ''C'', ''C'', ''short'')', :'co')) AS short_password;
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''c@tm.test'', NULL, ''C'', ''c-temp-123'')', :'co')) AS no_name;
SELECT count(*) AS sub_users FROM tenancy.sub_users;
COMMIT;
-- a member cannot; from a subaccount context the main account is not even visible
BEGIN;
SELECT tenancy.login('member@tm.test', 'member-pass-1') IS NOT NULL;
SELECT tmtest.try(format('SELECT tenancy.create_sub_user_in(%L, ''m@tm.test'', ''M'', ''M'', ''m-temp-123'')', :'co')) AS member_create;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, visible => false)', :'co', :'ann')) AS member_update;
SELECT tmtest.try(format('SELECT tenancy.set_sub_user_password(%L, ''member-set-1'')', :'ann')) AS member_password;
SELECT tmtest.try(format('SELECT tenancy.delete_sub_user_in(%L, %L)', :'co', :'ann')) AS member_delete;
ROLLBACK;
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.act_as(:'branch') IS NOT NULL;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, visible => false)', :'co', :'ann')) AS from_branch;
ROLLBACK;

-- ---- update: fields, activation, password, refusals that change nothing ----
BEGIN;
SELECT tenancy.login('admin@tm.test', 'admin-pass-1') IS NOT NULL;
SELECT j ->> 'name' AS name, j ->> 'surname' AS surname, j -> 'visible' AS visible, j -> 'active' AS active
FROM tenancy.update_sub_user_in(:'co', :'ann', name => 'Anna', surname => 'Lee-Park', visible => false) j;
-- another tenant's sub-user through our account, ours through theirs, a made-up one: not found
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, name => ''x'')', :'co', :'rival_sub')) AS foreign_sub;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, name => ''x'')', :'rival', :'ann')) AS via_foreign_account;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, ''sub_1_999999'', name => ''x'')', :'co')) AS missing_sub;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, ''not-a-sub-id'', name => ''x'')', :'co')) AS malformed_sub;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, branch_name => ''x'')', :'co', :'ann')) AS unknown_arg;
-- activation and a password at once: refused (activation mails its own)
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, active => true, password => ''chosen-pass-1'')', :'co', :'ann')) AS both;
-- a bad password refuses the whole edit
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, name => ''Changed'', password => ''short'')', :'co', :'ann')) AS short_password;
SELECT tmtest.try(format('SELECT tenancy.update_sub_user_in(%L, %L, name => '''')', :'co', :'ann')) AS empty_name;
SELECT * FROM tmtest.sub(:'ann');
COMMIT;
-- activation mails fresh credentials; activating an active sub-user again is no change
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tmtest.mails('ann@tm.test') AS mails_before;
SELECT tenancy.update_sub_user_in(:'co', :'ann', active => true) -> 'active' AS active;
SELECT tmtest.mails('ann@tm.test') AS mails_after_activation;
SELECT tenancy.update_sub_user_in(:'co', :'ann', active => true, name => 'Ann') ->> 'name' AS name;
SELECT tmtest.mails('ann@tm.test') AS mails_after_second_patch;
SELECT * FROM tmtest.sub(:'ann');
COMMIT;
RESET ROLE;
SELECT tmtest.mailed_password('ann@tm.test') AS ann_pw \gset
SET ROLE tenancy_app;
-- first login: the password must change first
BEGIN;
SELECT tenancy.login_sub_user('owner@tm.test', 'ann@tm.test', :'ann_pw') AS ann_tok \gset
SELECT tenancy.current_role_name();
SELECT tenancy.change_password(:'ann_pw', 'ann-own-pass-1');
SELECT tenancy.current_role_name();
COMMIT;
BEGIN;
SELECT tenancy.login_sub_user('owner@tm.test', 'ann@tm.test', 'ann-own-pass-1') AS ann_tok2 \gset
SELECT tenancy.current_role_name();
-- a sub-user cannot reset passwords, not even its own this way
SELECT tmtest.try(format('SELECT tenancy.set_sub_user_password(%L, ''self-set-pass-1'')', :'ann')) AS self_reset;
COMMIT;

-- ---- a manager resets the password: a temporary one, open sessions end ----
BEGIN;
SELECT tenancy.login('admin@tm.test', 'admin-pass-1') IS NOT NULL;
SELECT tenancy.update_sub_user_in(:'co', :'ann', password => 'reset-pass-1') -> 'must_change_password' AS must_change;
SELECT * FROM tmtest.sub(:'ann');
COMMIT;
SELECT tmtest.try(format('SELECT tenancy.authenticate(%L)', :'ann_tok2')) AS old_session;
SELECT tenancy.login_sub_user('owner@tm.test', 'ann@tm.test', 'ann-own-pass-1') IS NULL AS old_password_refused;
BEGIN;
SELECT tenancy.login_sub_user('owner@tm.test', 'ann@tm.test', 'reset-pass-1') AS ann_tok3 \gset
SELECT tenancy.current_role_name() AS must_change_first;
SELECT count(*) AS accounts_visible FROM tenancy.accounts;
SELECT tenancy.change_password('reset-pass-1', 'ann-new-pass-2');
SELECT tenancy.current_role_name();
COMMIT;
-- the contract function directly, by an owner; the reset leaves no secret in the audit log
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.set_sub_user_password(:'ann', 'reset-pass-2');
SELECT tmtest.try(format('SELECT tenancy.set_sub_user_password(%L, ''short'')', :'ann')) AS short;
SELECT tmtest.try(format('SELECT tenancy.set_sub_user_password(%L, ''reset-pass-3'')', :'rival_sub')) AS foreign_sub;
COMMIT;
RESET ROLE;
SELECT count(*) > 0 AS sub_user_updates_audited,
       count(*) FILTER (WHERE change::text ~ '\$argon2|reset-pass|ann-own|ann-new') AS entries_with_secret
FROM tenancy.audit_log WHERE target = 'tenancy.sub_users' AND action = 'update';
SET ROLE tenancy_app;

-- ---- deactivation through the edit: refused at once; then delete ----
BEGIN;
SELECT tenancy.login_sub_user('owner@tm.test', 'ann@tm.test', 'reset-pass-2') AS ann_tok4 \gset
COMMIT;
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.update_sub_user_in(:'co', :'ann', active => false) -> 'active' AS active;
COMMIT;
SELECT tmtest.try(format('SELECT tenancy.authenticate(%L)', :'ann_tok4')) AS after_deactivation;
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tmtest.try(format('SELECT tenancy.delete_sub_user_in(%L, %L)', :'rival', :'rival_sub')) AS foreign_delete;
SELECT tmtest.try(format('SELECT tenancy.delete_sub_user_in(%L, %L)', :'co', :'rival_sub')) AS foreign_sub_delete;
SELECT tenancy.delete_sub_user_in(:'co', :'ann');
SELECT tmtest.try(format('SELECT tenancy.delete_sub_user_in(%L, %L)', :'co', :'ann')) AS again;
SELECT count(*) AS sub_users FROM tenancy.sub_users;
COMMIT;

-- ---- API keys through the account of the path ----
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.create_api_key_in(:'co', ' ci key ', 'viewer', now() + interval '1 day') AS k \gset
SELECT (:'k'::jsonb) ->> 'id' AS key_id, (:'k'::jsonb) ->> 'key' AS full_key \gset
SELECT array(SELECT jsonb_object_keys(:'k'::jsonb) ORDER BY 1) AS answer_keys;
SELECT :'full_key' LIKE ((:'k'::jsonb) ->> 'prefix') || '%' AS key_starts_with_prefix,
       (:'k'::jsonb) ->> 'name' AS name, (:'k'::jsonb) ->> 'role' AS role,
       :'key_id' ~ '^key_[0-9]+_[0-9]+$' AS id_format;
SELECT prefix = (:'k'::jsonb) ->> 'prefix' AS listed_prefix, revoked_at FROM tenancy.api_keys WHERE public_id = :'key_id';
SELECT tenancy.create_api_key_in(:'branch', 'branch key', 'owner') ->> 'id' AS branch_key \gset
SELECT tmtest.try(format('SELECT tenancy.create_api_key_in(%L, ''x'', ''owner'')', :'rival')) AS other_tenant;
SELECT tmtest.try(format('SELECT tenancy.create_api_key_in(%L, ''x'', ''emperor'')', :'co')) AS bad_role;
SELECT tmtest.try(format('SELECT tenancy.create_api_key_in(%L, ''x'', ''owner'', now() - interval ''1 hour'')', :'co')) AS past_expiry;
-- revoke: only a key of exactly that account
SELECT tmtest.try(format('SELECT tenancy.revoke_api_key_in(%L, %L)', :'co', :'branch_key')) AS subaccount_key_via_main;
SELECT tmtest.try(format('SELECT tenancy.revoke_api_key_in(%L, %L)', :'co', :'rival_key')) AS rival_key;
SELECT tmtest.try(format('SELECT tenancy.revoke_api_key_in(%L, %L)', :'rival', :'rival_key')) AS rival_account;
SELECT tmtest.try(format('SELECT tenancy.revoke_api_key_in(%L, ''key_x'')', :'co')) AS malformed;
COMMIT;
-- the new key works; an admin may read keys but neither create nor revoke them
BEGIN;
SELECT tenancy.authenticate(:'full_key') = :'co' AS key_works, tenancy.current_role_name();
ROLLBACK;
BEGIN;
SELECT tenancy.login('admin@tm.test', 'admin-pass-1') IS NOT NULL;
SELECT tmtest.try(format('SELECT tenancy.create_api_key_in(%L, ''x'', ''viewer'')', :'co')) AS admin_create;
SELECT tmtest.try(format('SELECT tenancy.revoke_api_key_in(%L, %L)', :'co', :'key_id')) AS admin_revoke;
ROLLBACK;
BEGIN;
SELECT tenancy.login('owner@tm.test', 'owner-pass-1') IS NOT NULL;
SELECT tenancy.revoke_api_key_in(:'co', :'key_id');
SELECT tenancy.revoke_api_key_in(:'branch', :'branch_key');
SELECT public_id = :'key_id' AS is_key, revoked_at IS NOT NULL AS revoked FROM tenancy.api_keys ORDER BY id;
COMMIT;
SELECT tmtest.try(format('SELECT tenancy.authenticate(%L)', :'full_key')) AS after_revoke;
RESET ROLE;
