# pg_regress (sql/ + expected/) and pg_isolation_regress (tests/isolation/):
# one test case per test file, as pg_regress counts them. The two run as
# separate invocations so a regression failure does not hide isolation results.
run_pg_regress() {  # run_pg_regress LABEL MAKE-OVERRIDES...
    local label=$1 log=$TENANCY_TEST_WORK/$1.log status
    shift
    timeout 900 make -s installcheck PG_CONFIG="$PG_CONFIG" "$@" >"$log" 2>&1
    status=$?
    local found=0
    while read -r line; do
        [ -z "$line" ] && continue
        found=1
        name=$(sed -E 's/^(test )?[[:space:]]*([^ ]+) +\.\.\..*/\2/' <<<"$line")
        if grep -qE '\.\.\. +ok' <<<"$line"; then record PASS "$label" "$name"; else record FAIL "$label" "$name"; fi
    done < <(grep -E '\.\.\. +(ok|FAILED|failed)' "$log")
    if [ "$status" -ne 0 ]; then
        for diffs in regression.diffs output_iso/regression.diffs; do
            [ -f "$diffs" ] && head -150 "$diffs"
        done
        # A run that stopped part-way (a missing expected file, a crashed
        # server) reports fewer tests than it has: count that as a failure.
        local reported=$(grep -cE '\.\.\. +(ok|FAILED|failed)' "$log")
        local failed=$(grep -cE '\.\.\. +(FAILED|failed)' "$log")
        if [ "$found" = 0 ] || [ "$failed" = 0 ]; then
            tail -30 "$log"
            record FAIL "$label" "stopped-after-$reported-tests"
        fi
    fi
}
rm -f regression.diffs output_iso/regression.diffs
run_pg_regress regress ISOLATION=
run_pg_regress isolation REGRESS=
true
