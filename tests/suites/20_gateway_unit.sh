# Gateway unit tests (tests/gateway/unit_tests.cpp): config parsing, the
# SQLSTATE -> HTTP mapping, problem+json, and the pool / transaction helper
# against this run's cluster (PGHOST/PGPORT/PGUSER). One case per PASS/FAIL line.
gw_unit_log=$TENANCY_TEST_WORK/gateway-unit.log
if ! make -s -C gateway unit-tests >"$gw_unit_log" 2>&1; then
    tail -40 "$gw_unit_log"
    record FAIL gateway-unit build
else
    timeout 300 gateway/build/unit-tests >"$gw_unit_log" 2>&1
    gw_unit_status=$?
    gw_unit_cases=0
    while read -r gw_verdict gw_name gw_rest; do
        case "$gw_verdict" in
            PASS) record PASS gateway-unit "$gw_name"; gw_unit_cases=$((gw_unit_cases + 1)) ;;
            FAIL) record FAIL gateway-unit "${gw_name%:}"; echo "        $gw_rest"; gw_unit_cases=$((gw_unit_cases + 1)) ;;
        esac
    done <"$gw_unit_log"
    # A crash or a hang must not pass silently.
    if [ "$gw_unit_status" -ne 0 ] && ! grep -q '^FAIL ' "$gw_unit_log"; then
        tail -20 "$gw_unit_log"
        record FAIL gateway-unit "exit-status-$gw_unit_status"
    fi
    [ "$gw_unit_cases" -gt 0 ] || record FAIL gateway-unit no-cases
fi
true
