-- Outbox delivery (37_outbox_delivery.sql): what invite and activate_sub_user
-- write, the gateway-only claim/sent/retry/failed calls with their leases,
-- backoff and Message-ID, the failures an owner reads, and who may do what.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS obx;
GRANT USAGE ON SCHEMA obx TO PUBLIC;
CREATE FUNCTION obx.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE q INTO r;
    RETURN 'ok: ' || coalesce(r, '<null>');
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
GRANT EXECUTE ON FUNCTION obx.try(text) TO PUBLIC;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_obx_client') THEN
        PERFORM tenancy.create_client('regress_obx_client');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_obx_gateway') THEN
        PERFORM tenancy.create_client('regress_obx_gateway', NULL, gateway => true);
    END IF;
END $$;

-- Earlier tests' mails are not this test's business.
UPDATE tenancy.outbox SET sent_at = now() WHERE sent_at IS NULL AND failed_at IS NULL;

SELECT tenancy.create_main_account('Obx Reseller', 'owner@obx.test', 'pw-obx-1') AS main \gset
SELECT tenancy.create_main_account('Obx Other', 'owner@obx-other.test', 'pw-obx-2') AS other \gset
SELECT tenancy.admin_create_api_key(:'main', 'obx key', 'owner') AS key_owner,
       tenancy.admin_create_api_key(:'main', 'obx viewer', 'viewer') AS key_viewer,
       tenancy.admin_create_api_key(:'other', 'obx other', 'owner') AS key_other \gset
-- Branding on the main account; the child overrides one key only.
UPDATE tenancy.accounts SET branding = '{"name": "Obx Brand", "logo_url": "https://obx.test/logo.png", "primary_color": "#112233"}'
WHERE public_id = :'main';
BEGIN;
SELECT tenancy.authenticate(:'key_owner') IS NOT NULL AS authenticated;
SELECT tenancy.create_account(:'main', 'Obx Clinic') AS child \gset
COMMIT;
UPDATE tenancy.accounts SET branding = '{"primary_color": "#445566"}' WHERE public_id = :'child';

-- ==== what the changes write ================================================================
BEGIN;
SELECT tenancy.authenticate(:'key_owner') IS NOT NULL AS authenticated;
SELECT tenancy.invite(:'child', 'invitee@obx.test', 'admin') IS NOT NULL AS invited;
SELECT tenancy.create_sub_user('sue@obx.test', 'Sue', 'Smith', 'initial pw 1') AS sue \gset
SELECT tenancy.activate_sub_user(:'sue');
COMMIT;
-- kind, the account the mail is about, data with the secret the body carries too
SELECT o.kind, a.name AS account, o.recipient, o.subject,
       o.data ->> 'token' = substring(o.body FROM '(tni_\S+)') AS invitation_token_in_data,
       o.data ->> 'temp_password' = substring(o.body FROM 'temporary password: (\S+)') AS password_in_data,
       o.data - 'token' - 'temp_password' - 'expires_at' AS other_data,
       o.next_attempt_at <= now() AS due, o.claimed_by, o.attempts
FROM tenancy.outbox o JOIN tenancy.accounts a ON a.path OPERATOR(tenancy.=) o.account_path
WHERE o.sent_at IS NULL ORDER BY o.id;
SELECT min(id) AS inv_id, max(id) AS sue_id FROM tenancy.outbox WHERE sent_at IS NULL \gset

-- ==== who may call ==========================================================================
SET SESSION AUTHORIZATION regress_obx_client;
SELECT obx.try('SELECT count(*) FROM tenancy.outbox');
SELECT obx.try($$SELECT count(*) FROM tenancy.mail_claim('x', 10, '1 minute')$$);
SELECT obx.try(format($$SELECT tenancy.mail_sent(%s, 'x')$$, :inv_id));
SELECT obx.try(format($$SELECT tenancy.mail_retry(%s, 'x', 'e')$$, :inv_id));
SELECT obx.try(format($$SELECT tenancy.mail_failed(%s, 'x', 'e')$$, :inv_id));
SELECT obx.try('SELECT depth FROM tenancy.mail_queue()');
RESET SESSION AUTHORIZATION;
-- EXECUTE is tenancy_app's only: PUBLIC has none
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_may,
       has_function_privilege('tenancy_app', p.oid, 'EXECUTE') AS app_may, p.prosecdef,
       p.proconfig
FROM pg_proc p WHERE p.pronamespace = 'tenancy'::regnamespace AND p.proname LIKE 'mail\_%'
ORDER BY p.proname;

-- ==== claims and leases ======================================================================
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT obx.try($$SELECT count(*) FROM tenancy.mail_claim('', 10, '1 minute')$$);
SELECT obx.try($$SELECT count(*) FROM tenancy.mail_claim('m1', 0, '1 minute')$$);
SELECT obx.try($$SELECT count(*) FROM tenancy.mail_claim('m1', 10, '0 seconds')$$);
SELECT depth, oldest_age_s >= 0 AS has_age FROM tenancy.mail_queue();
-- m1 claims one row: the invitation, with the child's effective branding
SELECT c.id = :inv_id AS is_invitation, c.kind, c.recipient, c.branding, c.attempts,
       c.message_id ~ ('^<outbox-' || c.id || '\.[0-9a-f]{16}@tenancy>$') AS message_id_form,
       c.data ? 'token' AS has_token
FROM tenancy.mail_claim('m1', 1, '10 minutes') c;
-- m2 gets the other row (the invitation is m1's), then nothing
SELECT c.id = :sue_id AS is_sue, c.kind, c.branding
FROM tenancy.mail_claim('m2', 10, '10 minutes') c;
SELECT count(*) AS m3_gets FROM tenancy.mail_claim('m3', 10, '10 minutes');
-- m1 restarting under its own name takes its leased row back
SELECT c.id = :inv_id AS m1_again FROM tenancy.mail_claim('m1', 10, '10 minutes') c;

-- the Message-ID: the same at every claim of a row (internal: the DBA may call it)
RESET SESSION AUTHORIZATION;
SELECT tenancy._mail_message_id(:inv_id) = tenancy._mail_message_id(:inv_id) AS stable,
       tenancy._mail_message_id(:inv_id) <> tenancy._mail_message_id(:sue_id) AS distinct_ids;

-- ==== sent ===================================================================================
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT tenancy.mail_sent(:inv_id, 'm2') AS sent_by_m2_who_does_not_hold_it;
SELECT tenancy.mail_sent(:inv_id, 'm1') AS sent_by_m1;
SELECT tenancy.mail_sent(:inv_id, 'm1') AS sent_twice;
RESET SESSION AUTHORIZATION;
SELECT sent_at IS NOT NULL AS sent, body = '' AS body_blank, data IS NULL AS data_blank,
       claimed_by, lease_until, attempts, last_error
FROM tenancy.outbox WHERE id = :inv_id;

-- ==== temporary failures: backoff with jitter =================================================
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT tenancy.mail_retry(:sue_id, 'm1', '421 busy') AS retry_by_non_holder;
SELECT obx.try(format($$SELECT tenancy.mail_retry(%s, 'm2', 'x', '0 seconds')$$, :sue_id));
SELECT w BETWEEN now() + interval '5 seconds' AND now() + interval '10 seconds' AS first_wait_5_to_10s
FROM (SELECT tenancy.mail_retry(:sue_id, 'm2', '421 4.3.2 try later', '10 seconds', '1 hour') AS w OFFSET 0) r;
-- not due: nobody gets it
SELECT count(*) AS claimable FROM tenancy.mail_claim('m1', 10, '1 minute');
RESET SESSION AUTHORIZATION;
SELECT attempts, last_error, claimed_by, body <> '' AS body_kept, data IS NOT NULL AS data_kept
FROM tenancy.outbox WHERE id = :sue_id;
-- the fourth failure waits base * 2^3 (80 s) times [0.5, 1); the cap bounds it
UPDATE tenancy.outbox SET attempts = 3, next_attempt_at = now() WHERE id = :sue_id;
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT count(*) AS claimed FROM tenancy.mail_claim('m1', 10, '1 minute');
SELECT w BETWEEN now() + interval '40 seconds' AND now() + interval '80 seconds' AS fourth_wait_40_to_80s
FROM (SELECT tenancy.mail_retry(:sue_id, 'm1', 'connection refused', '10 seconds', '1 hour') AS w OFFSET 0) r;
RESET SESSION AUTHORIZATION;
UPDATE tenancy.outbox SET attempts = 20, next_attempt_at = now() WHERE id = :sue_id;
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT count(*) AS claimed FROM tenancy.mail_claim('m1', 10, '1 minute');
SELECT w BETWEEN now() + interval '30 seconds' AND now() + interval '60 seconds' AS capped_30_to_60s
FROM (SELECT tenancy.mail_retry(:sue_id, 'm1', 'timeout', '10 seconds', '1 minute') AS w OFFSET 0) r;
RESET SESSION AUTHORIZATION;
UPDATE tenancy.outbox SET next_attempt_at = now() WHERE id = :sue_id;

-- ==== permanent failure: the owner reads it ===================================================
SET SESSION AUTHORIZATION regress_obx_gateway;
SELECT count(*) AS claimed FROM tenancy.mail_claim('m1', 10, '1 minute');
SELECT tenancy.mail_failed(:sue_id, 'm2', '550 no') AS failed_by_non_holder;
SELECT tenancy.mail_failed(:sue_id, 'm1', '550 5.1.1 <sue@obx.test>: Recipient address rejected') AS failed;
SELECT tenancy.mail_sent(:sue_id, 'm1') AS sent_after_failure;
SELECT count(*) AS claimable FROM tenancy.mail_claim('m1', 10, '1 minute');
SELECT depth FROM tenancy.mail_queue();
RESET SESSION AUTHORIZATION;
SELECT failed_at IS NOT NULL AS failed, sent_at, body = '' AS body_blank, data IS NULL AS data_blank,
       attempts, last_error FROM tenancy.outbox WHERE id = :sue_id;
-- the sent_at / failed_at pair is exclusive
SELECT obx.try(format('UPDATE tenancy.outbox SET sent_at = now() WHERE id = %s RETURNING id', :sue_id));
SET SESSION AUTHORIZATION regress_obx_client;
BEGIN;
SELECT tenancy.authenticate(:'key_owner') IS NOT NULL AS owner;
SELECT a.name AS account, f.recipient, f.subject, f.error, f.failed_at IS NOT NULL AS at
FROM tenancy.outbox_failures f JOIN tenancy.accounts a ON a.path OPERATOR(tenancy.=) f.account_path;
SELECT obx.try('SELECT count(*) FROM tenancy.outbox');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'key_viewer') IS NOT NULL AS viewer;
SELECT count(*) AS viewer_sees FROM tenancy.outbox_failures;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'key_other') IS NOT NULL AS other_tenant;
SELECT count(*) AS other_tenant_sees FROM tenancy.outbox_failures;
COMMIT;
SELECT count(*) AS no_context_sees FROM tenancy.outbox_failures;
SELECT obx.try('INSERT INTO tenancy.outbox_failures (outbox_id, account_path, recipient, subject, error) VALUES (1, ''1'', ''a'', ''b'', ''c'') RETURNING 1');
RESET SESSION AUTHORIZATION;
-- a failure row has no body column at all
SELECT string_agg(attname, ', ' ORDER BY attnum) AS failure_columns FROM pg_attribute
WHERE attrelid = 'tenancy.outbox_failures'::regclass AND attnum > 0 AND NOT attisdropped;
