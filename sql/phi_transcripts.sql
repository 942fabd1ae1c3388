-- Transcripts under the security settings: PHI redaction before the row is
-- written (insert, update, appended turns), re-redaction of stored rows with
-- progress, recording refusal, encryption at rest (ciphertext for the DBA,
-- clear text only for a context that may read the row), audit_log.
\set VERBOSITY terse
SET client_min_messages = warning;
SELECT coalesce(tenancy._throttle_rewind('1 day'), 0) >= 0 AS throttle_reset;
CREATE SCHEMA IF NOT EXISTS ptest;
GRANT USAGE ON SCHEMA ptest TO PUBLIC;
CREATE OR REPLACE FUNCTION ptest.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'acc_[0-9]+_[0-9a-f]+', 'acc_X', 'g');
END $$;
GRANT EXECUTE ON FUNCTION ptest.try(text) TO PUBLIC;
-- The texts of a transcript, one line.
CREATE OR REPLACE FUNCTION ptest.texts(t jsonb) RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(coalesce(e ->> 'text', e::text), ' | ' ORDER BY n) FROM jsonb_array_elements(t) WITH ORDINALITY x(e, n) $$;
GRANT EXECUTE ON FUNCTION ptest.texts(jsonb) TO PUBLIC;
-- Wait (bounded) until the background redactor has finished every job.
CREATE OR REPLACE FUNCTION ptest.wait_jobs() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        IF NOT EXISTS (SELECT FROM tenancy.phi_redaction_jobs WHERE finished_at IS NULL) THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
    RETURN false;
END $$;

-- The rules run on a table of this test's own, under the same triggers as
-- tenancy.conversations (_secure_transcripts), so that the outputs do not
-- depend on the voice tables; tests/suites/19_phi.sh and
-- tests/gateway/routes_phi.py check the real table.
CREATE TABLE ptest.conversations (
    id bigint GENERATED ALWAYS AS IDENTITY,
    transcript jsonb NOT NULL DEFAULT '[]',
    recording_ref text,
    note text
);
SELECT tenancy.protect('ptest.conversations', 'conversations');
SELECT tenancy._secure_transcripts('ptest.conversations');
\set conv ptest.conversations
-- A turn list.
CREATE OR REPLACE FUNCTION ptest.turns(VARIADIC texts text[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_agg(jsonb_build_object('speaker', CASE WHEN n % 2 = 1 THEN 'caller' ELSE 'agent' END,
                                        'text', t, 'at', '2026-12-07T09:00:0' || n || 'Z') ORDER BY n)
    FROM unnest(texts) WITH ORDINALITY x(t, n) $$;
GRANT EXECUTE ON FUNCTION ptest.turns(text[]) TO PUBLIC;

SELECT tenancy.create_main_account('Health Group', 'owner@phi.test', 'owner-password', 'enterprise') AS grp \gset
SELECT tenancy.create_main_account('Other Health', 'owner@phi2.test', 'owner-password', 'enterprise') AS other \gset
SELECT tenancy.admin_create_api_key(:'grp', 'owner key') AS grp_owner \gset
SELECT tenancy.admin_create_api_key(:'other', 'owner key') AS other_owner \gset
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.create_account(:'grp', 'Clinic') AS clinic \gset
SELECT tenancy.create_account(:'clinic', 'Clinic Annex') AS annex \gset
SELECT tenancy.create_account(:'grp', 'Dental') AS dental \gset
COMMIT;
SELECT tenancy.admin_create_api_key(:'clinic', 'clinic member', 'member') AS clinic_member \gset
SELECT tenancy.admin_create_api_key(:'dental', 'dental owner') AS dental_owner \gset

CREATE OR REPLACE FUNCTION ptest.add(note text, t jsonb, rec text DEFAULT NULL) RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO ptest.conversations (transcript, recording_ref, note) VALUES (t, rec, note) RETURNING id $$;
GRANT EXECUTE ON FUNCTION ptest.add(text, jsonb, text) TO PUBLIC;

SET ROLE tenancy_app;
-- ---- PHI protection off: stored as written ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
SELECT ptest.add('c1', ptest.turns('Hello, this is the clinic.', 'Call me on 415-555-0132 or jane@example.com')) > 0 AS c1;
SELECT ptest.add('c2', ptest.turns('My card is 4111 1111 1111 1111.')) > 0 AS c2;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.act_as(:'annex') IS NOT NULL AS in_annex;
SELECT ptest.add('a1', ptest.turns('Annex: reach me at +44 20 7946 0958')) > 0 AS a1;
SELECT ptest.add('a2', ptest.turns('No identifiers here.')) > 0 AS a2;
SELECT ptest.add('a3', ptest.turns('mail bob@clinic.example')) > 0 AS a3;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'dental_owner') IS NOT NULL AS in_dental;
SELECT ptest.add('d1', ptest.turns('Dental: 415-555-0199')) > 0 AS d1;
COMMIT;
RESET ROLE;
SELECT c.note, ptest.texts(c.transcript) FROM :conv c ORDER BY c.id;

-- ---- turning it on for the clinic queues the re-redaction of its subtree ----
-- Hold the redactor's lock so that the steps below are this session's own.
SELECT pg_advisory_lock(1952804449, 19);
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'clinic', 'phi_protection', true) ->> 'phi_protection' AS clinic_phi;
-- the clinic's readers see the job and its progress
SELECT "table", done, total, redacted, percent, finished_at IS NULL AS pending FROM tenancy.phi_redaction_progress WHERE "table" = 'ptest.conversations';
COMMIT;
-- the other tenant sees no job
BEGIN;
SELECT tenancy.authenticate(:'other_owner') IS NOT NULL AS in_other;
SELECT count(*) AS other_sees_jobs FROM tenancy.phi_redaction_progress WHERE "table" = 'ptest.conversations';
COMMIT;
-- the annex, already protected through the clinic, queues nothing more
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'annex', 'phi_protection', true) ->> 'phi_protection' AS annex_phi;
SELECT count(*) AS jobs FROM tenancy.phi_redaction_jobs WHERE tbl = 'ptest.conversations'::regclass;
COMMIT;
RESET ROLE;
-- bounded batches: two rows a step
SELECT tenancy.redact_pending(2) AS examined;
SELECT done, total, redacted, percent, finished_at IS NULL AS pending FROM tenancy.phi_redaction_progress WHERE "table" = 'ptest.conversations';
SELECT tenancy.redact_pending(2) AS examined;
SELECT tenancy.redact_pending(2) AS examined;
SELECT done, total, redacted, percent, finished_at IS NULL AS pending FROM tenancy.phi_redaction_progress WHERE "table" = 'ptest.conversations';
SELECT tenancy.redact_pending(2) AS examined;
SELECT ptest.try('SELECT tenancy.redact_pending(0)') AS batch_zero;
SELECT pg_advisory_unlock(1952804449, 19);
-- the clinic's and annex's rows are redacted, the dental one is not
SELECT c.note, ptest.texts(c.transcript) FROM :conv c ORDER BY c.id;
-- a client may not drive the jobs
SET ROLE tenancy_app;
SELECT ptest.try('SELECT tenancy.redact_pending(10)') AS client_redact_pending;

-- ---- PHI protection on: redacted before the row is written ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.act_as(:'annex') IS NOT NULL AS in_annex;
SELECT ptest.add('a4', ptest.turns('Text me at (415) 555-0132, card 5500-0000-0000-0004', 'ok')) > 0 AS a4;
-- update: a replaced transcript and an appended turn are redacted too
UPDATE :conv SET transcript = ptest.turns('new: ann@example.org') WHERE transcript @> '[{"text": "No identifiers here."}]';
UPDATE :conv SET transcript = transcript || ptest.turns('appended 020 7946 0958') WHERE transcript @> '[{"text": "ok"}]';
COMMIT;
-- the background redactor: the dental practice turns PHI protection on
BEGIN;
SELECT tenancy.authenticate(:'dental_owner') IS NOT NULL AS in_dental;
SELECT tenancy.set_security_setting(:'dental', 'phi_protection', true) ->> 'phi_protection' AS dental_phi;
COMMIT;
RESET ROLE;
SELECT ptest.wait_jobs() AS redactor_done;
SELECT done, total, redacted, percent FROM tenancy.phi_redaction_progress WHERE "table" = 'ptest.conversations' ORDER BY job;
SELECT c.note, ptest.texts(c.transcript) FROM :conv c ORDER BY c.id;
-- the row audit recorded only redacted text for the rows written with protection on
SELECT count(*) AS audit_entries_with_raw_phone FROM tenancy.audit_log a
WHERE a.target = :'conv' AND a.change::text LIKE '%(415) 555-0132%';

-- ---- call recording: refused while off, not dropped ----
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
SELECT ptest.try($$SELECT ptest.add('r1', '[]', 'rec://1')$$) AS recording_off;
SELECT count(*) AS r1_rows FROM :conv WHERE recording_ref IS NOT NULL;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'call_recording', true) ->> 'call_recording' AS recording;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
SELECT ptest.try($$SELECT ptest.add('r1', '[]', 'rec://1')$$) AS recording_on;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'clinic', 'call_recording', false) ->> 'call_recording' AS clinic_recording;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
-- a stored reference survives an update of the transcript; a new one is refused
SELECT ptest.try(format('UPDATE %s SET transcript = ''[]'' WHERE recording_ref = ''rec://1''', :'conv')) AS keep_ref;
SELECT ptest.try(format('UPDATE %s SET recording_ref = ''rec://2'' WHERE recording_ref = ''rec://1''', :'conv')) AS new_ref;
SELECT recording_ref FROM :conv WHERE recording_ref IS NOT NULL;
COMMIT;

-- ---- encryption at rest ----
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'clinic', 'transcript_encryption', true) ->> 'transcript_encryption' AS clinic_enc;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
SELECT ptest.add('e1', ptest.turns('Sealed: my email is sealed@example.com', 'Diagnosis: flu')) > 0 AS e1;
-- the clinic reads it in clear (redacted), through transcript_of
SELECT c.note, ptest.texts(tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed)) AS clear
FROM :conv c WHERE c.transcript_sealed IS NOT NULL ORDER BY c.id;
-- an appended turn joins the sealed ones; an update of recording_ref leaves them alone
UPDATE :conv SET transcript = transcript || ptest.turns('Follow-up at 415-555-0100') WHERE transcript_sealed IS NOT NULL;
SELECT ptest.try(format('UPDATE %s SET recording_ref = NULL WHERE transcript_sealed IS NOT NULL', :'conv')) AS clear_ref;
SELECT ptest.texts(tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed)) AS clear
FROM :conv c WHERE c.transcript_sealed IS NOT NULL;
-- transcript_sealed is tenancy's own
SELECT ptest.try(format('UPDATE %s SET transcript_sealed = ''\x00'' WHERE transcript_sealed IS NOT NULL', :'conv')) AS write_sealed;
COMMIT;
-- a member of the clinic reads it too
BEGIN;
SELECT tenancy.authenticate(:'clinic_member') IS NOT NULL AS as_member;
SELECT ptest.texts(tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed)) AS member_reads
FROM :conv c WHERE c.transcript_sealed IS NOT NULL;
COMMIT;
-- the dental practice (a sibling) sees no row, and the sealed value copied out by the DBA opens for nobody else
RESET ROLE;
SELECT account_path AS sealed_path, transcript AS sealed_marker, transcript_sealed AS sealed_value
FROM :conv WHERE transcript_sealed IS NOT NULL \gset
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'dental_owner') IS NOT NULL AS in_dental;
SELECT count(*) AS dental_sees FROM :conv WHERE transcript_sealed IS NOT NULL;
SELECT tenancy.transcript_of(:'sealed_path', :'sealed_marker', :'sealed_value') IS NULL AS dental_cannot_open;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'other_owner') IS NOT NULL AS in_other;
SELECT tenancy.transcript_of(:'sealed_path', :'sealed_marker', :'sealed_value') IS NULL AS other_cannot_open;
COMMIT;
RESET ROLE;
-- the DBA reading the table sees the marker and ciphertext, not the text
SELECT c.note, c.transcript, length(c.transcript_sealed) > 40 AS sealed,
       position(convert_to('Diagnosis', 'UTF8') IN c.transcript_sealed) = 0 AS not_in_clear,
       tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed) IS NULL AS dba_gets_null
FROM :conv c WHERE c.transcript_sealed IS NOT NULL;
SELECT count(*) AS wrapped_keys, bool_and(length(k.wrapped) = 24 + 16 + 64) AS wrapped
FROM tenancy.transcript_keys k JOIN tenancy.accounts a ON a.main_id = k.main_id AND a.id = k.main_id
WHERE a.public_id IN (:'grp', :'other');
-- clients read no key
SET ROLE tenancy_app;
SELECT ptest.try('SELECT * FROM tenancy.transcript_keys') AS client_reads_keys;
SELECT ptest.try('SELECT tenancy._transcript_open(''\x00'')') AS client_opens;
-- encryption off again: the row is stored in clear when next rewritten
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'clinic', 'transcript_encryption', false) ->> 'transcript_encryption' AS clinic_enc;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
UPDATE :conv SET transcript = transcript || ptest.turns('bye') WHERE transcript_sealed IS NOT NULL;
SELECT count(*) AS still_sealed FROM :conv WHERE transcript_sealed IS NOT NULL;
COMMIT;
RESET ROLE;
SELECT c.note, ptest.texts(c.transcript) FROM :conv c WHERE c.note = 'e1';

-- ---- audit_log off: the transcripts' row changes are not recorded ----
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.set_security_setting(:'grp', 'audit_log', false) ->> 'audit_log' AS grp_audit;
SELECT tenancy.set_security_setting(:'clinic', 'audit_log', true) ->> 'audit_log' AS clinic_audit;
SELECT tenancy.act_as(:'dental') IS NOT NULL AS in_dental;
SELECT ptest.add('u1', ptest.turns('unaudited')) > 0 AS u1;
SELECT tenancy.act_as(:'clinic') IS NOT NULL AS in_clinic;
SELECT ptest.add('u2', ptest.turns('audited')) > 0 AS u2;
COMMIT;
RESET ROLE;
SELECT a.change #>> '{new,transcript,0,text}' AS audited_text FROM tenancy.audit_log a
WHERE a.target = :'conv' AND a.action = 'insert' AND a.change #>> '{new,transcript,0,text}' IN ('unaudited', 'audited');

-- ---- a subtree moved under PHI protection is re-redacted too ----
SET ROLE tenancy_app;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.create_account(:'grp', 'Intake') AS intake \gset
SELECT tenancy.act_as(:'intake') IS NOT NULL AS in_intake;
SELECT ptest.add('m1', ptest.turns('Intake call from 415-555-0144')) > 0 AS m1;
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'grp_owner') IS NOT NULL AS in_group;
SELECT tenancy.move_account(:'intake', :'clinic');
COMMIT;
RESET ROLE;
SELECT ptest.wait_jobs() AS redactor_done;
SELECT c.note, ptest.texts(c.transcript) FROM :conv c WHERE c.note = 'm1';

-- ---- redact_transcript(): the trigger's function ----
SELECT tenancy.redact_transcript('[{"speaker": "caller", "text": "415-555-0132", "at": "415-555-0132"}, "bob@x.org", {"meta": {"text": "4111111111111111"}}, 42]');
SELECT tenancy.redact_transcript('"a@b.co"'), tenancy.redact_transcript('{}'), tenancy.redact_transcript('[]');

DROP TABLE ptest.conversations;
DELETE FROM tenancy.transcript_tables WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = tbl);
DROP SCHEMA ptest CASCADE;
