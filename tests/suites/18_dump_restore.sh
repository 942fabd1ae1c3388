# pg_dump + pg_restore (custom format) and plain pg_dump | psql of a database
# with a demo tree: every tenant's rows, credentials, sequences, foreign keys
# and audit chains come back in a fresh database (README, "Backup and restore").
DUMP_WORK=$TENANCY_TEST_WORK/dump
mkdir -p "$DUMP_WORK" && chmod 0777 "$DUMP_WORK"
Q="psql -qAtX -v ON_ERROR_STOP=1"
RESTORE_OPTS="-c session_replication_role=replica"
for db in dump_src dump_fc dump_plain dump_origin dump_mid; do
    $Q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
done
dump_ok=1
$Q -d postgres -c "CREATE DATABASE dump_src" >/dev/null && $Q -d dump_src -c "CREATE EXTENSION tenancy" >/dev/null ||
    dump_ok=0
$Q -d dump_src -c "SELECT tenancy.create_client('dump_client')
                   WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dump_client')" >/dev/null || dump_ok=0
S="$Q -d dump_src"

# Every table and sequence of the extension is registered for pg_dump, so a
# table added later without registration fails here.
out=$($S -c "SELECT coalesce(string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid::regclass::text), 'none missing')
             FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'tenancy'
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
               AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'S')
               AND NOT c.oid = ANY (coalesce(e.extconfig, '{}'))" 2>&1)
[ "$out" = "none missing" ] && record PASS dump every-table-and-sequence-registered ||
    { echo "  not registered with pg_extension_config_dump: $out"; record FAIL dump every-table-and-sequence-registered; }

# ---- the demo tree in dump_src -------------------------------------------------
demo=$($S 2>&1 <<'SQL'
CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL);
CREATE TABLE public.note_tags (note_id bigint NOT NULL REFERENCES public.notes (id), tag text NOT NULL);
SELECT tenancy.protect('public.notes', 'agents');
SELECT tenancy.protect('public.note_tags', 'agents');
SELECT tenancy.create_main_account('Alpha', 'alpha@example.test', 'alpha password 1') AS alpha \gset
SELECT tenancy.create_main_account('Bravo', 'bravo@example.test', 'bravo password 1') AS bravo \gset
SELECT tenancy.admin_create_api_key(:'alpha', 'alpha boot') AS alpha_key \gset
SELECT tenancy.admin_create_api_key(:'bravo', 'bravo boot') AS bravo_key \gset
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS ok \gset
SELECT tenancy.create_account(:'alpha', 'Alpha North') AS north \gset
SELECT tenancy.create_api_key(:'north', 'north reader', 'viewer') AS north_key \gset
INSERT INTO public.notes (body) VALUES ('alpha 1'), ('alpha 2');
INSERT INTO public.note_tags (note_id, tag) SELECT id, 'a' FROM public.notes;
SELECT tenancy.invite(:'alpha', 'invitee@example.test', 'viewer') IS NOT NULL AS ok \gset
SELECT tenancy.create_sub_user('helper@example.test', 'Hel', 'Per', 'temporary password 1') AS sub \gset
SELECT tenancy.activate_sub_user(:'sub');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'north_key') IS NOT NULL AS ok \gset
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS ok \gset
SELECT tenancy.act_as(:'north') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('north 1');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'bravo_key') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('bravo 1'), ('bravo 2'), ('bravo 3');
COMMIT;
SELECT substring(body FROM 'tni_[0-9]+_[0-9]+_[A-Za-z0-9_-]+') AS invite_token FROM tenancy.outbox
WHERE recipient = 'invitee@example.test' \gset
SELECT tenancy.accept_invitation(:'invite_token', 'Invitee', 'invitee password 1') AS invitee_session \gset
SELECT tenancy.reset();
SELECT tenancy.login('alpha@example.test', 'alpha password 1') AS alpha_session \gset
SELECT tenancy.reset();
SELECT tenancy.audit_seal() > 0 AS sealed \gset
-- One more change after the last seal: the dump holds an unsealed entry too.
BEGIN;
SELECT tenancy.authenticate(:'bravo_key') IS NOT NULL AS ok \gset
UPDATE public.notes SET body = 'bravo 1 edited' WHERE body = 'bravo 1';
COMMIT;
\echo alpha=:alpha
\echo bravo=:bravo
\echo alpha_key=:alpha_key
\echo north_key=:north_key
\echo bravo_key=:bravo_key
\echo alpha_session=:alpha_session
\echo invitee_session=:invitee_session
\echo sealed=:sealed
SQL
) || dump_ok=0
demo_get() { sed -n "s/^$1=//p" <<<"$demo"; }
alpha=$(demo_get alpha) alpha_key=$(demo_get alpha_key) north_key=$(demo_get north_key)
bravo_key=$(demo_get bravo_key) alpha_session=$(demo_get alpha_session) invitee_session=$(demo_get invitee_session)
if [ $dump_ok = 1 ] && [ "$(demo_get sealed)" = t ] && [ -n "$alpha_session" ] && [ -n "$invitee_session" ]; then
    record PASS dump demo-tree-built
else
    echo "$demo"
    record FAIL dump demo-tree-built
    dump_ok=0
fi

# What a database holds, table by table (as the superuser: RLS does not apply),
# and its sequences' positions, foreign keys and audit entry count.
fingerprint() {
    $Q -d "$1" <<'SQL'
SELECT format('%s %s %s', c.oid::regclass,
              (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %s', c.oid::regclass), false, true, '')))[1],
              (xpath('/row/h/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, ''|'' ORDER BY t::text), '''')) AS h FROM %s t',
                                                          c.oid::regclass), false, true, '')))[1])
FROM pg_class c
WHERE c.relnamespace IN ('tenancy'::regnamespace, 'public'::regnamespace) AND c.relkind = 'r'
ORDER BY 1;
SELECT format('%s last_value=%s', c.oid::regclass, s.last_value)
FROM pg_class c JOIN pg_sequences s ON s.schemaname = c.relnamespace::regnamespace::text AND s.sequencename = c.relname
WHERE c.relnamespace IN ('tenancy'::regnamespace, 'public'::regnamespace) AND c.relkind = 'S'
ORDER BY 1;
SQL
}
foreign_keys() {
    $Q -d "$1" -c "SELECT format('%s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) FROM pg_constraint
                   WHERE contype = 'f' AND connamespace IN ('tenancy'::regnamespace, 'public'::regnamespace) ORDER BY 1"
}

# As a client role: authenticate, then count what the credential sees.
client_sees() {  # db credential -> "<account> <accounts> <notes>"
    psql -qAtX -d "$1" -U dump_client -v ON_ERROR_STOP=1 -c "BEGIN" \
        -c "SELECT tenancy.authenticate('$2')" \
        -c "SELECT count(*) FROM tenancy.accounts" -c "SELECT count(*) FROM public.notes" -c "COMMIT" 2>&1 | tr '\n' ' '
}

if [ $dump_ok = 1 ]; then
    src_print=$(fingerprint dump_src)
    src_fks=$(foreign_keys dump_src)
    "$PG_BINDIR/pg_dump" -Fc -f "$DUMP_WORK/src.dump" dump_src && "$PG_BINDIR/pg_dump" -f "$DUMP_WORK/src.sql" dump_src ||
        dump_ok=0
    # (after the dump: authenticating records a key's last use)
    declare -A src_sees
    for cred in "$alpha_key" "$north_key" "$bravo_key" "$alpha_session" "$invitee_session"; do
        src_sees[$cred]=$(client_sees dump_src "$cred")
    done
    [ $dump_ok = 1 ] && record PASS dump pg_dump-both-formats || record FAIL dump pg_dump-both-formats
fi

# The documented restores (README): into a new database, replica mode.
if [ $dump_ok = 1 ]; then
    $Q -d postgres -c "CREATE DATABASE dump_fc" -c "CREATE DATABASE dump_plain" -c "CREATE DATABASE dump_origin" >/dev/null
    out=$(PGOPTIONS="$RESTORE_OPTS" "$PG_BINDIR/pg_restore" --exit-on-error -d dump_fc "$DUMP_WORK/src.dump" 2>&1) &&
        record PASS dump pg_restore-custom-format || { echo "$out" | head -20; record FAIL dump pg_restore-custom-format; }
    out=$(PGOPTIONS="$RESTORE_OPTS" psql -qX -v ON_ERROR_STOP=1 -d dump_plain -f "$DUMP_WORK/src.sql" 2>&1 >/dev/null) &&
        record PASS dump psql-plain-format || { echo "$out" | head -20; record FAIL dump psql-plain-format; }
    # Without replica mode the audit triggers would log every restored row:
    # the restore is refused with a hint instead of completing half right.
    out=$("$PG_BINDIR/pg_restore" -d dump_origin "$DUMP_WORK/src.dump" 2>&1)
    grep -q "session_replication_role = replica" <<<"$out" && record PASS dump restore-without-replica-mode-refused ||
        { echo "$out" | head -20; record FAIL dump restore-without-replica-mode-refused; }
fi

# A sealer round in the middle of a restore (the log and the chain heads are
# back, the sealer's snapshot not yet) would chain every restored entry a
# second time: it is refused, and the finished restore matches the source.
if [ $dump_ok = 1 ]; then
    $Q -d postgres -c "CREATE DATABASE dump_mid" >/dev/null
    out=$(PGOPTIONS="$RESTORE_OPTS" "$PG_BINDIR/pg_restore" --exit-on-error -d dump_mid -L <("$PG_BINDIR/pg_restore" -l "$DUMP_WORK/src.dump" |
        grep -v "TABLE DATA tenancy audit_sealer ") "$DUMP_WORK/src.dump" 2>&1 &&
        $Q -d dump_mid -c "SELECT tenancy.audit_seal()" 2>&1)
    grep -q "a restore of this database is under way" <<<"$out" && record PASS dump seal-refused-mid-restore ||
        { echo "  $out" | head -5; record FAIL dump seal-refused-mid-restore; }
    out=$(PGOPTIONS="$RESTORE_OPTS" "$PG_BINDIR/pg_restore" --exit-on-error -d dump_mid -a -t audit_sealer "$DUMP_WORK/src.dump" 2>&1 &&
        diff <(echo "$src_print") <(fingerprint dump_mid) 2>&1) && record PASS dump dump_mid/same-rows-after-interrupted-restore ||
        { echo "$out" | head -20; record FAIL dump dump_mid/same-rows-after-interrupted-restore; }
fi

for db in dump_fc dump_plain; do
    [ $dump_ok = 1 ] || break
    # Same rows in every table (no install row twice, no spurious audit entry),
    # same sequence positions, same foreign keys.
    out=$(diff <(echo "$src_print") <(fingerprint $db) 2>&1) && record PASS dump "$db/same-rows-and-sequences" ||
        { echo "$out" | head -20; record FAIL dump "$db/same-rows-and-sequences"; }
    out=$(diff <(echo "$src_fks") <(foreign_keys $db) 2>&1)
    [ -z "$out" ] && grep -q "^notes tenancy_account FOREIGN KEY (account_path) REFERENCES tenancy.accounts(path)" <<<"$src_fks" &&
        record PASS dump "$db/foreign-keys" || { echo "$out" | head -20; record FAIL dump "$db/foreign-keys"; }
    # The old API keys and session tokens authenticate and see the same rows.
    bad=""
    for cred in "$alpha_key" "$north_key" "$bravo_key" "$alpha_session" "$invitee_session"; do
        seen=$(client_sees $db "$cred")
        [ "$seen" = "${src_sees[$cred]}" ] && grep -q '^acc_[0-9]*_[0-9a-f]* [1-9][0-9]* [0-9]* $' <<<"$seen" ||
            bad="$bad ${cred%%_*}: '${src_sees[$cred]}' vs '$seen'"
    done
    [ -z "$bad" ] && record PASS dump "$db/old-keys-and-sessions-see-same-rows" ||
        { echo "  $bad"; record FAIL dump "$db/old-keys-and-sessions-see-same-rows"; }
    # A new main account gets an id past the old ones, and its key sees none
    # of the old rows.
    out=$($Q -d $db 2>&1 <<'SQL'
SELECT tenancy.create_main_account('Charlie', 'charlie@example.test', 'charlie password 1') AS charlie \gset
SELECT tenancy.admin_create_api_key(:'charlie', 'charlie boot') AS charlie_key \gset
SELECT split_part(:'charlie', '_', 2)::bigint > (SELECT max(id) FROM tenancy.accounts WHERE public_id <> :'charlie')
   AND split_part(:'charlie_key', '_', 3)::bigint > (SELECT max(id) FROM tenancy.api_keys WHERE main_id <> split_part(:'charlie', '_', 2)::bigint);
\echo :charlie_key
SQL
    )
    new_key=$(tail -1 <<<"$out")
    [ "$(head -1 <<<"$out")" = t ] && record PASS dump "$db/new-ids-past-old-ones" ||
        { echo "$out"; record FAIL dump "$db/new-ids-past-old-ones"; }
    seen=$(client_sees $db "$new_key")
    grep -q '^acc_[0-9]*_[0-9a-f]* 1 0 $' <<<"$seen" && record PASS dump "$db/new-key-sees-no-old-rows" ||
        { echo "  $seen"; record FAIL dump "$db/new-key-sees-no-old-rows"; }
    # Every audit chain verifies, the entry left unsealed by the dump included.
    out=$($Q -d $db -c "SELECT tenancy.audit_seal() >= 0" \
        -c "SELECT count(*) FILTER (WHERE NOT ok), count(*), string_agg(reason, '; ') FILTER (WHERE NOT ok),
                   sum(entries) FROM tenancy.audit_verify()" \
        -c "SELECT count(*) FROM tenancy.audit_log l WHERE NOT EXISTS (
                SELECT FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
                WHERE c.main_id = l.main_id AND u.xid = l.xid AND u.id = l.id)" 2>&1)
    grep -qx 't 0|[3-9]||[1-9][0-9]* 0' <<<"$(echo $out)" && record PASS dump "$db/audit-verify-ok" ||
        { echo "  $out"; record FAIL dump "$db/audit-verify-ok"; }
done

for db in dump_src dump_fc dump_plain dump_origin dump_mid; do
    $Q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
done
true
