-- Sub-users (the AI4CALL model) and the outbox.
\set VERBOSITY terse
SET client_min_messages = warning;
-- Forget login failures an earlier run left in shared memory (see identity_throttle).
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS idtest;
GRANT USAGE ON SCHEMA idtest TO PUBLIC;
CREATE OR REPLACE FUNCTION idtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+',
                                                             '\1_X', 'g'), 'session [0-9]+', 'session N');
END $$;
-- the latest temporary password mailed to a recipient (the DBA reads the outbox)
CREATE OR REPLACE FUNCTION idtest.mailed_password(who text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from 'temporary password: (\S+)') FROM tenancy.outbox
    WHERE recipient = who ORDER BY id DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION idtest.mailed_password(text) FROM PUBLIC;

INSERT INTO tenancy.plans (name, max_subaccounts, max_depth, max_sub_users, max_api_keys)
VALUES ('ids_two_sub_users', 10, 3, 2, 5) ON CONFLICT DO NOTHING;
SELECT tenancy.create_main_account('Corp', 'corp@ids.test', 'corp-pass-1', 'ids_two_sub_users') AS corp \gset
SELECT tenancy.create_main_account('Other', 'other@ids.test', 'other-pass-1') AS other \gset
INSERT INTO tenancy.users (email, password_hash) VALUES
    ('admin@ids.test', tenancy.hash_password('admin-pass-1')),
    ('member@ids.test', tenancy.hash_password('member-pass-1'));
INSERT INTO tenancy.memberships (account_path, user_id, role)
SELECT a.path, u.id, CASE u.email WHEN 'admin@ids.test' THEN 'admin' ELSE 'member' END
FROM tenancy.accounts a, tenancy.users u
WHERE a.public_id = :'corp' AND u.email IN ('admin@ids.test', 'member@ids.test');
-- an application table under tenancy (the policies tenancy.protect() creates)
CREATE TABLE idtest.agents (
    id serial PRIMARY KEY,
    name text NOT NULL,
    account_path tenancy.account_path NOT NULL DEFAULT tenancy.current_path()
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE);
ALTER TABLE idtest.agents ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY r ON idtest.agents FOR SELECT
    USING (account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path()));
CREATE POLICY w ON idtest.agents FOR INSERT
    WITH CHECK (account_path OPERATOR(tenancy.<@) (SELECT tenancy.current_path())
                AND tenancy.may('agents', 'write'));
GRANT SELECT, INSERT, UPDATE, DELETE ON idtest.agents TO tenancy_app;
GRANT USAGE ON SEQUENCE idtest.agents_id_seq TO tenancy_app;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
INSERT INTO idtest.agents (name) VALUES ('owner agent');
COMMIT;

-- created by an owner in the main account: inactive; by an admin too
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.create_sub_user('ann@ids.test', 'Ann', 'Lee', 'ann-temp-1') AS ann \gset
SELECT :'ann' ~ '^sub_[0-9]+_[0-9]+$' AS id_format;
SELECT email, name, surname, status, visible, must_change_password, created_at IS NOT NULL AS created,
       last_login_at FROM tenancy.sub_users;
-- the same email twice in one main account
SELECT idtest.try('SELECT tenancy.create_sub_user(''ANN@ids.test'', ''A'', ''B'', ''whatever-1'')');
-- bad input
SELECT idtest.try('SELECT tenancy.create_sub_user(''not-an-email'', ''A'', ''B'', ''whatever-1'')');
SELECT idtest.try('SELECT tenancy.create_sub_user(''x@ids.test'', '''', ''B'', ''whatever-1'')');
SELECT idtest.try('SELECT tenancy.create_sub_user(''x@ids.test'', ''A'', ''B'', ''short'')');
-- a subaccount context cannot manage sub-users
SELECT tenancy.create_account(:'corp', 'Branch') AS branch \gset
SELECT tenancy.act_as(:'branch') IS NOT NULL;
SELECT idtest.try('SELECT tenancy.create_sub_user(''y@ids.test'', ''Y'', ''Y'', ''whatever-1'')');
SELECT idtest.try(format('SELECT tenancy.activate_sub_user(%L)', :'ann'));
COMMIT;
BEGIN;
SELECT tenancy.login('admin@ids.test', 'admin-pass-1') IS NOT NULL, tenancy.current_role_name();
SELECT tenancy.create_sub_user('bob@ids.test', 'Bob', 'Ray', 'bob-temp-1') AS bob \gset
COMMIT;
-- a member cannot
BEGIN;
SELECT tenancy.login('member@ids.test', 'member-pass-1') IS NOT NULL;
SELECT idtest.try('SELECT tenancy.create_sub_user(''z@ids.test'', ''Z'', ''Z'', ''whatever-1'')');
SELECT idtest.try(format('SELECT tenancy.activate_sub_user(%L)', :'ann'));
ROLLBACK;
-- the plan limit (2 sub-users)
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT idtest.try('SELECT tenancy.create_sub_user(''cid@ids.test'', ''C'', ''D'', ''whatever-1'')');
ROLLBACK;
-- another main account sees nothing of them and cannot manage them
BEGIN;
SELECT tenancy.login('other@ids.test', 'other-pass-1') IS NOT NULL;
SELECT count(*) AS foreign_sub_users FROM tenancy.sub_users;
SELECT idtest.try(format('SELECT tenancy.activate_sub_user(%L)', :'ann'));
SELECT idtest.try(format('SELECT tenancy.delete_sub_user(%L)', :'ann'));
ROLLBACK;

-- inactive: even the right password does not log in
SELECT idtest.try('SELECT tenancy.login_sub_user(''corp@ids.test'', ''ann@ids.test'', ''ann-temp-1'')');

-- activation issues a fresh random temporary password by email (outbox)
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.activate_sub_user(:'ann');
SELECT status, must_change_password, temp_password_expires_at > now() AS temp_expiry_set
FROM tenancy.sub_users WHERE public_id = :'ann';
COMMIT;
-- the app cannot read the outbox
SELECT idtest.try('SELECT count(*) FROM tenancy.outbox');
RESET ROLE;
SELECT recipient, subject, body ~ 'main account email: corp@ids\.test' AS has_main_email,
       body ~ 'sub-user email: ann@ids\.test' AS has_sub_email,
       length(idtest.mailed_password('ann@ids.test')) >= 16 AS has_password, sent_at, attempts
FROM tenancy.outbox WHERE recipient = 'ann@ids.test';
SELECT idtest.mailed_password('ann@ids.test') AS ann_pw \gset
-- the temporary password is stored only hashed
SELECT password_hash LIKE '$argon2id$%' AS hashed, password_hash <> :'ann_pw' AS not_clear
FROM tenancy.sub_users WHERE email = 'ann@ids.test';
SET ROLE tenancy_app;

-- the create-time password was replaced
SELECT tenancy.login_sub_user('corp@ids.test', 'ann@ids.test', 'ann-temp-1') IS NULL AS old_temp_refused;
-- wrong main account email, wrong password, unknown sub-user: the same failure
SELECT tenancy.login_sub_user('other@ids.test', 'ann@ids.test', :'ann_pw') IS NULL AS wrong_main_email;
SELECT tenancy.login_sub_user('admin@ids.test', 'ann@ids.test', :'ann_pw') IS NULL AS not_an_owner;
SELECT tenancy.login_sub_user('corp@ids.test', 'ann@ids.test', 'wrong-pass') IS NULL AS wrong_password;
SELECT tenancy.login_sub_user('corp@ids.test', 'nobody@ids.test', 'wrong-pass') IS NULL AS unknown;

-- first login: must change the password; the context can do nothing else
BEGIN;
SELECT tenancy.login_sub_user('corp@ids.test', 'ann@ids.test', :'ann_pw') AS ann_tok \gset
SELECT :'ann_tok' ~ '^tns_' AS token, tenancy.current_role_name(),
       tenancy.whoami() -> 'principal' ->> 'kind' AS kind,
       tenancy.whoami() -> 'principal' ->> 'id' = :'ann' AS principal_is_ann;
SELECT count(*) AS accounts_visible FROM tenancy.accounts;
SELECT idtest.try('SELECT tenancy.create_account(tenancy.current_account(), ''x'')');
-- application tables show nothing and take nothing
SELECT count(*) AS agents_visible FROM idtest.agents;
SELECT idtest.try('INSERT INTO idtest.agents (name) VALUES (''sneaky'')');
SELECT tenancy.change_password(:'ann_pw', 'ann-own-pass-1');
SELECT count(*) AS agents_visible FROM idtest.agents;
INSERT INTO idtest.agents (name) VALUES ('ann agent');
SELECT tenancy.current_role_name(), count(*) AS accounts_visible FROM tenancy.accounts;
COMMIT;
-- a sub-user works on agents/tools/knowledge bases but cannot manage
-- sub-users, members, billing, settings or read the full logs
BEGIN;
SELECT tenancy.login_sub_user('CORP@ids.test', 'Ann@ids.test', 'ann-own-pass-1') IS NOT NULL AS logged_in,
       tenancy.current_role_name();
SELECT tenancy.may('agents', 'write') AS agents, tenancy.may('tools', 'write') AS tools,
       tenancy.may('knowledge_bases', 'write') AS kbs, tenancy.may('analytics', 'read') AS stats;
SELECT tenancy.may('sub_users', 'read') AS sub_users, tenancy.may('billing', 'read') AS billing,
       tenancy.may('settings', 'write') AS settings, tenancy.may('audit', 'read') AS logs,
       tenancy.may('members', 'write') AS members, tenancy.may('api_keys', 'write') AS api_keys;
SELECT idtest.try('SELECT tenancy.create_sub_user(''evil@ids.test'', ''E'', ''V'', ''whatever-1'')');
SELECT idtest.try(format('SELECT tenancy.deactivate_sub_user(%L)', :'bob'));
SELECT idtest.try(format('SELECT tenancy.invite(%L, ''friend@ids.test'', ''owner'')', tenancy.current_account()));
SELECT idtest.try(format('SELECT tenancy.create_api_key(%L, ''k'', ''owner'')', tenancy.current_account()));
SELECT idtest.try(format('SELECT tenancy.update_account(%L, settings => ''{"x": 1}'')', tenancy.current_account())) AS settings_update;
-- sees the visible sub-users (lists and reports), never hashes
SELECT email, status FROM tenancy.sub_users ORDER BY email;
SELECT idtest.try('SELECT password_hash FROM tenancy.sub_users');
-- can act in a descendant of the main account, not outside it
SELECT tenancy.act_as(:'branch') IS NOT NULL AS branch_ok, tenancy.current_role_name();
SELECT idtest.try(format('SELECT tenancy.act_as(%L)', :'other'));
COMMIT;
-- last login is recorded
RESET ROLE;
SELECT last_login_at IS NOT NULL AS last_login FROM tenancy.sub_users WHERE email = 'ann@ids.test';
SET ROLE tenancy_app;

-- visibility: a hidden sub-user is seen by managers only
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.update_sub_user(:'bob', visible => false, surname => 'Ray-Jones');
SELECT email, surname, visible FROM tenancy.sub_users ORDER BY email;
COMMIT;
BEGIN;
SELECT tenancy.login('member@ids.test', 'member-pass-1') IS NOT NULL;
SELECT email FROM tenancy.sub_users ORDER BY email;
COMMIT;

-- deactivation: open sessions end, the token is dead
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.deactivate_sub_user(:'ann');
SELECT status FROM tenancy.sub_users WHERE public_id = :'ann';
COMMIT;
-- the token is dead, and login says inactive
SELECT idtest.try(format('SELECT tenancy.authenticate(%L)', :'ann_tok'));
SELECT idtest.try('SELECT tenancy.login_sub_user(''corp@ids.test'', ''ann@ids.test'', ''ann-own-pass-1'')');
-- a session-scoped context already open ends at the next transaction when the
-- sub-user is deactivated (here by a committed change from elsewhere)
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.activate_sub_user(:'bob');
COMMIT;
RESET ROLE;
SELECT idtest.mailed_password('bob@ids.test') AS bob_pw \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login_sub_user('corp@ids.test', 'bob@ids.test', :'bob_pw') AS bob_tok \gset
COMMIT;
SELECT tenancy.authenticate(:'bob_tok', session => true) IS NOT NULL;
RESET ROLE;
UPDATE tenancy.sub_users SET status = 'inactive' WHERE email = 'bob@ids.test';
SET ROLE tenancy_app;
SELECT idtest.try('SELECT tenancy.current_account()');
SELECT tenancy.reset();
RESET ROLE;
UPDATE tenancy.sub_users SET status = 'active' WHERE email = 'bob@ids.test';
SET ROLE tenancy_app;

-- re-activation: fresh credentials by email again; the old temporary password stops working
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.activate_sub_user(:'ann');
COMMIT;
RESET ROLE;
SELECT count(*) AS ann_emails FROM tenancy.outbox WHERE recipient = 'ann@ids.test';
SELECT idtest.mailed_password('ann@ids.test') AS ann_pw2 \gset
SELECT :'ann_pw2' <> :'ann_pw' AS fresh_password;
SET ROLE tenancy_app;
SELECT tenancy.login_sub_user('corp@ids.test', 'ann@ids.test', 'ann-own-pass-1') IS NULL AS own_pass_replaced;
BEGIN;
SELECT tenancy.login_sub_user('corp@ids.test', 'ann@ids.test', :'ann_pw2') IS NOT NULL,
       tenancy.current_role_name();
ROLLBACK;
-- an expired temporary password is refused
RESET ROLE;
UPDATE tenancy.sub_users SET temp_password_expires_at = now() - interval '1 minute'
WHERE email = 'ann@ids.test';
SET ROLE tenancy_app;
SELECT idtest.try(format('SELECT tenancy.login_sub_user(%L, %L, %L)', 'corp@ids.test', 'ann@ids.test', :'ann_pw2'));

-- throttling per sub-user within a main account
SELECT count(*) FILTER (WHERE tenancy.login_sub_user('corp@ids.test', 'bob@ids.test', 'bad-' || g) IS NULL)
    AS failures FROM generate_series(1, 5) g;
SELECT tenancy.login_sub_user('corp@ids.test', 'bob@ids.test', :'bob_pw') IS NULL AS locked_out;

-- the mailer reads and marks the outbox; a sent body is blanked
RESET ROLE;
SET ROLE tenancy_mailer;
SELECT count(*) > 0 AS mailer_reads FROM tenancy.outbox WHERE sent_at IS NULL;
SELECT tenancy.outbox_mark(min(id)) FROM tenancy.outbox WHERE recipient = 'bob@ids.test';
SELECT tenancy.outbox_mark(max(id), 'connection refused') FROM tenancy.outbox WHERE recipient = 'ann@ids.test';
SELECT recipient, sent_at IS NOT NULL AS sent, body = '' AS blanked, attempts, last_error
FROM tenancy.outbox WHERE recipient IN ('bob@ids.test', 'ann@ids.test') ORDER BY id;
SELECT idtest.try('UPDATE tenancy.outbox SET body = ''x''');
SELECT idtest.try('DELETE FROM tenancy.outbox');
RESET ROLE;

-- deletion is for good
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.delete_sub_user(:'bob');
SELECT email FROM tenancy.sub_users ORDER BY email;
SELECT idtest.try(format('SELECT tenancy.delete_sub_user(%L)', :'bob'));
COMMIT;
SELECT idtest.try(format('SELECT tenancy.authenticate(%L)', :'bob_tok'));
-- freed a place under the plan limit
BEGIN;
SELECT tenancy.login('corp@ids.test', 'corp-pass-1') IS NOT NULL;
SELECT tenancy.create_sub_user('cid@ids.test', 'C', 'D', 'whatever-1') ~ '^sub_' AS created;
ROLLBACK;
RESET ROLE;
