# PHI at rest, as the DBA sees it: a clinic with PHI protection on (and a
# practice with transcript encryption too) writes calls full of identifiers
# through its credential; neither the table read by the superuser nor a
# pg_dump of the database holds the raw text, the sealed transcript is
# ciphertext, and after a restore the clinic still reads it in clear.
PHI_WORK=$TENANCY_TEST_WORK/phi
mkdir -p "$PHI_WORK" && chmod 0777 "$PHI_WORK"
Q="psql -qAtX -v ON_ERROR_STOP=1"
for db in phi_src phi_restored; do
    $Q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
done
phi_ok=1
$Q -d postgres -c "CREATE DATABASE phi_src" >/dev/null && $Q -d phi_src -c "CREATE EXTENSION tenancy" >/dev/null || phi_ok=0

# Identifiers that must never be stored, and one sentence only the sealed call has.
RAW_PHONE='415-555-0177' RAW_EMAIL='raw.patient@example.com' RAW_CARD='4111 1111 1111 1111' SECRET='Diagnosis XYZZY-41'
setup=$($Q -d phi_src 2>&1 <<SQL
-- The voice tables' conversations, or (before they exist) a stand-in with the same triggers.
SELECT to_regclass('tenancy.conversations') IS NULL AS standin \gset
\if :standin
CREATE TABLE public.conversations (id bigint GENERATED ALWAYS AS IDENTITY, direction text NOT NULL,
                                   status text NOT NULL, transcript jsonb NOT NULL DEFAULT '[]', recording_ref text);
SELECT tenancy.protect('public.conversations', 'conversations');
SELECT tenancy._secure_transcripts('public.conversations');
\set conv public.conversations
\else
\set conv tenancy.conversations
\endif
SELECT tenancy.create_main_account('Clinic Group', 'owner@clinic.test', 'clinic password 1', 'enterprise') AS grp \gset
SELECT tenancy.admin_create_api_key(:'grp', 'owner key') AS key \gset
BEGIN;
SELECT tenancy.authenticate(:'key') IS NOT NULL AS ok \gset
SELECT tenancy.create_account(:'grp', 'Sealed Practice') AS practice \gset
SELECT tenancy.set_security_setting(:'grp', 'phi_protection', true) IS NOT NULL AS ok \gset
SELECT tenancy.set_security_setting(:'practice', 'transcript_encryption', true) IS NOT NULL AS ok \gset
INSERT INTO :conv (direction, status, transcript) VALUES ('inbound', 'completed',
    jsonb_build_array(jsonb_build_object('speaker', 'caller', 'text', 'Call me on $RAW_PHONE or $RAW_EMAIL', 'at', '2026-12-07T09:00:00Z'),
                      jsonb_build_object('speaker', 'caller', 'text', 'My card is $RAW_CARD', 'at', '2026-12-07T09:00:04Z')));
SELECT tenancy.act_as(:'practice') IS NOT NULL AS ok \gset
INSERT INTO :conv (direction, status, transcript) VALUES ('inbound', 'completed',
    jsonb_build_array(jsonb_build_object('speaker', 'agent', 'text', '$SECRET, reach me at $RAW_PHONE', 'at', '2026-12-07T10:00:00Z')));
COMMIT;
\echo conv=:conv
\echo key=:key
\echo practice=:practice
SQL
) || phi_ok=0
phi_get() { sed -n "s/^$1=//p" <<<"$setup"; }
conv=$(phi_get conv) key=$(phi_get key) practice=$(phi_get practice)
if [ $phi_ok = 1 ] && [ -n "$conv" ] && [ -n "$key" ]; then
    record PASS phi clinic-calls-written
else
    echo "$setup" | head -20
    record FAIL phi clinic-calls-written
    phi_ok=0
fi

# What the clinic's practice reads in clear, through the context (as a client
# role: RLS applies).
practice_reads() {  # db
    $Q -d "$1" -c "SET ROLE tenancy_app" -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NOT NULL" -c "SELECT tenancy.act_as('$practice') IS NOT NULL" \
        -c "SELECT string_agg(t ->> 'text', ' | ') FROM $conv c,
                   jsonb_array_elements(tenancy.transcript_of(c.account_path, c.transcript, c.transcript_sealed)) t" \
        -c "COMMIT" 2>&1 | tail -1
}

no_raw() {  # text -> 0 when none of the raw values is in it
    grep -cF -e "$RAW_PHONE" -e "$RAW_EMAIL" -e "$RAW_CARD" -e "$SECRET" -e "4111111111111111" <<<"$1"
}

if [ $phi_ok = 1 ]; then
    # The DBA reads every column of the table (and the audit log of the inserts).
    table=$($Q -d phi_src -c "SELECT c::text FROM $conv c" -c "SELECT a.change::text FROM tenancy.audit_log a WHERE a.target = '$conv'")
    if [ "$(no_raw "$table")" = 0 ] && grep -qF '[PHONE]' <<<"$table" && grep -qF '[CARD]' <<<"$table" &&
        grep -qF '"sealed": true' <<<"$table"; then
        record PASS phi dba-reads-no-raw-phi
    else
        echo "$table" | head -10
        record FAIL phi dba-reads-no-raw-phi
    fi
    # The sealed call is ciphertext (bytea), no [PHONE]-redacted clear copy of it either.
    sealed=$($Q -d phi_src -c "SELECT count(*) FROM $conv WHERE transcript_sealed IS NOT NULL
                                 AND position(convert_to('XYZZY', 'UTF8') IN transcript_sealed) = 0
                                 AND transcript -> 0 -> 'sealed' = 'true'")
    [ "$sealed" = 1 ] && ! grep -qF 'XYZZY' <<<"$table" && record PASS phi dba-sees-ciphertext ||
        { echo "  sealed rows: $sealed"; record FAIL phi dba-sees-ciphertext; }

    "$PG_BINDIR/pg_dump" -f "$PHI_WORK/src.sql" phi_src && "$PG_BINDIR/pg_dump" -Fc -f "$PHI_WORK/src.dump" phi_src || phi_ok=0
    hits=$(grep -cF -e "$RAW_PHONE" -e "$RAW_EMAIL" -e "$RAW_CARD" -e "XYZZY" -e "4111111111111111" "$PHI_WORK/src.sql")
    if [ $phi_ok = 1 ] && [ "$hits" = 0 ] && grep -qF '[EMAIL]' "$PHI_WORK/src.sql"; then
        record PASS phi dump-holds-no-raw-phi
    else
        grep -nF -e "$RAW_PHONE" -e "XYZZY" "$PHI_WORK/src.sql" | head -5
        record FAIL phi dump-holds-no-raw-phi
    fi
    clear=$(practice_reads phi_src)
    [ "$clear" = "Diagnosis XYZZY-41, reach me at [PHONE]" ] && record PASS phi practice-reads-clear ||
        { echo "  practice reads: $clear"; record FAIL phi practice-reads-clear; }

    # Restored (README's way): the data keys come back wrapped, the server key with them.
    $Q -d postgres -c "CREATE DATABASE phi_restored" >/dev/null
    out=$(PGOPTIONS="-c session_replication_role=replica" "$PG_BINDIR/pg_restore" --exit-on-error -d phi_restored \
        "$PHI_WORK/src.dump" 2>&1)
    clear=$(practice_reads phi_restored)
    [ -z "$out" ] && [ "$clear" = "Diagnosis XYZZY-41, reach me at [PHONE]" ] && record PASS phi restored-still-opens ||
        { echo "$out" | head -5; echo "  practice reads after restore: $clear"; record FAIL phi restored-still-opens; }
fi
for db in phi_src phi_restored; do
    $Q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
done
