-- PHI bench: three enterprise main accounts whose transcripts get
--   plain     audit_log off, PHI protection off (unaudited, unredacted)
--   redacted  audit_log on, PHI protection on (audited, redacted)
--   sealed    the same and transcript encryption on
-- and a bare copy of the table without any trigger, as the floor.
CREATE EXTENSION tenancy;
CREATE SCHEMA bench;
SELECT tenancy.create_main_account('plain', 'plain@bench.test', 'bench-password', 'enterprise');
SELECT tenancy.create_main_account('redacted', 'redacted@bench.test', 'bench-password', 'enterprise');
SELECT tenancy.create_main_account('sealed', 'sealed@bench.test', 'bench-password', 'enterprise');
UPDATE tenancy.accounts SET settings = '{"security": {"audit_log": false}}' WHERE name = 'plain';
UPDATE tenancy.accounts SET settings = '{"security": {"phi_protection": true}}' WHERE name = 'redacted';
UPDATE tenancy.accounts SET settings = '{"security": {"phi_protection": true, "transcript_encryption": true}}'
WHERE name = 'sealed';
-- The conversations table when installed (voice tables), else a stand-in with the same trigger set.
DO $$
BEGIN
    IF to_regclass('tenancy.conversations') IS NULL THEN
        CREATE TABLE bench.conv (id bigint GENERATED ALWAYS AS IDENTITY, transcript jsonb NOT NULL DEFAULT '[]',
                                 recording_ref text);
        PERFORM tenancy.protect('bench.conv', 'conversations');
        PERFORM tenancy._secure_transcripts('bench.conv');
    ELSE
        CREATE VIEW bench.conv AS SELECT * FROM tenancy.conversations;
    END IF;
END $$;
CREATE TABLE bench.bare (id bigint GENERATED ALWAYS AS IDENTITY, account_path tenancy.account_path,
                         transcript jsonb NOT NULL DEFAULT '[]', recording_ref text);
-- A six-turn call (about 640 bytes of text), two turns with identifiers.
CREATE TABLE bench.sample AS SELECT '[
 {"speaker": "agent", "text": "Thank you for calling the clinic, how can I help you today?", "at": "2026-12-07T09:00:01Z"},
 {"speaker": "caller", "text": "I need to move my appointment, you can call me back on +1 (415) 555-0132.", "at": "2026-12-07T09:00:05Z"},
 {"speaker": "agent", "text": "Of course. Which day would suit you better this week?", "at": "2026-12-07T09:00:09Z"},
 {"speaker": "caller", "text": "Thursday afternoon; send the confirmation to jane.doe@example.com please.", "at": "2026-12-07T09:00:14Z"},
 {"speaker": "agent", "text": "Done: Thursday at three thirty. Is there anything else I can help with?", "at": "2026-12-07T09:00:20Z"},
 {"speaker": "caller", "text": "No, that is all, thank you very much for your help today.", "at": "2026-12-07T09:00:24Z"}
]'::jsonb AS t;
SELECT path AS p FROM tenancy.accounts WHERE name = 'plain' \gset plain_
SELECT path AS p FROM tenancy.accounts WHERE name = 'redacted' \gset redacted_
SELECT path AS p FROM tenancy.accounts WHERE name = 'sealed' \gset sealed_
\o paths.env
\qecho plain=:plain_p redacted=:redacted_p sealed=:sealed_p
\o
-- Lines for the SQL throughput of redact_phi: a quarter with identifiers.
CREATE TABLE bench.lines AS
SELECT CASE WHEN i % 4 = 0 THEN 'Sure, you can reach me at +1 (415) 555-0132 after five, or email jane.doe@example.com.'
            ELSE 'I would like to move my appointment from Tuesday morning to Thursday afternoon please.' END AS t
FROM generate_series(1, 200000) i;
VACUUM ANALYZE bench.lines;
