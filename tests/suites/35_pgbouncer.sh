# Behind a real pgbouncer (Debian package) in transaction pooling mode, run
# as postgres on loopback with its own ini and userlist
# (docs/operations/pooling.md):
#  - tests/pgbouncer/clients.py: eight clients, their own roles, two server
#    connections per role; no context ever reaches another client; session
#    scope is refused on a guarded role, and cleared by the reset query;
#    and the real gateway through it (login, /v1/me, accounts) with
#    --prepared-statements off, eight HTTP clients at once;
#  - the gateway's route tests for accounts and team (members, invitations,
#    sub-users, API keys) with the gateway's database URL pointing at a
#    pgbouncer in front of their cluster (tests/gateway/gwlib.py,
#    GWLIB_PGBOUNCER=1; any routes_*.py runs that way).
# One case per PASS/FAIL line.
pgb_record_log() {  # pgb_record_log GROUP LOG STATUS
    local verdict name rest cases=0
    while read -r verdict name rest; do
        case "$verdict" in
            PASS) record PASS "$1" "$name"; cases=$((cases + 1)) ;;
            FAIL) record FAIL "$1" "${name%:}"; echo "        $rest"; cases=$((cases + 1)) ;;
            '#') echo "        # $name $rest" ;;  # a note, printed only
        esac
    done <"$2"
    if [ "$3" -ne 0 ] && ! grep -q '^FAIL ' "$2"; then
        tail -20 "$2"
        record FAIL "$1" "exit-status-$3"
    fi
    [ "$cases" -gt 0 ] || record FAIL "$1" no-cases
}

if ! command -v pgbouncer >/dev/null; then
    record FAIL pgbouncer pgbouncer-not-installed  # scripts/deps installs it
else
    pgb_log=$TENANCY_TEST_WORK/pgbouncer-clients.log
    timeout 300 /usr/bin/python3 tests/pgbouncer/clients.py "$TENANCY_TEST_WORK" >"$pgb_log" 2>&1
    pgb_record_log pgbouncer "$pgb_log" $?

    if [ ! -x gateway/tenancy-gateway ]; then
        record FAIL pgbouncer-gateway binary-missing
    else
        mkdir -p "$TENANCY_TEST_WORK/pgbouncer-gw" && chmod 0755 "$TENANCY_TEST_WORK/pgbouncer-gw"
        for pgb_routes in routes_accounts routes_team; do
            pgb_log=$TENANCY_TEST_WORK/pgbouncer-$pgb_routes.log
            GWLIB_PGBOUNCER=1 timeout 300 /usr/bin/python3 tests/gateway/$pgb_routes.py \
                "$TENANCY_TEST_WORK/pgbouncer-gw" >"$pgb_log" 2>&1
            pgb_record_log "pgbouncer-$pgb_routes" "$pgb_log" $?
        done
    fi
    # A killed driver may leave a pgbouncer or a cluster running.
    for pgb_pidfile in "$TENANCY_TEST_WORK"/pgbouncer/*/pgbouncer.pid \
        "$TENANCY_TEST_WORK"/pgbouncer-gw/*-pgbouncer/pgbouncer.pid; do
        [ -f "$pgb_pidfile" ] || continue
        pgb_pid=$(cat "$pgb_pidfile")
        [ "$(cat "/proc/$pgb_pid/comm" 2>/dev/null)" = pgbouncer ] && kill "$pgb_pid"
    done
    for pgb_cluster in "$TENANCY_TEST_WORK"/pgbouncer-gw/gw-*-pg; do
        [ -d "$pgb_cluster/data" ] && cluster_running "$pgb_cluster" && cluster_stop "$pgb_cluster"
    done
fi
true
