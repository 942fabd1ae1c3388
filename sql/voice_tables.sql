-- The voice-AI tables (extension/sql/50_voice.sql): protected with their
-- resources, confined to the subtree, opaque ids, references only to visible
-- rows, integration secrets sealed, the escalation claim and availability.
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS voice;
RESET client_min_messages;
GRANT USAGE ON SCHEMA voice TO PUBLIC;

SELECT p.tbl, p.resource FROM tenancy.protected_tables p
WHERE p.tbl::text ~ '^tenancy\.' ORDER BY p.tbl::text;
-- Every voice table: RLS forced, the read-permission policy, the row trigger.
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT string_agg(polname, ', ' ORDER BY polname) FROM pg_policy WHERE polrelid = c.oid) AS policies
FROM pg_class c JOIN tenancy.protected_tables p ON p.tbl = c.oid
WHERE c.relnamespace = 'tenancy'::regnamespace ORDER BY c.relname;

-- The tree: Agency ─┬─ Clinic ── Ward        Other (another main account)
--                   └─ Dental
SELECT tenancy.create_main_account('Agency', 'voice-agency@example.test', 'a long enough password') AS m \gset
SELECT tenancy.create_main_account('Other', 'voice-other@example.test', 'a long enough password') AS o \gset
SELECT tenancy.admin_create_api_key(:'m', 'agency owner') AS m_key \gset
SELECT tenancy.admin_create_api_key(:'o', 'other owner') AS o_key \gset
BEGIN;
SELECT tenancy.authenticate(:'m_key') IS NOT NULL AS ok;
SELECT tenancy.create_account(:'m', 'Clinic') AS c \gset
SELECT tenancy.create_account(:'c', 'Ward') AS w \gset
SELECT tenancy.create_account(:'m', 'Dental') AS d \gset
SELECT tenancy.create_api_key(:'c', 'clinic owner', 'owner') AS c_key \gset
SELECT tenancy.create_api_key(:'d', 'dental owner', 'owner') AS d_key \gset
SELECT tenancy.create_api_key(:'c', 'clinic support 1', 'support_agent') AS s1_key \gset
SELECT tenancy.create_api_key(:'c', 'clinic support 2', 'support_agent') AS s2_key \gset
SELECT tenancy.create_api_key(:'d', 'dental support', 'support_agent') AS ds_key \gset
SELECT tenancy.create_api_key(:'c', 'clinic member', 'member') AS cm_key \gset
SELECT tenancy.create_api_key(:'c', 'clinic viewer', 'viewer') AS cv_key \gset
COMMIT;
CREATE TABLE voice.actors (actor text PRIMARY KEY, key text NOT NULL);
INSERT INTO voice.actors VALUES ('agency', :'m_key'), ('clinic', :'c_key'), ('dental', :'d_key'),
    ('support1', :'s1_key'), ('support2', :'s2_key'), ('dental support', :'ds_key'), ('member', :'cm_key'),
    ('viewer', :'cv_key'), ('other', :'o_key');
GRANT SELECT ON voice.actors TO tenancy_app;
-- Results the client sessions leave for later statements.
CREATE TABLE voice.ids (name text PRIMARY KEY, value text);
GRANT ALL ON voice.ids TO tenancy_app;

-- Run q as an actor: 'N rows' or 'SQLSTATE message' (ids masked).
CREATE FUNCTION voice.as_actor(who text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM tenancy.authenticate((SELECT key FROM voice.actors WHERE actor = who));
    BEGIN
        EXECUTE q;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM tenancy.reset();
        RETURN n || ' rows';
    EXCEPTION WHEN OTHERS THEN
        PERFORM tenancy.reset();
        RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(SQLERRM, '(conv|agt|ct|chn|int)_[0-9]+_[0-9]+_[0-9a-f]+',
                                                                '\1_*', 'g'), '(agent|contact|channel) [0-9]+', '\1 N');
    END;
END $$;
-- The value of a one-value query as an actor.
CREATE FUNCTION voice.value_as(who text, q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v text;
BEGIN
    PERFORM tenancy.authenticate((SELECT key FROM voice.actors WHERE actor = who));
    EXECUTE q INTO v;
    PERFORM tenancy.reset();
    RETURN v;
END $$;

SET client_min_messages = warning;
GRANT tenancy_app TO regress_client;
RESET client_min_messages;
\c - regress_client
\set VERBOSITY terse
-- Each client account writes its agent, contact, channel and conversation.
SELECT actor, voice.as_actor(actor, format($q$
    WITH a AS (INSERT INTO tenancy.agents (name, prompt, voice, language, model, tools)
               VALUES (%1$L || ' receptionist', 'You answer the phone.', 'alloy', 'en-US',
                       '{"model": "gpt-4o", "temperature": 0.2}', '{"book": {"url": "https://x.test/book"}}')
               RETURNING main_id, id, public_id),
         c AS (INSERT INTO tenancy.contacts (name, phone, email, attributes)
               VALUES (%1$L || ' caller', '+15551234567', 'caller@example.test', '{"vip": true}') RETURNING id),
         ch AS (INSERT INTO tenancy.channels (kind, name, phone_number, agent_id)
                SELECT 'phone', %1$L || ' line', '+15550001111', a.id FROM a RETURNING id),
         conv AS (INSERT INTO tenancy.conversations (agent_id, contact_id, channel_id, direction, started_at, ended_at,
                                                     status, transcript)
                  SELECT a.id, c.id, ch.id, 'inbound', '2026-01-01 10:00:00+00', '2026-01-01 10:02:05+00', 'completed',
                         '[{"speaker": "caller", "text": "hello"}, {"speaker": "agent", "text": "hi"}]'
                  FROM a, c, ch RETURNING public_id)
    INSERT INTO voice.ids SELECT %1$L || ' agent', a.public_id FROM a
    UNION ALL SELECT %1$L || ' agent id', a.id::text FROM a
    UNION ALL SELECT %1$L || ' conversation', conv.public_id FROM conv$q$, actor)) AS wrote
FROM voice.actors WHERE actor IN ('clinic', 'dental', 'other') ORDER BY actor;

-- Ids are opaque and system-made: prefix, main account, id, random.
SELECT name, value ~ '^(agt|conv)_[0-9]+_[0-9]+_[0-9a-f]{10}$' AS opaque_id
FROM voice.ids WHERE name NOT LIKE '%agent id' ORDER BY name;
-- duration_s is computed; main_id is the account's main account.
SELECT voice.value_as('clinic', $q$SELECT format('%s s, main ok: %s', duration_s,
    main_id = tenancy.current_main_id()) FROM tenancy.conversations$q$) AS clinic_call;

-- Who sees what: the agency its whole subtree, a client only its own, another
-- main account nothing of the agency.
SELECT actor,
       voice.value_as(actor, 'SELECT string_agg(name, '', '' ORDER BY name) FROM tenancy.agents') AS agents,
       voice.value_as(actor, 'SELECT count(*) FROM tenancy.contacts') AS contacts,
       voice.value_as(actor, 'SELECT count(*) FROM tenancy.conversations') AS conversations,
       voice.value_as(actor, 'SELECT count(*) FROM tenancy.channels') AS channels
FROM voice.actors WHERE actor IN ('agency', 'clinic', 'dental', 'other', 'member', 'viewer') ORDER BY actor;
-- A client cannot change or delete another client's rows (it does not see them).
SELECT voice.as_actor('dental', 'UPDATE tenancy.agents SET name = ''mine'' WHERE name = ''clinic receptionist''') AS dental_renames,
       voice.as_actor('dental', format('DELETE FROM tenancy.conversations WHERE public_id = %L',
           (SELECT value FROM voice.ids WHERE name = 'clinic conversation'))) AS dental_deletes,
       voice.as_actor('other', 'UPDATE tenancy.agents SET name = ''mine''') AS other_renames_all_it_sees;
SELECT voice.value_as('agency', 'SELECT string_agg(name, '', '' ORDER BY name) FROM tenancy.agents') AS agents_after;
SELECT voice.value_as('clinic', 'SELECT count(*) FROM tenancy.conversations') AS clinic_conversations;
-- Nor reference them: a foreign key would only tie the row to the main account.
SELECT voice.as_actor('dental', format(
    'INSERT INTO tenancy.conversations (direction, agent_id) VALUES (''inbound'', %s)',
    (SELECT value FROM voice.ids WHERE name = 'clinic agent id'))) AS dental_uses_clinic_agent;
SELECT voice.as_actor('dental', format(
    'INSERT INTO tenancy.conversations (direction, agent_id) VALUES (''inbound'', %s)', 999999999)) AS unknown_agent;
-- The agency may: the row is in its subtree and so is the agent.
SELECT voice.as_actor('agency', format(
    'INSERT INTO tenancy.conversations (direction, agent_id, account_path) SELECT ''outbound'', %s, path
     FROM tenancy.accounts WHERE name = ''Clinic''', (SELECT value FROM voice.ids WHERE name = 'clinic agent id')))
    AS agency_writes_clinic_call;
-- Ids, public ids, timestamps and the claim are not the client's to write.
SELECT voice.as_actor('clinic', 'UPDATE tenancy.agents SET public_id = ''agt_1_1_0000000000''') AS set_public_id,
       voice.as_actor('clinic', 'INSERT INTO tenancy.agents (id, name) VALUES (1, ''x'')') AS set_id,
       voice.as_actor('clinic', 'UPDATE tenancy.conversations SET claimed_by = ''user:1''') AS set_claimed_by;
-- Malformed rows are refused with the constraint's SQLSTATE.
SELECT voice.as_actor('clinic', 'INSERT INTO tenancy.conversations (direction, transcript) VALUES (''inbound'', ''{"text": "x"}'')') AS transcript_not_array,
       voice.as_actor('clinic', 'INSERT INTO tenancy.conversations (direction, transcript) VALUES (''inbound'', ''[{"speaker": "agent"}]'')') AS turn_without_text,
       voice.as_actor('clinic', 'INSERT INTO tenancy.conversations (direction) VALUES (''sideways'')') AS bad_direction,
       voice.as_actor('clinic', 'INSERT INTO tenancy.conversations (direction, started_at, ended_at) VALUES (''inbound'', now(), now() - interval ''1 s'')') AS ends_before_start,
       voice.as_actor('clinic', 'INSERT INTO tenancy.channels (kind, name) VALUES (''phone'', ''no number'')') AS phone_without_number,
       voice.as_actor('clinic', 'INSERT INTO tenancy.agents (name, model) VALUES (''x'', ''[]'')') AS model_not_object;

-- Integrations: the secret is sealed on write; a client reads only a hint.
SELECT voice.as_actor('clinic', $q$INSERT INTO tenancy.integrations (provider, name, config, secret)
    VALUES ('twilio', 'Clinic Twilio', '{"account_sid": "AC123"}', 'sk-live-VERYSECRET-abcd1234wxyz')$q$) AS integration_added;
SELECT voice.value_as('clinic', 'SELECT secret_hint FROM tenancy.integrations') AS hint;
SELECT voice.as_actor('clinic', 'SELECT secret_sealed FROM tenancy.integrations') AS read_sealed,
       voice.as_actor('clinic', 'SELECT secret FROM tenancy.integrations') AS read_secret,
       voice.as_actor('clinic', 'SELECT * FROM tenancy.integrations') AS read_star,
       voice.as_actor('clinic', 'UPDATE tenancy.integrations SET secret_sealed = ''\x00''') AS write_sealed,
       voice.as_actor('clinic', 'UPDATE tenancy.integrations SET secret_hint = ''x''') AS write_hint;
-- A change without a new secret keeps the sealed one; a new secret replaces it.
SELECT voice.as_actor('clinic', 'UPDATE tenancy.integrations SET name = ''Clinic Twilio (main)''') AS renamed;
SELECT voice.value_as('clinic', 'SELECT secret_hint FROM tenancy.integrations') AS hint_kept;
\c - postgres
\set VERBOSITY terse
-- The DBA sees ciphertext: nothing of the secret in the table or the audit log.
SELECT i.secret IS NULL AS no_clear_column, length(i.secret_sealed) > 40 AS sealed,
       position(convert_to('VERYSECRET', 'UTF8') IN i.secret_sealed) = 0 AS ciphertext,
       NOT EXISTS (SELECT FROM tenancy.audit_log l WHERE l::text LIKE '%VERYSECRET%') AS audit_clean
FROM tenancy.integrations i WHERE i.provider = 'twilio';
-- It opens with the server's subkey (the platform's connectors, superuser only).
SELECT tenancy._integration_secret(public_id) FROM tenancy.integrations WHERE provider = 'twilio';
SET ROLE tenancy_admin;
SELECT voice_try FROM (SELECT 'tenancy_admin may not open it' AS voice_try) x
WHERE NOT has_function_privilege('tenancy._integration_secret(text)', 'EXECUTE');
RESET ROLE;
\c - regress_client
\set VERBOSITY terse
SELECT voice.as_actor('clinic', 'UPDATE tenancy.integrations SET secret = ''short''') AS new_short_secret;
SELECT voice.value_as('clinic', 'SELECT secret_hint FROM tenancy.integrations') AS short_secret_hint;
SELECT voice.as_actor('clinic', 'UPDATE tenancy.integrations SET secret = ''''') AS empty_secret;
SELECT voice.as_actor('viewer', 'SELECT count(*) FROM tenancy.integrations') AS viewer_reads_integrations,
       voice.value_as('viewer', 'SELECT count(*) FROM tenancy.integrations') AS viewer_sees;

-- The escalation queue. The clinic's call is escalated; two support agents
-- claim it one after the other (the isolation spec escalation_claim runs them
-- at once): the first wins, the second is told it is taken.
SELECT voice.as_actor('clinic', 'UPDATE tenancy.conversations SET escalation_state = ''queued'', status = ''escalated'' WHERE direction = ''inbound''') AS escalated;
SELECT voice.as_actor('support1', format('SELECT tenancy.claim_conversation(%L)',
    (SELECT value FROM voice.ids WHERE name = 'clinic conversation'))) AS first_claim;
SELECT voice.as_actor('support2', format('SELECT tenancy.claim_conversation(%L)',
    (SELECT value FROM voice.ids WHERE name = 'clinic conversation'))) AS second_claim;
SELECT voice.value_as('clinic', 'SELECT escalation_state || '' by '' || (claimed_by LIKE ''api_key:key_%'')
    FROM tenancy.conversations WHERE direction = ''inbound''') AS claimed;
-- Outside the subtree it is missing; roles without the queue may not claim;
-- a conversation that was never escalated cannot be claimed.
SELECT voice.as_actor('dental support', format('SELECT tenancy.claim_conversation(%L)',
    (SELECT value FROM voice.ids WHERE name = 'clinic conversation'))) AS other_subtree,
       voice.as_actor('member', format('SELECT tenancy.claim_conversation(%L)',
    (SELECT value FROM voice.ids WHERE name = 'clinic conversation'))) AS member_claims,
       voice.as_actor('dental support', format('SELECT tenancy.claim_conversation(%L)',
    (SELECT value FROM voice.ids WHERE name = 'dental conversation'))) AS not_escalated,
       voice.as_actor('support1', 'SELECT tenancy.claim_conversation(''conv_nope'')') AS unknown;
-- A client cannot fake a claim: back to queued with a claimant breaks the check.
SELECT voice.as_actor('clinic', 'UPDATE tenancy.conversations SET escalation_state = ''queued'' WHERE escalation_state = ''claimed''') AS unclaim,
       voice.as_actor('clinic', 'UPDATE tenancy.conversations SET escalation_state = ''resolved'' WHERE escalation_state = ''claimed''') AS resolve;

-- Availability: the caller's own row; only roles that take escalations.
SELECT voice.value_as('support1', 'SELECT tenancy.set_availability(''online'') ->> ''status''') AS support1,
       voice.value_as('support1', 'SELECT tenancy.set_availability(''away'') ->> ''status''') AS support1_again,
       voice.value_as('support2', 'SELECT tenancy.set_availability(''offline'') ->> ''status''') AS support2;
SELECT voice.as_actor('support1', 'SELECT tenancy.set_availability(''busy'')') AS bad_status,
       voice.as_actor('viewer', 'SELECT tenancy.set_availability(''online'')') AS viewer_sets,
       voice.as_actor('support1', 'UPDATE tenancy.support_availability SET status = ''online''') AS direct_write;
SELECT actor, voice.value_as(actor, $q$SELECT string_agg(status, ', ' ORDER BY status) FROM tenancy.support_availability$q$) AS sees
FROM voice.actors WHERE actor IN ('agency', 'clinic', 'support1', 'dental', 'viewer') ORDER BY actor;

-- Deleting an agent keeps its call history (agent_id becomes NULL).
SELECT voice.as_actor('clinic', 'DELETE FROM tenancy.agents') AS agent_deleted;
SELECT voice.value_as('clinic', 'SELECT count(*) || '' calls, agent ids: '' || count(agent_id) FROM tenancy.conversations') AS history;
\c - postgres
\set VERBOSITY terse
-- Promoting the clinic to a main account carries its rows (main_id follows).
SELECT tenancy.promote_account(:'c');
SELECT count(*) AS rows_with_stale_main_id FROM (
    SELECT main_id, account_path FROM tenancy.conversations UNION ALL SELECT main_id, account_path FROM tenancy.contacts
    UNION ALL SELECT main_id, account_path FROM tenancy.integrations UNION ALL SELECT main_id, account_path FROM tenancy.channels) x
WHERE x.main_id <> tenancy.root_id(x.account_path);
SELECT tenancy._integration_secret(public_id) AS opens_after_promotion FROM tenancy.integrations WHERE provider = 'twilio';
