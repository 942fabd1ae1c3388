# The gateway against the coordinator: the route test files of tests/gateway
# and its end-to-end test (e2e.py, last: it stops and restarts the
# coordinator) run against this cluster (GWLIB_CITUS: the gateway logs in to
# the coordinator as its own client role; the DBA's checks run there too).
# Cases that cannot pass on Citus would be listed in
# tests/citus/gateway-known-limits, with the reason, and shown, not counted.
# tenancy_app's login (tenancy.citus_worker_logins(), run by distribute()):
# on the workers only, with a password no client can read.
ct_check tenancy-app-login-on-workers-only "f t t" \
    "$(for n in coord w1 w2; do ct $n postgres -c "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenancy_app'"; done | tr '\n' ' ' | sed 's/ $//')"
ct_check tenancy-app-worker-password-hidden-from-clients 1 \
    "$(ct coord ct_app -c "SELECT authinfo FROM pg_dist_authinfo WHERE rolename = 'tenancy_app'" 2>&1 | grep -c 'permission denied')"
ct_out=$(PGPASSWORD=wrong psql -w -qAtX -h 127.0.0.1 -p "${ct_port[w1]}" -U tenancy_app -d postgres -c "SELECT 1" 2>&1)
ct_check tenancy-app-refused-on-a-worker-without-its-password "0 1" \
    "$(grep -c '^1$' <<<"$ct_out") $(grep -q 'password authentication failed' <<<"$ct_out" && echo 1)"

if [ ! -x gateway/tenancy-gateway ]; then
    record FAIL $CT_SUITE gateway-binary-missing
else
    ct_gw_known=$(grep -v '^\s*#' tests/citus/gateway-known-limits 2>/dev/null | awk '{print $1}')
    # gateway_routing (tests/citus): each GET goes to its main account's shard.
    for ct_gw_file in routes_accounts routes_team routes_usage routes_auth routes_voice routes_phi \
        routes_framework gateway_routing e2e; do
        ct_gw_log=$CT_WORK/gateway-$ct_gw_file.log
        ct_gw_py=tests/gateway/$ct_gw_file.py
        [ -f "$ct_gw_py" ] || ct_gw_py=tests/citus/$ct_gw_file.py
        GWLIB_CITUS="$CT_WORK/coord ${ct_port[coord]}" timeout 900 python3 "$ct_gw_py" \
            "$CT_WORK" >"$ct_gw_log" 2>&1
        ct_gw_status=$?
        ct_gw_cases=0
        while read -r ct_gw_verdict ct_gw_name ct_gw_rest; do
            ct_gw_name=${ct_gw_name%:}
            case "$ct_gw_verdict" in
                PASS | FAIL) ct_gw_cases=$((ct_gw_cases + 1)) ;;
                *) continue ;;
            esac
            if grep -qx "$ct_gw_name" <<<"$ct_gw_known"; then
                echo "  known limit on Citus ($ct_gw_verdict): $ct_gw_file/$ct_gw_name"
            elif [ "$ct_gw_verdict" = PASS ]; then
                record PASS $CT_SUITE "gateway/$ct_gw_file/$ct_gw_name"
            else
                record FAIL $CT_SUITE "gateway/$ct_gw_file/$ct_gw_name"
                echo "        $ct_gw_rest"
            fi
        done <"$ct_gw_log"
        if [ "$ct_gw_status" -ne 0 ] && ! grep -q '^FAIL ' "$ct_gw_log"; then
            tail -20 "$ct_gw_log"
            record FAIL $CT_SUITE "gateway/$ct_gw_file/exit-status-$ct_gw_status"
        fi
        [ "$ct_gw_cases" -gt 0 ] || record FAIL $CT_SUITE "gateway/$ct_gw_file/no-cases"
    done
fi
