# Gateway routes (tests/gateway/routes_*.py): each file starts its own
# cluster and gateway (tests/gateway/gwlib.py) and walks its routes over HTTP.
# One case per PASS/FAIL line.
# The OpenAPI check needs Python's openapi-spec-validator, which Debian does
# not package: use the python3 on PATH when it has it (this machine's does).
gw_routes_python=/usr/bin/python3
if command -v python3 >/dev/null && python3 -c 'import openapi_spec_validator, jsonschema' 2>/dev/null; then
    gw_routes_python=$(command -v python3)
fi
if [ ! -x gateway/tenancy-gateway ]; then
    record FAIL gateway-routes binary-missing
else
    for gw_routes_file in tests/gateway/routes_*.py; do
        gw_routes_name=$(basename "$gw_routes_file" .py)
        gw_routes_log=$TENANCY_TEST_WORK/$gw_routes_name.log
        timeout 600 "$gw_routes_python" "$gw_routes_file" "$TENANCY_TEST_WORK" >"$gw_routes_log" 2>&1
        gw_routes_status=$?
        gw_routes_cases=0
        while read -r gw_verdict gw_name gw_rest; do
            case "$gw_verdict" in
                PASS) record PASS "$gw_routes_name" "$gw_name"; gw_routes_cases=$((gw_routes_cases + 1)) ;;
                FAIL) record FAIL "$gw_routes_name" "${gw_name%:}"; echo "        $gw_rest"; gw_routes_cases=$((gw_routes_cases + 1)) ;;
            esac
        done <"$gw_routes_log"
        if [ "$gw_routes_status" -ne 0 ] && ! grep -q '^FAIL ' "$gw_routes_log"; then
            tail -20 "$gw_routes_log"
            record FAIL "$gw_routes_name" "exit-status-$gw_routes_status"
        fi
        [ "$gw_routes_cases" -gt 0 ] || record FAIL "$gw_routes_name" no-cases
        # A killed driver may leave its cluster running.
        for gw_routes_pg in "$TENANCY_TEST_WORK"/gw-*-pg; do
            if [ -d "$gw_routes_pg/data" ] && cluster_running "$gw_routes_pg"; then
                cluster_stop "$gw_routes_pg"
            fi
        done
    done
fi
true
