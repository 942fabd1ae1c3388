-- Members: change a role, remove a member, the last owner; the account tree.
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS mtest;
GRANT USAGE ON SCHEMA mtest TO PUBLIC;
CREATE OR REPLACE FUNCTION mtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+', '\1_X', 'g'), 'member [0-9]+', 'member N');
END $$;
CREATE OR REPLACE FUNCTION mtest.join(acc text, who text, role text, pw text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    tok text;
BEGIN
    -- as the DBA: an invitation from the account's owner key, accepted
    PERFORM tenancy.authenticate(tenancy.admin_create_api_key(acc, 'inviter for ' || who));
    PERFORM tenancy.invite(acc, who, role);
    PERFORM tenancy.reset();
    SELECT substring(body from '(tni_\S+)') INTO tok FROM tenancy.outbox WHERE recipient = who ORDER BY id DESC LIMIT 1;
    PERFORM tenancy.accept_invitation(tok, who, pw);
    PERFORM tenancy.reset();
    RETURN (SELECT id FROM tenancy.users WHERE email = who);
END $$;
CREATE OR REPLACE FUNCTION mtest.uid(who text) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT id FROM tenancy.users WHERE email = who $$;
GRANT EXECUTE ON FUNCTION mtest.uid(text) TO PUBLIC;

SELECT tenancy.create_main_account('Members Co', 'o1@mem.test', 'o1-password') AS co \gset
SELECT tenancy.create_main_account('Other Co', 'x@mem.test', 'x-password') AS other \gset
SELECT tenancy.admin_create_api_key(:'co', 'bootstrap') AS co_key \gset
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL;
SELECT tenancy.create_account(:'co', 'Region') AS region \gset
SELECT tenancy.create_account(:'region', 'Clinic') AS clinic \gset
SELECT tenancy.create_account(:'co', 'Bravo') AS bravo \gset
COMMIT;
SELECT mtest.join(:'co', 'o2@mem.test', 'owner', 'o2-password') IS NOT NULL AS o2;
SELECT mtest.join(:'co', 'ad@mem.test', 'admin', 'ad-password') IS NOT NULL AS admin;
SELECT mtest.join(:'co', 'vi@mem.test', 'viewer', 'vi-password') IS NOT NULL AS viewer;
SELECT mtest.join(:'region', 'ro@mem.test', 'owner', 'ro-password') IS NOT NULL AS region_owner;

SET ROLE tenancy_app;
-- ---- an admin: not an owner's membership, not making an owner ----
BEGIN;
SELECT tenancy.login('ad@mem.test', 'ad-password') IS NOT NULL AS admin_in;
SELECT tenancy.set_member_role(:'co', mtest.uid('vi@mem.test'), 'member');
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''viewer'')', :'co', mtest.uid('o1@mem.test'))) AS demote_owner;
SELECT mtest.try(format('SELECT tenancy.remove_member(%L, %s)', :'co', mtest.uid('o2@mem.test'))) AS remove_owner;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''owner'')', :'co', mtest.uid('vi@mem.test'))) AS make_owner;
SELECT mtest.try(format('SELECT tenancy.remove_member(%L, %s)', :'region', mtest.uid('ro@mem.test'))) AS remove_region_owner;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''emperor'')', :'co', mtest.uid('vi@mem.test'))) AS unknown_role;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''sub_user'')', :'co', mtest.uid('vi@mem.test'))) AS sub_user_role;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''admin'')', :'co', 999999)) AS unknown_member;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''admin'')', :'other', mtest.uid('x@mem.test'))) AS other_tenant;
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''admin'')', :'region', mtest.uid('vi@mem.test'))) AS not_a_member_there;
SELECT u.email, m.role FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
WHERE m.account_id = tenancy.leaf(tenancy.current_path()) ORDER BY u.email;
COMMIT;
-- ---- a viewer (now member) manages nobody ----
BEGIN;
SELECT tenancy.login('vi@mem.test', 'vi-password') IS NOT NULL AS member_in;
SELECT mtest.try(format('SELECT tenancy.remove_member(%L, %s)', :'co', mtest.uid('ad@mem.test'))) AS member_removes;
COMMIT;
-- ---- owners: the last owner of the main account stays ----
BEGIN;
SELECT tenancy.login('o1@mem.test', 'o1-password') IS NOT NULL AS owner_in;
SELECT tenancy.set_member_role(:'co', mtest.uid('o2@mem.test'), 'admin');
SELECT mtest.try(format('SELECT tenancy.set_member_role(%L, %s, ''admin'')', :'co', mtest.uid('o1@mem.test'))) AS demote_last_owner;
SELECT mtest.try(format('SELECT tenancy.remove_member(%L, %s)', :'co', mtest.uid('o1@mem.test'))) AS remove_last_owner;
-- a subaccount's only owner is not the main account's last owner
SELECT tenancy.remove_member(:'region', mtest.uid('ro@mem.test'));
SELECT tenancy.set_member_role(:'co', mtest.uid('vi@mem.test'), 'owner');
SELECT tenancy.set_member_role(:'co', mtest.uid('o1@mem.test'), 'viewer');
SELECT u.email, m.role FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
WHERE m.account_id = tenancy.leaf(tenancy.current_path()) ORDER BY u.email;
COMMIT;
-- the change is on the audit log, as row changes of tenancy.memberships
RESET ROLE;
SELECT action, change->'old'->>'role' AS old_role, change->'new'->>'role' AS new_role
FROM tenancy.audit_log WHERE target = 'tenancy.memberships' AND action IN ('update', 'delete')
  AND main_id = split_part(:'co', '_', 2)::bigint
ORDER BY id;
SET ROLE tenancy_app;
-- ---- a removed member's sessions stop working in that account ----
BEGIN;
SELECT tenancy.login('ad@mem.test', 'ad-password') AS ad_tok \gset
COMMIT;
BEGIN;
SELECT tenancy.login('vi@mem.test', 'vi-password') IS NOT NULL AS new_owner_in;
SELECT tenancy.remove_member(:'co', mtest.uid('ad@mem.test'));
COMMIT;
SELECT mtest.try(format('SELECT tenancy.authenticate(%L)', :'ad_tok')) AS removed_session;

-- ---- the account tree ----
BEGIN;
SELECT tenancy.authenticate(:'co_key') IS NOT NULL;
SELECT jsonb_pretty(regexp_replace(tenancy.account_tree()::text, 'acc_[0-9]+_[0-9a-f]+', 'acc_X', 'g')::jsonb);
SELECT jsonb_path_query_array(tenancy.account_tree(:'region'), 'strict $.**.name') AS region_names;
SELECT tenancy.act_as(:'region') IS NOT NULL AS in_region;
SELECT jsonb_path_query_array(tenancy.account_tree(), 'strict $.**.name') AS from_region;
SELECT mtest.try(format('SELECT tenancy.account_tree(%L)', :'co')) AS parent_tree;
SELECT mtest.try(format('SELECT tenancy.account_tree(%L)', :'bravo')) AS sibling_tree;
SELECT mtest.try(format('SELECT tenancy.account_tree(%L)', :'other')) AS other_tenant_tree;
COMMIT;
SELECT mtest.try('SELECT tenancy.account_tree()') AS no_context;
RESET ROLE;
