# Gateway end to end (tests/gateway/e2e.py): the real binary on a free
# loopback port against its own throw-away cluster, which it stops and
# restarts. One case per PASS/FAIL line.
gw_e2e_log=$TENANCY_TEST_WORK/gateway-e2e.log
if [ ! -x gateway/tenancy-gateway ]; then
    record FAIL gateway-e2e binary-missing
else
    timeout 600 /usr/bin/python3 tests/gateway/e2e.py "$TENANCY_TEST_WORK" >"$gw_e2e_log" 2>&1
    gw_e2e_status=$?
    gw_e2e_cases=0
    while read -r gw_verdict gw_name gw_rest; do
        case "$gw_verdict" in
            PASS) record PASS gateway-e2e "$gw_name"; gw_e2e_cases=$((gw_e2e_cases + 1)) ;;
            FAIL) record FAIL gateway-e2e "${gw_name%:}"; echo "        $gw_rest"; gw_e2e_cases=$((gw_e2e_cases + 1)) ;;
        esac
    done <"$gw_e2e_log"
    if [ "$gw_e2e_status" -ne 0 ] && ! grep -q '^FAIL ' "$gw_e2e_log"; then
        tail -20 "$gw_e2e_log"
        record FAIL gateway-e2e "exit-status-$gw_e2e_status"
    fi
    [ "$gw_e2e_cases" -gt 0 ] || record FAIL gateway-e2e no-cases
    # If the driver was killed (timeout), its cluster may still run.
    if [ -d "$TENANCY_TEST_WORK/gw-e2e-pg/data" ] && cluster_running "$TENANCY_TEST_WORK/gw-e2e-pg"; then
        cluster_stop "$TENANCY_TEST_WORK/gw-e2e-pg"
    fi
fi
true
