# Gateway HTTP layer (tests/gateway/http_*.py): many connections and the
# connection limit, /metrics, TLS, a database outage under load. Each script
# starts the real binary on free loopback ports; http_outage.py stops and
# freezes a throw-away cluster of its own, the others use this run's. One
# case per PASS/FAIL line.
if [ ! -x gateway/tenancy-gateway ]; then
    record FAIL gateway-http binary-missing
else
    for gw_http_script in http_load http_metrics http_tls http_outage; do
        gw_http_log=$TENANCY_TEST_WORK/gateway-$gw_http_script.log
        timeout 300 /usr/bin/python3 tests/gateway/$gw_http_script.py "$TENANCY_TEST_WORK" \
            >"$gw_http_log" 2>&1
        gw_http_status=$?
        gw_http_cases=0
        while read -r gw_verdict gw_name gw_rest; do
            case "$gw_verdict" in
                PASS) record PASS gateway-http "$gw_name"; gw_http_cases=$((gw_http_cases + 1)) ;;
                FAIL) record FAIL gateway-http "${gw_name%:}"; echo "        $gw_rest"; gw_http_cases=$((gw_http_cases + 1)) ;;
                '#') echo "        # $gw_name $gw_rest" ;;  # a measurement, printed only
            esac
        done <"$gw_http_log"
        if [ "$gw_http_status" -ne 0 ] && ! grep -q '^FAIL ' "$gw_http_log"; then
            tail -20 "$gw_http_log"
            record FAIL gateway-http "$gw_http_script-exit-status-$gw_http_status"
        fi
        [ "$gw_http_cases" -gt 0 ] || record FAIL gateway-http "$gw_http_script-no-cases"
    done
    # If a driver was killed (timeout), its cluster may still run.
    if [ -d "$TENANCY_TEST_WORK/gw-outage-pg/data" ] && cluster_running "$TENANCY_TEST_WORK/gw-outage-pg"; then
        cluster_stop "$TENANCY_TEST_WORK/gw-outage-pg"
    fi
fi
true
