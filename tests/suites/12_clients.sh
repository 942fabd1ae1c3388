# Per-client login roles (extension/sql/26_clients.sql): real connections as
# two client roles and a gateway role. One client can neither read another's
# query text (credentials in it), nor end its backend, nor change the shared
# group role tenancy_app; tenancy_app itself cannot log in.
CL_DB=clients_test
SU="psql -qAtX -d $CL_DB"
psql -qAtX -c "DROP DATABASE IF EXISTS $CL_DB" -c "CREATE DATABASE $CL_DB" >/dev/null
for r in client_a client_b client_gw client_x; do
    psql -qAtX -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1
done
$SU -c "CREATE EXTENSION tenancy" >/dev/null
cl_main=$($SU -c "SELECT tenancy.create_main_account('Clients Co', 'owner@clients.test', 'a long enough password')")
cl_key=$($SU -c "SELECT tenancy.admin_create_api_key('$cl_main', 'client a key')")
$SU -c "SELECT tenancy.create_client('client_a')" -c "SELECT tenancy.create_client('client_b')" \
    -c "SELECT tenancy.create_client('client_gw', NULL, gateway => true)" >/dev/null

check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then record PASS clients "$1"; else
        echo "        expected: $2"
        echo "        actual:   $3"
        record FAIL clients "$1"
    fi
}
as_client() {  # as_client ROLE SQL...: runs each -c, prints output and errors
    local role=$1
    shift
    local args=()
    for q in "$@"; do args+=(-c "$q"); done
    psql -qAtX -d $CL_DB -U "$role" "${args[@]}" 2>&1
}

# tenancy_app is a group: nobody logs in as it.
out=$(psql -qAtX -d $CL_DB -U tenancy_app -c "SELECT 1" 2>&1)
grep -q 'not permitted to log in' <<<"$out" && record PASS clients tenancy_app-cannot-log-in ||
    { echo "$out"; record FAIL clients tenancy_app-cannot-log-in; }

# A client in context sees its tenant's rows, as before.
check client-role-works-in-context "t 1" \
    "$(as_client client_b "BEGIN" "SELECT tenancy.authenticate('$cl_key') = '$cl_main'" \
        "SELECT count(*) FROM tenancy.accounts" "COMMIT" | tr '\n' ' ' | sed 's/ $//')"

# Client A holds a credential in its running statement.
psql -qAtX -d $CL_DB -U client_a \
    -c "SELECT tenancy.authenticate('$cl_key') IS NOT NULL, pg_sleep(60)" >/dev/null 2>&1 &
cl_bg=$!
a_pid=
for _ in $(seq 100); do
    a_pid=$($SU -c "SELECT pid FROM pg_stat_activity WHERE usename = 'client_a' AND query LIKE '%pg_sleep(60)%'")
    [ -n "$a_pid" ] && break
    sleep 0.1
done
if [ -z "$a_pid" ]; then
    record FAIL clients client-a-started
else
    # Control: the DBA, and client A's own second connection, do see it, so
    # the checks below test the role boundary, not an empty view.
    check dba-sees-client-a-query 1 \
        "$($SU -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $a_pid AND query LIKE '%tnc_%'")"
    check client-a-sees-its-own-query 1 \
        "$(as_client client_a "SELECT count(*) FROM pg_stat_activity WHERE pid = $a_pid AND query LIKE '%tnc_%'")"
    for other in client_b client_gw; do
        check "$other-cannot-read-client-a-query" "<insufficient privilege>" \
            "$(as_client $other "SELECT query FROM pg_stat_activity WHERE pid = $a_pid")"
        out=$(as_client $other "SELECT pg_terminate_backend($a_pid)")
        grep -q 'permission denied\|must be a member' <<<"$out" &&
            record PASS clients "$other-cannot-terminate-client-a" ||
            { echo "$out"; record FAIL clients "$other-cannot-terminate-client-a"; }
        out=$(as_client $other "SELECT pg_cancel_backend($a_pid)")
        grep -q 'permission denied\|must be a member' <<<"$out" &&
            record PASS clients "$other-cannot-cancel-client-a" ||
            { echo "$out"; record FAIL clients "$other-cannot-cancel-client-a"; }
    done
    check client-a-still-running 1 "$($SU -c "SELECT count(*) FROM pg_stat_activity WHERE pid = $a_pid")"
fi
kill "$cl_bg" 2>/dev/null
[ -n "$a_pid" ] && $SU -c "SELECT pg_terminate_backend($a_pid)" >/dev/null 2>&1
wait "$cl_bg" 2>/dev/null

# Nobody but the DBA changes the shared role (or another client's).
for stmt in "ALTER ROLE tenancy_app SET default_transaction_read_only = on" \
    "ALTER ROLE tenancy_app SET statement_timeout = 1" \
    "ALTER ROLE tenancy_app PASSWORD 'hijacked'" \
    "ALTER ROLE tenancy_app LOGIN" \
    "ALTER ROLE client_a SET statement_timeout = 1" \
    "GRANT tenancy_app TO client_x_missing" \
    "SET ROLE client_a"; do
    name=$(tr -c 'a-z0-9\n' '-' <<<"${stmt,,}" | sed 's/-\+/-/g; s/-$//' | cut -c1-60)
    out=$(as_client client_b "$stmt")
    grep -qi 'permission denied\|must have\|only superusers\|does not exist' <<<"$out" &&
        record PASS clients "refused-$name" || { echo "$out"; record FAIL clients "refused-$name"; }
done
check tenancy_app-settings-untouched "" \
    "$($SU -c "SELECT string_agg(array_to_string(s.setconfig, ','), ';') FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname IN ('tenancy_app', 'tenancy_gateway')")"
check tenancy_app-still-nologin-no-password "f f" \
    "$($SU -c "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = 'tenancy_app'" | tr '|' ' ')"

# The DBA's functions and view.
check clients-view "client_a false|client_b false|client_gw true" \
    "$($SU -c "SELECT string_agg(name || ' ' || gateway, '|' ORDER BY name) FROM tenancy.clients WHERE name LIKE 'client\\_%'")"
out=$($SU -c "SELECT tenancy.create_client('client_a')" 2>&1)
grep -q 'already exists' <<<"$out" && record PASS clients create-client-duplicate-refused ||
    { echo "$out"; record FAIL clients create-client-duplicate-refused; }
for bad in 'Bad Name' 'pg_thing' 'tenancy_app2' ''; do
    out=$($SU -c "SELECT tenancy.create_client('$bad')" 2>&1)
    grep -q 'invalid client role name' <<<"$out" && record PASS clients "create-client-refuses-'$bad'" ||
        { echo "$out"; record FAIL clients "create-client-refuses-'$bad'"; }
done
out=$(as_client client_b "SELECT tenancy.create_client('client_x')")
grep -q 'permission denied' <<<"$out" && record PASS clients create-client-is-dba-only ||
    { echo "$out"; record FAIL clients create-client-is-dba-only; }
out=$($SU -c "SELECT tenancy.drop_client('postgres')" 2>&1)
grep -q 'not found' <<<"$out" && record PASS clients drop-client-refuses-other-roles ||
    { echo "$out"; record FAIL clients drop-client-refuses-other-roles; }
# A SCRAM verifier (what psql's \password sends) is stored as given: the clear
# password never reaches the server.
cl_verifier=$(python3 -c '
import base64, hashlib, hmac, os
salt = os.urandom(16)
salted = hashlib.pbkdf2_hmac("sha256", b"client x password", salt, 4096)
ck = hmac.new(salted, b"Client Key", "sha256").digest()
sk = hmac.new(salted, b"Server Key", "sha256").digest()
b = lambda x: base64.b64encode(x).decode()
print("SCRAM-SHA-256$4096:%s$%s:%s" % (b(salt), b(hashlib.sha256(ck).digest()), b(sk)))')
$SU -c "SELECT tenancy.create_client('client_x', '$cl_verifier')" >/dev/null 2>&1
check create-client-stores-scram-verifier-as-given "$cl_verifier" \
    "$($SU -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'client_x'")"
$SU -c "SELECT tenancy.drop_client('client_x')" >/dev/null 2>&1
check drop-client-drops "0" "$($SU -c "SELECT count(*) FROM pg_roles WHERE rolname = 'client_x'")"

psql -qAtX -c "DROP DATABASE IF EXISTS $CL_DB" >/dev/null 2>&1
for r in client_a client_b client_gw; do psql -qAtX -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
true
