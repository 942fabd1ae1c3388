-- Holes found by an attacker (issue 17): what a restricted context (MFA
-- pending, password change) may do; who reads the member list; an admin and
-- an owner's pending invitation; protect() with an unknown resource.
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS rtest;
GRANT USAGE ON SCHEMA rtest TO PUBLIC;
CREATE OR REPLACE FUNCTION rtest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '(acc|sub|inv|key)_[0-9]+_[0-9a-f]+', '\1_X', 'g');
END $$;
CREATE OR REPLACE FUNCTION rtest.mailed(who text, pattern text) RETURNS text LANGUAGE sql AS $$
    SELECT substring(body from pattern) FROM tenancy.outbox
    WHERE lower(recipient) = lower(who) ORDER BY id DESC LIMIT 1 $$;
REVOKE ALL ON FUNCTION rtest.mailed(text, text) FROM PUBLIC;

SELECT tenancy.create_main_account('Restricted Co', 'owner@rst.test', 'owner-pass-1') AS co \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@rst.test', 'owner-pass-1') IS NOT NULL AS owner_in;
SELECT tenancy.create_account(:'co', 'Clinic') AS clinic \gset
SELECT tenancy.invite(:'co', 'mfa@rst.test', 'admin') IS NOT NULL AS invited_admin;
SELECT tenancy.invite(:'co', 'view@rst.test', 'viewer') IS NOT NULL AS invited_viewer;
SELECT tenancy.invite(:'co', 'agent@rst.test', 'support_agent') IS NOT NULL AS invited_agent;
SELECT tenancy.create_sub_user('sub@rst.test', 'Sam', 'Sub', 'temp-pass-123') AS sub \gset
SELECT tenancy.activate_sub_user(:'sub');
COMMIT;
RESET ROLE;
SELECT rtest.mailed('mfa@rst.test', '(tni_\S+)') AS mfa_tok \gset
SELECT rtest.mailed('view@rst.test', '(tni_\S+)') AS view_tok \gset
SELECT rtest.mailed('agent@rst.test', '(tni_\S+)') AS agent_tok \gset
SELECT rtest.mailed('sub@rst.test', 'temporary password: (\S+)') AS sub_pw \gset
SET ROLE tenancy_app;
SELECT tenancy.accept_invitation(:'mfa_tok', 'Mia', 'mia-pass-123') IS NOT NULL AS mia;
SELECT tenancy.accept_invitation(:'view_tok', 'Vic', 'vic-pass-123') IS NOT NULL AS vic;
SELECT tenancy.accept_invitation(:'agent_tok', 'Ana', 'ana-pass-123') IS NOT NULL AS ana;

-- ---- 3. a password alone (MFA pending) ----
-- Mia turns MFA on; a fully verified session of hers stays open.
BEGIN;
SELECT tenancy.login('mfa@rst.test', 'mia-pass-123') AS full_tok \gset
SELECT tenancy.enroll_mfa() AS uri \gset
SELECT substring(:'uri' from 'secret=([A-Z2-7]+)') AS secret \gset
SELECT array_length(tenancy.confirm_mfa(tenancy.totp(:'secret')), 1) AS recovery_codes;
COMMIT;
-- The attacker knows the password only: the session owes its second factor.
BEGIN;
SELECT tenancy.login('mfa@rst.test', 'mia-pass-123') AS pending_tok \gset
SELECT tenancy.current_role_name() AS pending_role;
SELECT count(*) AS sessions_listed FROM tenancy.sessions;
SELECT rtest.try(format('SELECT tenancy.revoke_session(%s)', split_part(:'full_tok', '_', 2))) AS revoke_other;
SELECT rtest.try(format('SELECT tenancy.act_as(%L)', :'clinic')) AS act_as;
SELECT rtest.try(format('SELECT tenancy.create_account(%L, ''x'')', :'co')) AS create_account;
SELECT rtest.try('SELECT tenancy.enroll_mfa()') AS enroll;
SELECT rtest.try('SELECT tenancy.change_password(''mia-pass-123'', ''mia-pass-456'')') AS change_password;
SELECT tenancy.whoami()->>'role' AS whoami_role;
-- a client's own event is refused; the gateway's record of the refused
-- request (this session is a superuser's, so it may write system events)
-- lands in the session's account, where its owners can read it
SELECT rtest.try('SELECT tenancy.audit_event(''app.note'', ''x'')') AS app_event;
SELECT tenancy.audit_event('api.request', 'GET /v1/me', '{"status": 401}') AS refused_request_entry \gset
COMMIT;
RESET ROLE;
SELECT l.account_path::text = a.path::text AS recorded_in_the_account, l.action, l.target
FROM tenancy.audit_log l, tenancy.accounts a WHERE l.id = :refused_request_entry AND a.public_id = :'co';
SET ROLE tenancy_app;
-- The same session token later, through authenticate(): still restricted.
BEGIN;
SELECT tenancy.authenticate(:'pending_tok') IS NOT NULL AS pending_auth;
SELECT count(*) AS sessions_listed FROM tenancy.sessions;
SELECT rtest.try(format('SELECT tenancy.revoke_session(%s)', split_part(:'full_tok', '_', 2))) AS revoke_other;
COMMIT;
-- The verified session was not touched; once the factor is given, it works.
RESET ROLE;
SELECT revoked_at IS NULL AS full_session_alive FROM tenancy.sessions WHERE id = split_part(:'full_tok', '_', 2)::bigint;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'pending_tok') IS NOT NULL AS pending_auth;
SELECT tenancy.verify_mfa(tenancy.totp(:'secret', now() + interval '30 seconds')) AS verified;
SELECT count(*) > 0 AS sessions_listed_after FROM tenancy.sessions;
COMMIT;

-- ---- 3. must change password (sub-user with a temporary password) ----
BEGIN;
SELECT tenancy.login_sub_user('owner@rst.test', 'sub@rst.test', :'sub_pw') IS NOT NULL AS sub_in;
SELECT tenancy.current_role_name() AS sub_role;
SELECT count(*) AS sessions_listed FROM tenancy.sessions;
SELECT rtest.try('SELECT tenancy.revoke_session(1)') AS revoke;
SELECT rtest.try('SELECT tenancy.enroll_mfa()') AS enroll;
SELECT rtest.try(format('SELECT tenancy.act_as(%L)', :'clinic')) AS act_as;
SELECT tenancy.change_password(:'sub_pw', 'sub-pass-new-1');
SELECT tenancy.current_role_name() AS sub_role_after;
COMMIT;

-- ---- 5. the member list: owners and admins only (and one's own rows) ----
BEGIN;
SELECT tenancy.login('owner@rst.test', 'owner-pass-1') IS NOT NULL AS owner_in;
SELECT count(*) AS owner_sees_memberships FROM tenancy.memberships;
SELECT count(*) AS owner_sees_users FROM tenancy.users;
COMMIT;
BEGIN;
SELECT tenancy.login('view@rst.test', 'vic-pass-123') IS NOT NULL AS viewer_in;
SELECT m.role, u.email FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id;
SELECT email FROM tenancy.users;
COMMIT;
BEGIN;
SELECT tenancy.login('agent@rst.test', 'ana-pass-123') IS NOT NULL AS agent_in;
SELECT count(*) AS agent_sees_memberships FROM tenancy.memberships;
SELECT count(*) AS agent_sees_users FROM tenancy.users;
COMMIT;
BEGIN;
SELECT tenancy.login_sub_user('owner@rst.test', 'sub@rst.test', 'sub-pass-new-1') IS NOT NULL AS sub_in;
SELECT count(*) AS sub_user_sees_memberships FROM tenancy.memberships;
SELECT count(*) AS sub_user_sees_users FROM tenancy.users;
COMMIT;
RESET ROLE;
SELECT tenancy.admin_create_api_key(:'co', 'viewer key', 'viewer') AS viewer_key \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'viewer_key') IS NOT NULL AS key_in;
SELECT count(*) AS viewer_key_sees_memberships FROM tenancy.memberships;
SELECT count(*) AS viewer_key_sees_users FROM tenancy.users;
COMMIT;

-- ---- 9. an admin and an owner's pending owner invitation ----
BEGIN;
SELECT tenancy.login('owner@rst.test', 'owner-pass-1') IS NOT NULL AS owner_in;
SELECT tenancy.invite(:'co', 'newboss@rst.test', 'owner') IS NOT NULL AS owner_invites_owner;
COMMIT;
RESET ROLE;
SELECT rtest.mailed('newboss@rst.test', '(tni_\S+)') AS boss_tok \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'full_tok') IS NOT NULL AS admin_in, tenancy.current_role_name();
SELECT rtest.try(format('SELECT tenancy.invite(%L, ''NewBoss@rst.test'', ''viewer'')', :'co')) AS admin_reinvites;
SELECT email, role FROM tenancy.invitations WHERE lower(email) = 'newboss@rst.test' AND accepted_at IS NULL;
COMMIT;
-- the owner's token still works
BEGIN;
SELECT tenancy.accept_invitation(:'boss_tok', 'Boss', 'boss-pass-123') IS NOT NULL AS accepted,
       tenancy.current_role_name() AS boss_role;
COMMIT;
-- an owner may still replace its own pending invitations
BEGIN;
SELECT tenancy.login('owner@rst.test', 'owner-pass-1') IS NOT NULL AS owner_in;
SELECT tenancy.invite(:'co', 'later@rst.test', 'owner') IS NOT NULL AS first;
SELECT tenancy.invite(:'co', 'later@rst.test', 'viewer') IS NOT NULL AS replaced;
SELECT role FROM tenancy.invitations WHERE email = 'later@rst.test' AND accepted_at IS NULL;
COMMIT;
RESET ROLE;

-- ---- 10. protect() with an unknown resource ----
CREATE TABLE rtest.gadgets (id serial PRIMARY KEY, name text);
SELECT rtest.try('SELECT tenancy.protect(''rtest.gadgets'', ''no_such_resource'')') AS unknown_resource;
SELECT count(*) AS policies FROM pg_policy WHERE polrelid = 'rtest.gadgets'::regclass;
SELECT rtest.try('SELECT tenancy.define_resource(''gadgets'', ARRAY[''owner'', ''emperor''])') AS unknown_role;
SELECT tenancy.define_resource('gadgets', ARRAY['owner', 'admin'], ARRAY['viewer']);
SELECT role, action FROM tenancy.role_permissions WHERE resource = 'gadgets' ORDER BY role, action;
SELECT tenancy.protect('rtest.gadgets', 'gadgets');
GRANT SELECT, INSERT ON rtest.gadgets TO tenancy_app;
GRANT USAGE ON SEQUENCE rtest.gadgets_id_seq TO tenancy_app;
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.login('owner@rst.test', 'owner-pass-1') IS NOT NULL AS owner_in;
INSERT INTO rtest.gadgets (name) VALUES ('widget');
SELECT name FROM rtest.gadgets;
COMMIT;
BEGIN;
SELECT tenancy.login('view@rst.test', 'vic-pass-123') IS NOT NULL AS viewer_in;
SELECT name FROM rtest.gadgets;
SELECT rtest.try('INSERT INTO rtest.gadgets (name) VALUES (''nope'')') AS viewer_insert;
COMMIT;
RESET ROLE;
-- and define_resource is the DBA's
SET ROLE tenancy_app;
SELECT rtest.try('SELECT tenancy.define_resource(''mine'')') AS app_defines;
RESET ROLE;
