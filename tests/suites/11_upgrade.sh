# Versioned upgrades (docs/operations/upgrades.md), in a cluster of its own
# (tests/postgresql.conf, with this suite's databases sealed): every older
# release installed and updated ends in the same objects as a fresh install
# (tests/upgrade/fingerprint.sql); a filled database keeps its keys, sessions,
# rows and audit chains across ALTER EXTENSION UPDATE; the regression suite
# passes on an updated database; and the release rules hold
# (tests/upgrade/check-versions), which a changed install script breaks.
UP_WORK=$TENANCY_TEST_WORK/upgrade
mkdir -p "$UP_WORK" && chmod 0777 "$UP_WORK"
up_port=$(free_port $((29000 + RANDOM % 1000)))
mapfile -t up_conf < <(grep -v '^\s*#' tests/postgresql.conf | grep -v '^\s*$')
FINGERPRINT=$PWD/tests/upgrade/fingerprint.sql
up_version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" extension/tenancy.control)
# The releases older than default_version, oldest first; the newest of them
# is the one a DBA updates from (filled database, regression suite).
mapfile -t up_olds < <(ls extension/releases | sed -n 's/^tenancy--\([^-]*\)\.sql$/\1/p' | sort -V |
    grep -vxF "$up_version")
up_from=${up_olds[${#up_olds[@]}-1]:-}
up_cluster=0
up_regress_pid=""

# The later line wins in postgresql.conf: the sealer serves these databases.
if [ -n "$up_from" ] && cluster_init "$UP_WORK/pg" "$up_port" "${up_conf[@]}" \
        "tenancy.audit_databases = 'up_filled,contrib_regression'" && cluster_start "$UP_WORK/pg"; then
    U="psql -qAtX -v ON_ERROR_STOP=1 -h $UP_WORK/pg -p $up_port -U postgres"
    # Roles are cluster-wide: each install below starts without them, so the
    # fingerprints compare the roles each path made too.
    drop_tenancy_roles() {
        $U -d postgres -c "DO \$\$ DECLARE r text; BEGIN
            FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'tenancy\_%' ORDER BY rolname DESC LOOP
                EXECUTE format('DROP ROLE %I', r); END LOOP; END \$\$"
    }

    # ---- a. fresh install == every older release + ALTER EXTENSION UPDATE -------
    if $U -d postgres -c "CREATE DATABASE up_fresh" && $U -d up_fresh -c "CREATE EXTENSION tenancy" &&
        $U -d up_fresh -f "$FINGERPRINT" >"$UP_WORK/fresh.fp"; then
        record PASS upgrade "fresh-$up_version-fingerprint"
    else
        record FAIL upgrade "fresh-$up_version-fingerprint"
    fi
    # The fingerprint sees a drift of each kind (else an identical pair proves nothing).
    $U -d up_fresh >/dev/null 2>&1 <<'SQL'
ALTER TABLE tenancy.plans ALTER COLUMN max_sub_users SET DEFAULT 11;
REVOKE SELECT ON tenancy.accounts FROM tenancy_app;
ALTER POLICY subtree_read ON tenancy.accounts USING (false);
ALTER FUNCTION tenancy.current_path() VOLATILE;
ALTER OPERATOR tenancy.<@ (tenancy.account_path, tenancy.account_path) SET (RESTRICT = contsel);
DELETE FROM tenancy.usage_kinds WHERE kind = (SELECT min(kind) FROM tenancy.usage_kinds);
CREATE INDEX drift_idx ON tenancy.sessions (created_at);
ALTER TABLE tenancy.context_keys ADD COLUMN drift int;
SQL
    drift=$(diff "$UP_WORK/fresh.fp" <($U -d up_fresh -f "$FINGERPRINT" 2>&1) | grep '^[<>]')
    missed=""
    for seen in 'table tenancy.plans | column max_sub_users' 'table tenancy.accounts | acl' \
        'table tenancy.accounts | policy subtree_read' 'function tenancy.current_path() | attributes' \
        'operator tenancy.<@(tenancy.account_path,tenancy.account_path) | operator' 'table tenancy.usage_kinds | row' \
        'table tenancy.sessions | index tenancy.drift_idx' 'table tenancy.context_keys | column drift'; do
        grep -qF "$seen" <<<"$drift" || missed="$missed [$seen]"
    done
    [ -z "$missed" ] && record PASS upgrade fingerprint-sees-each-kind-of-drift ||
        { echo "  not in the diff:$missed"; echo "$drift" | head -20; record FAIL upgrade fingerprint-sees-each-kind-of-drift; }
    $U -d postgres -c "DROP DATABASE up_fresh" && drop_tenancy_roles

    for old in "${up_olds[@]}"; do
        db=up_from_${old//./_}
        out=$($U -d postgres -c "CREATE DATABASE $db" 2>&1 &&
            $U -d $db -c "CREATE EXTENSION tenancy VERSION '$old'" -c "ALTER EXTENSION tenancy UPDATE" \
                -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'" 2>&1)
        if [ "$out" = "$up_version" ] && $U -d $db -f "$FINGERPRINT" >"$UP_WORK/from-$old.fp" 2>&1 &&
            diff "$UP_WORK/fresh.fp" "$UP_WORK/from-$old.fp" >"$UP_WORK/from-$old.diff"; then
            record PASS upgrade "$old-updated-equals-fresh-$up_version"
        else
            echo "  $out"
            echo "  fresh $up_version (<) vs $old updated (>), first differences:"
            head -60 "$UP_WORK/from-$old.diff" 2>/dev/null | sed 's/^/  /'
            record FAIL upgrade "$old-updated-equals-fresh-$up_version"
        fi
        $U -d postgres -c "DROP DATABASE $db" && drop_tenancy_roles
    done

    # ---- c. the regression suite on a database installed as $up_from, updated -----
    # (started here, in the background, while b runs in its own database;
    # reported after b)
    # pg_regress --use-existing neither creates the database nor its role: made
    # here as pg_regress would (its database settings, --create-role), but with
    # the old release installed and updated instead of CREATE EXTENSION.
    out=$($U -d postgres -c "CREATE DATABASE contrib_regression TEMPLATE template0" \
        -c "ALTER DATABASE contrib_regression SET lc_messages TO 'C'" \
        -c "ALTER DATABASE contrib_regression SET lc_monetary TO 'C'" \
        -c "ALTER DATABASE contrib_regression SET lc_numeric TO 'C'" \
        -c "ALTER DATABASE contrib_regression SET lc_time TO 'C'" \
        -c "ALTER DATABASE contrib_regression SET bytea_output TO 'hex'" \
        -c "ALTER DATABASE contrib_regression SET timezone_abbreviations TO 'Default'" \
        -c "CREATE ROLE regress_client WITH LOGIN" \
        -c "GRANT ALL ON DATABASE contrib_regression TO regress_client" 2>&1 &&
        $U -d contrib_regression -c "CREATE EXTENSION tenancy VERSION '$up_from'" -c "ALTER EXTENSION tenancy UPDATE" \
            -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'" 2>&1)
    if [ "$out" = "$up_version" ]; then
        mapfile -t up_tests < <(ls sql | sed -n 's/\.sql$//p' | sort)
        mkdir -p "$UP_WORK/regress" && chmod 0777 "$UP_WORK/regress"
        timeout 900 "$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress" --use-existing \
            --dbname=contrib_regression --host="$UP_WORK/pg" --port="$up_port" --user=postgres \
            --bindir="$PG_BINDIR" --inputdir=. --outputdir="$UP_WORK/regress" "${up_tests[@]}" \
            >"$UP_WORK/regress.log" 2>&1 &
        up_regress_pid=$!
    else
        echo "  $out"
        record FAIL upgrade-regress "database-installed-as-$up_from-and-updated"
    fi

    # ---- b. a filled database across the update --------------------------------
    F="$U -d up_filled"
    filled_ok=1
    $U -d postgres -c "CREATE DATABASE up_filled" && $F -c "CREATE EXTENSION tenancy VERSION '$up_from'" \
        -c "SELECT tenancy.create_client('up_client')" >/dev/null || filled_ok=0
    demo=$($F 2>&1 <<'SQL'
CREATE TABLE public.notes (id bigserial PRIMARY KEY, body text NOT NULL);
SELECT tenancy.protect('public.notes', 'agents');
GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO tenancy_app;
GRANT USAGE ON SEQUENCE public.notes_id_seq TO tenancy_app;
SELECT tenancy.create_main_account('Alpha', 'alpha@example.test', 'alpha password 1') AS alpha \gset
SELECT tenancy.create_main_account('Bravo', 'bravo@example.test', 'bravo password 1') AS bravo \gset
SELECT tenancy.create_main_account('Charlie', 'charlie@example.test', 'charlie password 1') AS charlie \gset
SELECT tenancy.admin_create_api_key(:'alpha', 'alpha boot') AS alpha_key \gset
SELECT tenancy.admin_create_api_key(:'bravo', 'bravo boot') AS bravo_key \gset
SELECT tenancy.admin_create_api_key(:'charlie', 'charlie boot') AS charlie_key \gset
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS ok \gset
SELECT tenancy.create_account(:'alpha', 'Alpha North') AS north \gset
SELECT tenancy.create_account(:'alpha', 'Alpha South') AS south \gset
SELECT tenancy.create_account(:'north', 'North East') AS ne \gset
SELECT tenancy.create_account(:'ne', 'North East Leaf') AS leaf \gset
SELECT tenancy.create_api_key(:'north', 'north reader', 'viewer') AS north_key \gset
SELECT tenancy.create_api_key(:'leaf', 'leaf writer', 'admin') AS leaf_key \gset
INSERT INTO public.notes (body) VALUES ('alpha 1'), ('alpha 2');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'alpha_key') IS NOT NULL AS ok \gset
SELECT tenancy.act_as(:'north') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('north 1');
SELECT tenancy.act_as(:'leaf') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('leaf 1'), ('leaf 2');
SELECT tenancy.act_as(:'south') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('south 1');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'bravo_key') IS NOT NULL AS ok \gset
SELECT tenancy.create_account(:'bravo', 'Bravo One') AS b1 \gset
INSERT INTO public.notes (body) VALUES ('bravo 1'), ('bravo 2'), ('bravo 3');
COMMIT;
BEGIN;
SELECT tenancy.authenticate(:'charlie_key') IS NOT NULL AS ok \gset
INSERT INTO public.notes (body) VALUES ('charlie 1');
UPDATE public.notes SET body = 'charlie 1 edited' WHERE body = 'charlie 1';
COMMIT;
SELECT tenancy.reset();
SELECT tenancy.login('alpha@example.test', 'alpha password 1') AS alpha_session \gset
SELECT tenancy.reset();
SELECT tenancy.login('bravo@example.test', 'bravo password 1') AS bravo_session \gset
SELECT tenancy.reset();
SELECT tenancy.audit_seal() >= 0 AS sealed \gset
\echo alpha_key=:alpha_key
\echo bravo_key=:bravo_key
\echo charlie_key=:charlie_key
\echo north_key=:north_key
\echo leaf_key=:leaf_key
\echo alpha_session=:alpha_session
\echo bravo_session=:bravo_session
SQL
    ) || filled_ok=0
    demo_get() { sed -n "s/^$1=//p" <<<"$demo"; }
    creds=()
    for name in alpha_key bravo_key charlie_key north_key leaf_key alpha_session bravo_session; do
        value=$(demo_get $name)
        [ -n "$value" ] && creds+=("$value") || filled_ok=0
    done
    # Every entry so far sealed (by the call above or the sealer) and verified.
    audit_state() {
        $F -c "SELECT tenancy.audit_seal() >= 0" >/dev/null 2>&1
        $F -c "SELECT count(*) FILTER (WHERE NOT ok) || ' bad of ' || count(*) || ' chains, '
                      || (SELECT count(*) FROM tenancy.audit_log l WHERE NOT EXISTS (
                             SELECT FROM tenancy.audit_chain c
                             WHERE c.main_id = l.main_id AND l.id = ANY (c.entry_ids))) || ' unsealed'
               FROM tenancy.audit_verify()" 2>&1
    }
    # As a client role: the credential's account, every account and note it sees.
    up_sees() {
        psql -qAtX -h "$UP_WORK/pg" -p "$up_port" -U up_client -d up_filled -v ON_ERROR_STOP=1 -c "BEGIN" \
            -c "SELECT tenancy.authenticate('$1')" \
            -c "SELECT string_agg(public_id, ',' ORDER BY public_id) FROM tenancy.accounts" \
            -c "SELECT string_agg(body, ',' ORDER BY body) FROM public.notes" -c "COMMIT" 2>&1 | tr '\n' ' '
    }
    before_audit=$(audit_state)
    if [ $filled_ok = 1 ] && grep -qx '0 bad of [3-9] chains, 0 unsealed' <<<"$before_audit"; then
        record PASS upgrade "filled-$up_from-database-built-and-sealed"
    else
        echo "$demo" | head -20
        echo "  audit: $before_audit"
        record FAIL upgrade "filled-$up_from-database-built-and-sealed"
        filled_ok=0
    fi
    declare -A up_before
    for cred in "${creds[@]}"; do up_before[$cred]=$(up_sees "$cred"); done
    entries_before=$($F -c "SELECT count(*) FROM tenancy.audit_log")

    out=$($F -c "ALTER EXTENSION tenancy UPDATE" -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'" 2>&1)
    [ "$out" = "$up_version" ] && record PASS upgrade "filled-updated-to-$up_version" ||
        { echo "  $out"; record FAIL upgrade "filled-updated-to-$up_version"; filled_ok=0; }

    if [ $filled_ok = 1 ]; then
        bad=""
        for cred in "${creds[@]}"; do
            seen=$(up_sees "$cred")
            # An account, accounts and notes: authenticated, and not empty-handed.
            [ "$seen" = "${up_before[$cred]}" ] && grep -qE '^acc_[0-9]+_[0-9a-f]+ acc_[^ ]+ [a-z]' <<<"$seen" ||
                bad="$bad ${cred%%_*}: '${up_before[$cred]}' vs '$seen'"
        done
        [ -z "$bad" ] && record PASS upgrade old-keys-and-sessions-see-the-same-rows ||
            { echo "  $bad"; record FAIL upgrade old-keys-and-sessions-see-the-same-rows; }
        after_audit=$(audit_state)
        [ "$after_audit" = "$before_audit" ] && record PASS upgrade audit-chains-verify-after-update ||
            { echo "  before: $before_audit; after: $after_audit"; record FAIL upgrade audit-chains-verify-after-update; }
        # A change after the update is logged, sealed onto the same chain, verified.
        out=$(psql -qAtX -h "$UP_WORK/pg" -p "$up_port" -U up_client -d up_filled -v ON_ERROR_STOP=1 -c "BEGIN" \
            -c "SELECT tenancy.authenticate('${creds[0]}') IS NOT NULL" \
            -c "INSERT INTO public.notes (body) VALUES ('after the update')" -c "COMMIT" 2>&1)
        after_change=$(audit_state)
        chained=$($F -c "SELECT count(*) FROM tenancy.audit_log l JOIN tenancy.audit_chain c
                             ON c.main_id = l.main_id AND l.id = ANY (c.entry_ids)
                         WHERE l.target = 'public.notes' AND l.change->'new'->>'body' = 'after the update'
                           AND c.first_pos > 0" 2>&1)
        entries_after=$($F -c "SELECT count(*) FROM tenancy.audit_log")
        [ "$after_change" = "$before_audit" ] && [ "$chained" = 1 ] && [ "$entries_after" -gt "$entries_before" ] &&
            record PASS upgrade new-changes-chain-on-after-update ||
            { echo "  $out; audit: $after_change; chained: $chained; entries: $entries_before -> $entries_after"
              record FAIL upgrade new-changes-chain-on-after-update; }
    fi


    up_cluster=1
else
    [ -n "$up_from" ] && { tail -20 "$UP_WORK/pg/server.log" 2>/dev/null; record FAIL upgrade cluster-started; }
    [ -z "$up_from" ] && record FAIL upgrade "a-release-older-than-$up_version"
fi

# ---- d. the release rules ---------------------------------------------------------
out=$(tests/upgrade/check-versions 2>&1) && record PASS upgrade version-check ||
    { echo "$out" | sed 's/^/  /'; record FAIL upgrade version-check; }
# ... and each way to break them is refused, on copies of extension/.
up_copy() {
    local dir
    dir=$(mktemp -d "$UP_WORK/copy.XXXXXX")
    mkdir -p "$dir/scripts" "$dir/tests"
    cp -a Makefile extension "$dir/" && cp -a scripts/release "$dir/scripts/" && cp -a tests/upgrade "$dir/tests/"
    echo "$dir"
}
refused() {  # refused NAME EXPECTED-TEXT COPY
    local out
    if out=$("$3/tests/upgrade/check-versions" 2>&1); then
        echo "  accepted: $out"
        record FAIL upgrade "version-check-refuses-$1"
    elif grep -qF "$2" <<<"$out"; then
        record PASS upgrade "version-check-refuses-$1"
    else
        echo "$out" | sed 's/^/  /'
        record FAIL upgrade "version-check-refuses-$1"
    fi
}
# Released (scripts/release on the copy, unless it is already), then an
# install file changed with the version kept.
copy=$(up_copy)
if [ ! -f "$copy/extension/releases/tenancy--$up_version.sql" ]; then
    out=$("$copy/scripts/release" 2>&1) && [ -f "$copy/extension/releases/tenancy--$up_version.sql" ] &&
        "$copy/tests/upgrade/check-versions" >/dev/null 2>&1 && record PASS upgrade release-freezes-and-checks ||
        { echo "$out" | sed 's/^/  /'; record FAIL upgrade release-freezes-and-checks; }
fi
first=$(ls "$copy"/extension/sql/*.sql | head -1)
echo "-- a change after the release" >>"$first"
refused install-script-changed-in-a-released-version \
    "install script changed without a new version and an upgrade script" "$copy"
rm -rf "$copy"
# A frozen script edited.
copy=$(up_copy)
echo "-- edited" >>"$copy/extension/releases/tenancy--$up_from.sql"
refused frozen-script-edited "differs from extension/releases/SHA256SUMS" "$copy"
rm -rf "$copy"
# A new version with no upgrade script leading to it.
copy=$(up_copy)
sed -i "s/^default_version = .*/default_version = '$up_version.99'/" "$copy/extension/tenancy.control"
refused new-version-without-upgrade-path "no upgrade path from the newest release" "$copy"
rm -rf "$copy"
# ---- e. scripts/run on a database that holds an older release --------------------
if [ -n "$up_from" ]; then
    RUN_DIR=$UP_WORK/run
    run_pg=$(free_port $((30500 + RANDOM % 400)))
    run_http=$(free_port $((run_pg + 1)))
    run_smtp=$(free_port $((run_pg + 2)))
    mkdir -p "$RUN_DIR" && chmod 0755 "$RUN_DIR"
    out=$(cluster_init "$RUN_DIR/pg" "$run_pg" "${up_conf[@]}" 2>&1 && cluster_start "$RUN_DIR/pg" 2>&1 &&
        psql -qAtX -v ON_ERROR_STOP=1 -h "$RUN_DIR/pg" -p "$run_pg" -U postgres -d postgres -c "CREATE DATABASE tenancy" 2>&1 &&
        psql -qAtX -v ON_ERROR_STOP=1 -h "$RUN_DIR/pg" -p "$run_pg" -U postgres -d tenancy \
            -c "CREATE EXTENSION tenancy VERSION '$up_from'" 2>&1 && cluster_stop "$RUN_DIR/pg" 2>&1 &&
        TENANCY_RUN_DIR=$RUN_DIR TENANCY_PGPORT=$run_pg TENANCY_HTTP_PORT=$run_http TENANCY_SMTP_PORT=$run_smtp \
            scripts/run 2>&1)
    now=$(psql -qAtX -h "$RUN_DIR/pg" -p "$run_pg" -U postgres -d tenancy \
        -c "SELECT extversion FROM pg_extension WHERE extname = 'tenancy'" 2>&1)
    grep -qF "updated tenancy from $up_from to $up_version" <<<"$out" && [ "$now" = "$up_version" ] &&
        record PASS upgrade "scripts-run-updates-$up_from-to-$up_version" ||
        { echo "$out" | tail -15; echo "  installed now: $now"; record FAIL upgrade "scripts-run-updates-$up_from-to-$up_version"; }
    TENANCY_RUN_DIR=$RUN_DIR scripts/run stop >/dev/null 2>&1 || record FAIL upgrade scripts-run-stop
fi

# ---- c, reported: the regression suite's results ---------------------------------
if [ "$up_cluster" = 1 ]; then
    if [ -n "$up_regress_pid" ]; then
        wait "$up_regress_pid"
        status=$?
        while read -r line; do
            name=$(sed -E 's/^(test )?[[:space:]]*([^ ]+) +\.\.\..*/\2/' <<<"$line")
            grep -qE '\.\.\. +ok' <<<"$line" && record PASS upgrade-regress "$name" || record FAIL upgrade-regress "$name"
        done < <(grep -E '\.\.\. +(ok|FAILED|failed)' "$UP_WORK/regress.log")
        reported=$(grep -cE '\.\.\. +(ok|FAILED|failed)' "$UP_WORK/regress.log")
        if [ "$status" -ne 0 ]; then
            head -150 "$UP_WORK/regress/regression.diffs" 2>/dev/null
            [ "$reported" -lt ${#up_tests[@]} ] &&
                { tail -20 "$UP_WORK/regress.log"; record FAIL upgrade-regress "stopped-after-$reported-tests"; }
        fi
    fi
    cluster_stop "$UP_WORK/pg"
fi
true
