# Credentials stay out of the server log (extension/src/log_scrub_hook.cpp):
# in a database that logs every statement (and the STATEMENT of warnings),
# failed authenticate() calls, a raising login(), a failed login's warning, a
# bad invitation token, password literals and bound parameters leave no
# secret in the shared cluster's server.log, and a placeholder instead. A
# control run with tenancy.log_scrub off shows that the check sees a leak.
LS_LOG=$TENANCY_TEST_CLUSTER/server.log
LS_WORK=$TENANCY_TEST_WORK/log_scrub
mkdir -p "$LS_WORK" && chmod 0755 "$LS_WORK"
LS="psql -qAtX -d logscrub"
ls_start=$(stat -c %s "$LS_LOG")

# Made-up secrets of the real shapes (43 base64url characters) and passwords.
ls_key_secret=LsWrongKeySecret-0123456789_abcdefghijklmnZ
ls_sess_secret=LsWrongSessionSecret-0123456789_abcdefghijZ
ls_inv_secret=LsWrongInviteSecret-0123456789_abcdefghijkZ
ls_owner_pass=LsOwnerPassword-7
ls_wrong_pass=LsWrongPassword-8
ls_inv_pass=LsInvitePassword-9
ls_client_pass=LsClientPassword-10
ls_hash_pass=LsHashPassword-11
ls_param_pass=LsParamPassword-12
ls_cast_secret=LsCastSecret-0123456789_abcdefghijklmnopqrZ
ls_control_secret=LsControlSecret-0123456789_abcdefghijklmnoZ

psql -qAtX -d postgres -c "CREATE DATABASE logscrub" >/dev/null
$LS -c "CREATE EXTENSION tenancy" \
    -c "ALTER DATABASE logscrub SET log_statement = 'all'" \
    -c "ALTER DATABASE logscrub SET log_min_error_statement = 'warning'" >/dev/null
$LS -c "SELECT tenancy.create_main_account('Log Scrub', 'ls@ls.test', '$ls_owner_pass')" \
    -c "SELECT tenancy.create_client('ls_client')" \
    -c "SELECT tenancy.create_client('ls_pw_client', '$ls_client_pass')" >/dev/null
ls_account=$($LS -c "SELECT public_id FROM tenancy.accounts WHERE name = 'Log Scrub'")
ls_key=$($LS -c "SELECT tenancy.admin_create_api_key('$ls_account', 'log scrub key')")
ls_key_ids=$(echo "$ls_key" | cut -d_ -f1-3)          # tnc_<main id>_<key id>
ls_key_real_secret=${ls_key#"$ls_key_ids"_}
ls_main_id=$(echo "$ls_key" | cut -d_ -f2)
C="psql -qAtX -d logscrub -U ls_client"

# Through a client role: a good key (logged by log_statement), then failures.
$C -c "SELECT tenancy.authenticate('$ls_key') IS NOT NULL" >/dev/null
$C -c "SELECT tenancy.authenticate('${ls_key_ids}_$ls_key_secret')" >/dev/null 2>&1
$C -c "SELECT tenancy.authenticate('tns_999_$ls_sess_secret')" >/dev/null 2>&1
$C -c "SELECT * FROM tenancy.accept_invitation('tni_${ls_main_id}_999_$ls_inv_secret', 'Ann', '$ls_inv_pass')" \
    >/dev/null 2>&1
$C -c "SELECT tenancy.login('ls@ls.test', '$ls_owner_pass', 'acc_nosuchaccount')" >/dev/null 2>&1
$C -c "SELECT tenancy.login('ls@ls.test', '$ls_wrong_pass')" >/dev/null 2>&1
$C -c "SELECT tenancy.hash_password('$ls_hash_pass'), 1 / 0" >/dev/null 2>&1
# A key outside any password function: only its secret goes, here from the
# error message too.
$C -c "SELECT '${ls_key_ids}_$ls_cast_secret'::int" >/dev/null 2>&1
# Extended protocol: the password is a bound parameter, logged as a DETAIL.
echo "SELECT tenancy.login(:email, :pw);" >"$LS_WORK/login.sql"
"$PG_BINDIR/pgbench" -n -t 1 -M extended -f "$LS_WORK/login.sql" -D email=ls@ls.test -D pw="$ls_param_pass" \
    -U ls_client logscrub >/dev/null 2>&1
# A client may not turn scrubbing off.
ls_set=$($C -c "SET tenancy.log_scrub = off" 2>&1)
# The control: a superuser turns it off for one failing call.
psql -qAtX -d logscrub -c "SET tenancy.log_scrub = off" \
    -c "SELECT tenancy.authenticate('${ls_key_ids}_$ls_control_secret')" >/dev/null 2>&1

tail -c +$((ls_start + 1)) "$LS_LOG" >"$LS_WORK/server.log"
ls_absent() {  # ls_absent NAME SECRET: the log section must not contain SECRET
    if grep -qF -- "$2" "$LS_WORK/server.log"; then
        grep -F -- "$2" "$LS_WORK/server.log" | head -5
        record FAIL log-scrub "$1"
    else
        record PASS log-scrub "$1"
    fi
}
ls_present() {  # ls_present NAME TEXT
    if grep -qF -- "$2" "$LS_WORK/server.log"; then
        record PASS log-scrub "$1"
    else
        echo "$1: [$2] not in the log section:"
        tail -40 "$LS_WORK/server.log"
        record FAIL log-scrub "$1"
    fi
}
ls_present statements-were-logged "statement: SELECT tenancy.authenticate("
ls_absent api-key-used-not-logged "$ls_key_real_secret"
ls_absent api-key-failed-not-logged "$ls_key_secret"
ls_present api-key-placeholder "STATEMENT:  SELECT tenancy.authenticate('REDACTED')"
ls_absent key-in-message-not-logged "$ls_cast_secret"
ls_present key-in-message-placeholder "invalid input syntax for type integer: \"${ls_key_ids}_REDACTED\""
ls_absent session-token-not-logged "$ls_sess_secret"
ls_absent invitation-token-not-logged "$ls_inv_secret"
ls_absent invitation-password-not-logged "$ls_inv_pass"
ls_absent owner-password-not-logged "$ls_owner_pass"
ls_present raising-login-placeholder \
    "STATEMENT:  SELECT tenancy.login('REDACTED', 'REDACTED', 'REDACTED')"
ls_absent failed-login-password-not-logged "$ls_wrong_pass"
ls_absent client-password-not-logged "$ls_client_pass"
ls_present client-password-placeholder "statement: SELECT tenancy.create_client('REDACTED', 'REDACTED')"
ls_absent hash-password-literal-not-logged "$ls_hash_pass"
ls_present bound-parameters-were-logged "parameters: \$1 = 'REDACTED', \$2 = 'REDACTED'"
ls_absent bound-password-not-logged "$ls_param_pass"
[[ "$ls_set" == *"permission denied"* ]] && record PASS log-scrub client-cannot-turn-it-off ||
    { echo "SET as a client: $ls_set"; record FAIL log-scrub client-cannot-turn-it-off; }
ls_present control-secret-logged-when-off "$ls_control_secret"

psql -qAtX -d postgres -c "DROP DATABASE logscrub" -c "DROP ROLE ls_client" -c "DROP ROLE ls_pw_client" \
    >/dev/null

# csvlog and jsonlog print the statement from the same debug_query_string: a
# cluster of its own with the logging collector writes both.
ls_port=$(free_port $((27000 + RANDOM % 1000)))
[ "$(id -u)" = 0 ] && chown postgres: "$LS_WORK"
if cluster_init "$LS_WORK/pg" "$ls_port" "shared_preload_libraries = 'tenancy'" \
        "logging_collector = on" "log_destination = 'csvlog,jsonlog'" "log_directory = 'log'" \
        "log_filename = 'server'" && cluster_start "$LS_WORK/pg"; then
    J="psql -qAtX -h $LS_WORK/pg -p $ls_port -U postgres postgres"
    $J -c "CREATE EXTENSION tenancy" >/dev/null
    $J -c "SELECT tenancy.authenticate('tnc_1_1_$ls_key_secret')" >/dev/null 2>&1
    $J -c "SELECT 'ls-log-flushed'::int" >/dev/null 2>&1
    # The collector writes asynchronously: wait for the next statement's error.
    for _ in $(seq 1 100); do
        grep -qs ls-log-flushed "$LS_WORK/pg/data/log/server.csv" &&
            grep -qs ls-log-flushed "$LS_WORK/pg/data/log/server.json" && break
        sleep 0.1
    done
    for ls_fmt in csv json; do
        ls_file=$LS_WORK/pg/data/log/server.$ls_fmt
        if grep -qs "SELECT tenancy.authenticate('REDACTED')" "$ls_file" && ! grep -qF "$ls_key_secret" "$ls_file"; then
            record PASS log-scrub "${ls_fmt}log-statement-scrubbed"
        else
            grep -F -e "$ls_key_secret" -e authenticate "$ls_file" | head -5
            record FAIL log-scrub "${ls_fmt}log-statement-scrubbed"
        fi
    done
    cluster_stop "$LS_WORK/pg"
else
    record FAIL log-scrub csvlog-cluster-started
fi
true
