# The gateway's outbox mailer (tests/gateway/mailer_*.py) against a real SMTP
# listener on loopback (Debian's python3-aiosmtpd): each file starts its own
# cluster and gateway (tests/gateway/gwlib.py). One case per PASS/FAIL line.
if ! /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null; then
    record FAIL mailer aiosmtpd-missing
elif [ ! -x gateway/tenancy-gateway ]; then
    record FAIL mailer binary-missing
else
    for mailer_file in tests/gateway/mailer_*.py; do
        mailer_name=$(basename "$mailer_file" .py)
        mailer_log=$TENANCY_TEST_WORK/$mailer_name.log
        timeout 600 /usr/bin/python3 "$mailer_file" "$TENANCY_TEST_WORK" >"$mailer_log" 2>&1
        mailer_status=$?
        mailer_cases=0
        while read -r mailer_verdict mailer_case mailer_rest; do
            case "$mailer_verdict" in
                PASS) record PASS "$mailer_name" "$mailer_case"; mailer_cases=$((mailer_cases + 1)) ;;
                FAIL) record FAIL "$mailer_name" "${mailer_case%:}"; echo "        $mailer_rest"; mailer_cases=$((mailer_cases + 1)) ;;
                '#') echo "    $mailer_case $mailer_rest" ;;
            esac
        done <"$mailer_log"
        if [ "$mailer_status" -ne 0 ] && ! grep -q '^FAIL ' "$mailer_log"; then
            tail -20 "$mailer_log"
            record FAIL "$mailer_name" "exit-status-$mailer_status"
        fi
        [ "$mailer_cases" -gt 0 ] || record FAIL "$mailer_name" no-cases
        # A killed driver may leave its cluster running.
        for mailer_pg in "$TENANCY_TEST_WORK"/gw-mailer*-pg; do
            if [ -d "$mailer_pg/data" ] && cluster_running "$mailer_pg"; then
                cluster_stop "$mailer_pg"
            fi
        done
    done
fi
true
