# Login throttling when tenancy is NOT in shared_preload_libraries: there is no
# shared-memory counter, the C functions answer NULL, and the table counter
# alone throttles (committed failures only; see README "Login throttling"),
# and nothing queues failed logins for after a rollback.
NOPRELOAD_WORK=$TENANCY_TEST_WORK/nopreload
mkdir -p "$NOPRELOAD_WORK" && chmod 0755 "$NOPRELOAD_WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$NOPRELOAD_WORK"
nopreload_port=$(free_port $((29000 + RANDOM % 1000)))
if cluster_init "$NOPRELOAD_WORK/pg" "$nopreload_port" && cluster_start "$NOPRELOAD_WORK/pg"; then
    N="psql -qAtX -h $NOPRELOAD_WORK/pg -p $nopreload_port -U postgres postgres"
    check() {  # check NAME EXPECTED SQL...
        local name=$1 expected=$2 out
        shift 2
        out=$($N "$@" 2>&1 | grep -v -e '^WARNING' -e '^$' | tr '\n' ' ')
        [ "$out" = "$expected" ] && record PASS throttle-nopreload "$name" ||
            { echo "$name: got [$out], expected [$expected]"; record FAIL throttle-nopreload "$name"; }
    }
    $N -c "CREATE EXTENSION tenancy" \
       -c "SELECT tenancy.create_main_account('No Preload', 'np@np.test', 'np-pass-1')" \
       -c "SELECT tenancy.create_main_account('No Preload 2', 'np2@np.test', 'np2-pass-1')" >/dev/null
    check shared-table-absent "f t t " \
        -c "SELECT tenancy._throttle_available()" -c "SELECT tenancy._throttle_attempt('user:x@y') IS NULL" \
        -c "SELECT tenancy._login_queue_length() IS NULL AND tenancy._login_queue_row('user:x@y') IS NULL"
    # Committed failures (autocommit) throttle through the table.
    check committed-failures-throttle "t " \
        -c "SELECT tenancy.login('np@np.test', 'bad-1')" -c "SELECT tenancy.login('np@np.test', 'bad-2')" \
        -c "SELECT tenancy.login('np@np.test', 'bad-3')" -c "SELECT tenancy.login('np@np.test', 'bad-4')" \
        -c "SELECT tenancy.login('np@np.test', 'bad-5')" \
        -c "SELECT tenancy.login('np@np.test', 'np-pass-1') IS NULL"
    # The documented limitation: failures rolled back are not counted here.
    check rolled-back-failures-not-counted "t t " \
        -c "BEGIN" \
        -c "SELECT count(*) FILTER (WHERE tenancy.login('np2@np.test', 'bad-' || g) IS NULL) = 5 FROM generate_series(1, 5) g" \
        -c "ROLLBACK" -c "SELECT tenancy.login('np2@np.test', 'np2-pass-1') IS NOT NULL"
    # Audit events do not need the preload.
    check failures-audited "t " \
        -c "SELECT count(*) = 6 FROM tenancy.audit_log WHERE action = 'login.failure' AND target = 'np@np.test'"
    cluster_stop "$NOPRELOAD_WORK/pg"
else
    record FAIL throttle-nopreload cluster-started
    tail -20 "$NOPRELOAD_WORK/pg/server.log" 2>/dev/null
fi
true
