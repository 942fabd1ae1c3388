# Test result bookkeeping shared by the suites: every test case appends one line
# "PASS <suite>/<name>" or "FAIL <suite>/<name>" to $TENANCY_RESULTS.

record() {  # record PASS|FAIL suite name
    echo "$1 $2/$3" >>"$TENANCY_RESULTS"
    if [ "$1" = PASS ]; then
        printf '  ok    %s/%s\n' "$2" "$3"
    else
        printf '  FAIL  %s/%s\n' "$2" "$3"
    fi
}
