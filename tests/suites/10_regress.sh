# pg_regress (sql/ + expected/) and pg_isolation_regress (tests/isolation/):
# one test case per test file, as pg_regress counts them.
log=$TENANCY_TEST_WORK/regress.log
timeout 900 make -s installcheck PG_CONFIG="$PG_CONFIG" >"$log" 2>&1
status=$?
cases=$(grep -E '\.\.\. +(ok|FAILED|failed)' "$log" || true)
while read -r line; do
    [ -z "$line" ] && continue
    name=$(sed -E 's/^(test )?[[:space:]]*([^ ]+) +\.\.\..*/\2/' <<<"$line")
    if grep -qE '\.\.\. +ok' <<<"$line"; then record PASS regress "$name"; else record FAIL regress "$name"; fi
done <<<"$cases"
if [ "$status" -ne 0 ]; then
    [ -f regression.diffs ] && head -200 regression.diffs
    [ -f output_iso/regression.diffs ] && head -200 output_iso/regression.diffs
    grep -qE '\.\.\. +FAILED' "$log" || { tail -30 "$log"; record FAIL regress "make-installcheck"; }
fi
true
