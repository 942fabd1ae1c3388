# The newcomer's path: scripts/run on its own ports and run directory, then
# every command of the README's "Walk-through" verbatim (only .run, 5499 and
# 8080 are moved; an invitation is accepted over REST from the mail that
# arrived in .run/mail/), then the README's `make installcheck` line against that
# cluster (one test of it, to check the connection settings it gives).
WT_RUN=$TENANCY_TEST_WORK/walkthrough-run
WT_PG=$(free_port $((29000 + RANDOM % 500)))
WT_HTTP=$(free_port $((WT_PG + 1)))
WT_SMTP=$(free_port $((WT_PG + 2)))
WT_LOG=$TENANCY_TEST_WORK/walkthrough.log
mkdir -p "$WT_RUN" && chmod 0755 "$WT_RUN"

wt_fix() {  # the README's command with this run's directory and ports
    sed -e "s#\"\$PWD/.run#\"$WT_RUN#g" -e "s#\$PWD/.run#$WT_RUN#g" -e "s#\\.run/#$WT_RUN/#g" \
        -e "s/\\b5499\\b/$WT_PG/g" -e "s/\\b8080\\b/$WT_HTTP/g"
}

if TENANCY_RUN_DIR=$WT_RUN TENANCY_PGPORT=$WT_PG TENANCY_HTTP_PORT=$WT_HTTP TENANCY_SMTP_PORT=$WT_SMTP scripts/run >"$WT_LOG" 2>&1; then
    record PASS walkthrough scripts-run-starts
else
    tail -20 "$WT_LOG"
    record FAIL walkthrough scripts-run-starts
fi
# What scripts/run prints must be usable as printed.
wt_psql_line=$(sed -n 's/^psql: *\(psql .*tenancy\) .*/\1/p' "$WT_LOG")
out=$($wt_psql_line -qAtX -c "SELECT current_user" 2>&1)
[ "$out" = demo_client ] && record PASS walkthrough printed-psql-line-connects ||
    { echo "$out"; record FAIL walkthrough printed-psql-line-connects; }
grep -q 'owner@demo.test / demo password 1' "$WT_LOG" && record PASS walkthrough prints-demo-owner-login ||
    record FAIL walkthrough prints-demo-owner-login

# The README's walk-through blocks, in order.
wt_blocks=$TENANCY_TEST_WORK/walkthrough-blocks
rm -rf "$wt_blocks" && mkdir -p "$wt_blocks"
awk -v dir="$wt_blocks" '
    /^## / { inside = ($0 == "## Walk-through") }
    inside && /^```(sh|sql)$/ { n++; lang = substr($0, 4); file = sprintf("%s/%02d.%s", dir, n, lang); next }
    inside && /^```$/ && file { file = ""; next }
    file { print > file }
' README.md
wt_count=$(ls "$wt_blocks" | wc -l)
[ "$wt_count" -ge 3 ] && record PASS walkthrough readme-has-blocks || record FAIL walkthrough readme-has-blocks
for block in "$wt_blocks"/*; do
    name=walkthrough-block-$(basename "$block")
    case "$block" in
    *.sql)
        # The first line names the connection: "-- psql ...".
        connect=$(head -1 "$block" | sed -n 's/^-- *\(psql .*\)$/\1/p' | wt_fix)
        if [ -z "$connect" ]; then record FAIL walkthrough "$name-names-its-connection"; continue; fi
        out=$(cd "$ROOT" && wt_fix <"$block" | eval "$connect -X -v ON_ERROR_STOP=1" 2>&1)
        status=$?
        echo "$out" >"$block.out"
        [ $status = 0 ] && record PASS walkthrough "$name" || { tail -5 <<<"$out"; record FAIL walkthrough "$name"; }
        ;;
    *.sh)
        ok=1
        while IFS= read -r line; do
            [ -z "$line" ] && continue
            out=$(cd "$ROOT" && eval "$(wt_fix <<<"$line")" 2>&1) || ok=0
            echo "$out" >>"$block.out"
            [ -n "$out" ] || ok=0
        done < <(grep -v '^\s*#' "$block" | grep -v '^scripts/run')
        [ $ok = 1 ] && record PASS walkthrough "$name" || { cat "$block.out"; record FAIL walkthrough "$name"; }
        ;;
    esac
done
# What the comments in the walk-through promise.
wt_client=$(ls "$wt_blocks"/*.sql.out 2>/dev/null | head -1)
wt_lines() { sed 's/^ *//; s/ *$//' "$wt_client"; }
[ -n "$wt_client" ] && wt_lines | grep -qx 'Acme Dental North' && wt_lines | grep -qx '0' &&
    grep -q '"kind": "user"' "$wt_client" && record PASS walkthrough client-block-output-as-promised ||
    { cat "$wt_client" 2>/dev/null; record FAIL walkthrough client-block-output-as-promised; }
# (grep reads the files itself: under pipefail, `cat | grep -q` fails when
# grep stops early and cat gets SIGPIPE.)
grep -qs '"principal"' "$wt_blocks"/*.sh.out && record PASS walkthrough gateway-me-answers ||
    record FAIL walkthrough gateway-me-answers
# The invitation is accepted over REST with the token from the delivered mail:
# POST /v1/invitations/accept answers a session token, and /v1/me with it is
# the new user's (a psql accept_invitation() prints neither).
wt_sh_out=$(cat "$wt_blocks"/*.sh.out 2>/dev/null)
grep -q '^{"token":"tns_' <<<"$wt_sh_out" && grep -q '"kind":"user"' <<<"$wt_sh_out" &&
    record PASS walkthrough invitation-accepted-over-rest ||
    { tail -5 <<<"$wt_sh_out"; record FAIL walkthrough invitation-accepted-over-rest; }

# The README's installcheck line, for one test.
wt_check=$(grep -m1 'make installcheck$' README.md | wt_fix)
if [ -n "$wt_check" ]; then
    out=$(cd "$ROOT" && eval "$wt_check REGRESS=account_path ISOLATION= REGRESS_OPTS='--load-extension=tenancy --outputdir=$TENANCY_TEST_WORK/wt-installcheck'" 2>&1)
    grep -q 'account_path .* ok' <<<"$out" && record PASS walkthrough readme-installcheck-line-works ||
        { tail -10 <<<"$out"; record FAIL walkthrough readme-installcheck-line-works; }
else
    record FAIL walkthrough readme-installcheck-line-found
fi

TENANCY_RUN_DIR=$WT_RUN scripts/run stop >/dev/null 2>&1 || record FAIL walkthrough scripts-run-stop
true
