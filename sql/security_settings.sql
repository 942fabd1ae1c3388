-- Security settings per account: each setting, plan gating, inheritance,
-- tighten-only, owner only, the same rules through update_account()'s
-- settings (a trigger on accounts guards every update), audit.
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS sstest;
GRANT USAGE ON SCHEMA sstest TO PUBLIC;
CREATE OR REPLACE FUNCTION sstest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(regexp_replace(SQLERRM, 'acc_[0-9]+_[0-9a-f]+', 'acc_X', 'g'),
                                              'account [0-9]+ not found', 'account N not found');
END $$;
GRANT EXECUTE ON FUNCTION sstest.try(text) TO PUBLIC;
-- An account's internal id (the DBA's view).
CREATE OR REPLACE FUNCTION sstest.id(acc text) RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
    SELECT id FROM tenancy.accounts WHERE public_id = acc $$;
GRANT EXECUTE ON FUNCTION sstest.id(text) TO PUBLIC;
-- The effective settings as one short line: p(hi) r(ecording) e(ncryption) a(udit), upper case = on.
CREATE OR REPLACE FUNCTION sstest.eff(acc text) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN (s->>'phi_protection')::boolean THEN 'P' ELSE 'p' END
        || CASE WHEN (s->>'call_recording')::boolean THEN 'R' ELSE 'r' END
        || CASE WHEN (s->>'transcript_encryption')::boolean THEN 'E' ELSE 'e' END
        || CASE WHEN (s->>'audit_log')::boolean THEN 'A' ELSE 'a' END
    FROM (SELECT tenancy.effective_security(sstest.id(acc)) AS s) x $$;
GRANT EXECUTE ON FUNCTION sstest.eff(text) TO PUBLIC;

-- An enterprise clinic group (every feature), a standard and a free tenant.
SELECT tenancy.create_main_account('Clinic Group', 'owner@ss.test', 'owner-password', 'enterprise') AS grp \gset
SELECT tenancy.create_main_account('Standard Co', 'owner@std.test', 'owner-password', 'standard') AS std \gset
SELECT tenancy.create_main_account('Free Co', 'owner@free.test', 'owner-password', 'free') AS free \gset
SELECT tenancy.admin_create_api_key(:'grp', 'owner key') AS grp_owner \gset
SELECT tenancy.admin_create_api_key(:'grp', 'admin key', 'admin') AS grp_admin \gset
SELECT tenancy.admin_create_api_key(:'std', 'owner key') AS std_owner \gset
SELECT tenancy.admin_create_api_key(:'free', 'owner key') AS free_owner \gset
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.create_account(:'grp', 'North') AS north \gset
SELECT tenancy.create_account(:'north', 'North Clinic') AS clinic \gset
SELECT tenancy.create_account(:'grp', 'South') AS south \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'north', 'north owner') AS north_owner \gset
SELECT tenancy.admin_create_api_key(:'clinic', 'clinic owner') AS clinic_owner \gset

SET ROLE tenancy_app;

-- ---- defaults: protections off, audit log on where the plan has it ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic,
       sstest.eff(:'south') AS south;
SELECT tenancy.effective_security(sstest.id(:'grp'));
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'std_owner') IS NOT NULL AS in_standard;
SELECT sstest.eff(:'std') AS std;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'free_owner') IS NOT NULL AS in_free;
SELECT sstest.eff(:'free') AS free;
COMMIT;

-- ---- plan gating: a feature the main account's plan lacks cannot be switched ----
BEGIN;
SELECT tenancy.authenticate(:'std_owner') IS NOT NULL AS in_standard;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', true)', :'std')) AS std_phi;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''call_recording'', true)', :'std')) AS std_recording;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''transcript_encryption'', true)', :'std')) AS std_encryption;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''audit_log'', false)', :'std')) AS std_audit_off;
SELECT sstest.eff(:'std') AS std;
-- the same through update_account()'s settings (the accounts PATCH)
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": {"phi_protection": true}}'')', :'std')) AS std_phi_update;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'free_owner') IS NOT NULL AS in_free;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''audit_log'', true)', :'free')) AS free_audit;
COMMIT;

-- ---- owner only; bad names and values ----
BEGIN;
SELECT tenancy.authenticate(:'grp_admin') IS NOT NULL AS as_admin;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', true)', :'grp')) AS admin_switch;
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": {"phi_protection": true}}'')', :'north')) AS admin_update;
-- an admin still edits other settings
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"theme": "dark"}'')', :'south')) AS admin_other_settings;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''mfa'', true)', :'grp')) AS unknown_name;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', NULL)', :'grp')) AS null_value;
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": {"phi_protection": "yes"}}'')', :'grp')) AS not_boolean;
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": {"colour": true}}'')', :'grp')) AS unknown_key;
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": true}'')', :'grp')) AS not_object;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', true)', :'std')) AS other_tenant;
SELECT sstest.try(format('SELECT tenancy.effective_security(%s)', sstest.id(:'std'))) AS other_tenant_effective;
SELECT sstest.try('SELECT tenancy.effective_security(-1)') AS missing_effective;
COMMIT;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', true)', :'grp')) AS no_context;
SELECT sstest.try(format('SELECT tenancy.effective_security(%s)', sstest.id(:'grp'))) AS no_context_effective;

-- ---- inheritance and tighten-only: protections ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'phi_protection', true) ->> 'phi_protection' AS grp_phi;
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic,
       sstest.eff(:'south') AS south;
-- encryption only for North's subtree
SELECT tenancy.set_security_setting(:'north', 'transcript_encryption', true) ->> 'transcript_encryption' AS north_enc;
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic,
       sstest.eff(:'south') AS south;
COMMIT;
-- North's owner may tighten below itself, not loosen what the group enforces
BEGIN;
SELECT tenancy.authenticate(:'north_owner') IS NOT NULL AS as_north_owner;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', false)', :'north')) AS north_phi_off;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', false)', :'clinic')) AS clinic_phi_off;
SELECT sstest.try(format('SELECT tenancy.update_account(%L, settings => ''{"security": {"phi_protection": false}}'')', :'clinic')) AS clinic_phi_off_update;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''transcript_encryption'', false)', :'clinic')) AS clinic_enc_off;
-- switching itself is allowed (it enforces nothing above it), the group's enforcement stays
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''transcript_encryption'', false)', :'north')) AS north_enc_off;
SELECT sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic;
SELECT tenancy.set_security_setting(:'clinic', 'transcript_encryption', true) ->> 'transcript_encryption' AS clinic_enc;
SELECT sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic;
-- the group is outside North's subtree
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''phi_protection'', false)', :'grp')) AS north_on_group;
SELECT sstest.try(format('SELECT tenancy.effective_security(%s)', sstest.id(:'grp'))) AS north_reads_group;
COMMIT;
-- the group's owner lifts PHI protection: the tree follows, unless a descendant keeps it
BEGIN;
SELECT tenancy.authenticate(:'clinic_owner') IS NOT NULL AS as_clinic_owner;
SELECT tenancy.set_security_setting(:'clinic', 'phi_protection', true) ->> 'phi_protection' AS clinic_keeps_phi;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'phi_protection', false) ->> 'phi_protection' AS grp_phi;
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic,
       sstest.eff(:'south') AS south;
COMMIT;

-- ---- call recording: off above forbids it below ----
BEGIN;
SELECT tenancy.authenticate(:'north_owner') IS NOT NULL AS as_north_owner;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''call_recording'', true)', :'north')) AS north_recording;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'call_recording', true) ->> 'call_recording' AS grp_recording;
SELECT sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'north_owner') IS NOT NULL AS as_north_owner;
SELECT tenancy.set_security_setting(:'north', 'call_recording', false) ->> 'call_recording' AS north_recording;
SELECT sstest.eff(:'north') AS north, sstest.eff(:'clinic') AS clinic;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''call_recording'', true)', :'clinic')) AS clinic_recording;
COMMIT;

-- ---- audit log: on by default; a descendant turns it off only once the main account did ----
BEGIN;
SELECT tenancy.authenticate(:'north_owner') IS NOT NULL AS as_north_owner;
SELECT sstest.try(format('SELECT tenancy.set_security_setting(%L, ''audit_log'', false)', :'north')) AS north_audit_off;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'audit_log', false) ->> 'audit_log' AS grp_audit;
SELECT tenancy.set_security_setting(:'south', 'audit_log', true) ->> 'audit_log' AS south_audit;
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'north') AS north, sstest.eff(:'south') AS south;
COMMIT;

-- ---- null (a merge patch's removal) inherits again ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.update_account(:'north', settings => '{"security": {"call_recording": null}}') IS NOT NULL AS north_inherits;
SELECT tenancy.set_security_settings(:'south', '{"audit_log": null}') -> 'own' AS south_own;
SELECT a.name, a.settings -> 'security' AS security FROM tenancy.accounts a ORDER BY a.path;
SELECT sstest.eff(:'north') AS north, sstest.eff(:'south') AS south;
COMMIT;

RESET ROLE;
-- ---- a plan downgrade switches the features off, whatever is stored ----
UPDATE tenancy.accounts SET plan = 'standard' WHERE public_id = :'grp';
SELECT sstest.eff(:'grp') AS grp, sstest.eff(:'clinic') AS clinic;
UPDATE tenancy.accounts SET plan = 'enterprise' WHERE public_id = :'grp';
-- a DBA outside a context reads any account's settings; a client outside one reads none
SELECT sstest.eff(:'clinic') AS clinic_as_dba;
SELECT path AS clinic_path, id AS clinic_id FROM tenancy.accounts WHERE public_id = :'clinic' \gset
GRANT tenancy_app TO regress_client;
SET SESSION AUTHORIZATION regress_client;
SELECT sstest.try(format('SELECT tenancy.effective_security(%s)', :clinic_id)) AS client_no_context;
SELECT tenancy._security_at(:'clinic_path') IS NULL AS security_at_hidden;
SELECT tenancy._phi_protected_at(:'clinic_path') AS unknown_counts_as_protected;
RESET SESSION AUTHORIZATION;

-- ---- every switch is on the audit log (the account row's update, old and new settings) ----
SELECT a.actor_kind, a.action, a.target, a.change #> '{old,settings,security}' AS old, a.change #> '{new,settings,security}' AS new
FROM tenancy.audit_log a
WHERE a.main_id = sstest.id(:'grp') AND a.target = 'tenancy.accounts' AND a.action = 'update'
  AND a.change #> '{old,settings,security}' IS DISTINCT FROM a.change #> '{new,settings,security}'
ORDER BY a.id;

DROP SCHEMA sstest CASCADE;
