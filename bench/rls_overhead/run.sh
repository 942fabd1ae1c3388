#!/usr/bin/env bash
# RLS overhead and authenticate() cost, measured inside the server.
#
# Builds a 1,111-account tree (main . 10 . 10 . 10) and a 5-million-row
# protected table spread evenly over its accounts, then times
#   SELECT count(*), sum(duration) FROM bench_calls
# under RLS as a client role (a member of tenancy_app) in a context at the top
# (main account, all rows), in the middle (a level-2 account, 1/10) and at a
# leaf (1/1000), against the same
# query with no RLS and a hand-written WHERE account_path <@ '<path>'.
# Times are EXPLAIN ANALYZE execution times (median of 5). Also times 10,000
# authenticate() calls in a PL/pgSQL loop (median and p99), and checks that a
# parallel scan under RLS returns exactly the subtree's rows.
#   bench/rls_overhead/run.sh            (ROWS=5000000 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${ROWS:-5000000}
export PG_CONFIG=${PG_CONFIG:-pg_config}
. tests/lib/cluster.sh
WORK=$(mktemp -d /tmp/tenancy-bench.XXXXXX)
chmod 0755 "$WORK"
PORT=$(free_port $((24000 + RANDOM % 2000)))
trap 'cluster_stop "$WORK/pg" 2>/dev/null; rm -rf "$WORK"' EXIT
cluster_init "$WORK/pg" "$PORT" "shared_buffers = '1GB'" "max_parallel_workers_per_gather = 2" "jit = off"
cluster_start "$WORK/pg"
export PGHOST=$WORK/pg PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
q() { psql -qAtX -v ON_ERROR_STOP=1 "$@"; }

q -c "CREATE EXTENSION tenancy"
q -c "SELECT tenancy.create_client('bench_client')"  # clients log in as their own roles
q -c "UPDATE tenancy.plans SET max_subaccounts = 100000, max_depth = 8 WHERE name = 'standard'"
MAIN=$(q -c "SELECT tenancy.create_main_account('Bench', 'bench@example.test', 'a long enough password')")
q <<SQL
-- The tree, inserted directly by the DBA for speed: 10 x 10 x 10 below the main account.
INSERT INTO tenancy.accounts (path, public_id, name, plan)
SELECT (m.path::text || '.' || l)::tenancy.account_path, format('acc_%s_%s', m.main_id, lpad(to_hex(l), 12, '0')),
       'level ' || l, 'standard'
FROM tenancy.accounts m, generate_series(1000001, 1000010) l WHERE m.public_id = '$MAIN';
INSERT INTO tenancy.accounts (path, public_id, name, plan)
SELECT (p.path::text || '.' || (p.id * 100 + l))::tenancy.account_path,
       format('acc_%s_%s', p.main_id, lpad(to_hex(p.id * 100 + l), 12, '0')), 'level2', 'standard'
FROM tenancy.accounts p, generate_series(1, 10) l WHERE p.parent_id IS NOT NULL AND tenancy.nlevel(p.path) = 2;
INSERT INTO tenancy.accounts (path, public_id, name, plan)
SELECT (p.path::text || '.' || (p.id * 100 + l))::tenancy.account_path,
       format('acc_%s_%s', p.main_id, lpad(to_hex(p.id * 100 + l), 12, '0')), 'level3', 'standard'
FROM tenancy.accounts p, generate_series(1, 10) l WHERE tenancy.nlevel(p.path) = 3;
CREATE TABLE bench_calls (id bigint, duration integer);
SELECT tenancy.protect('bench_calls', 'calls');
INSERT INTO bench_calls (id, duration, account_path)
SELECT i, (i % 600), a.paths[1 + (i % array_length(a.paths, 1))]
FROM (SELECT array_agg(path ORDER BY path) AS paths FROM tenancy.accounts) a,
     generate_series(1, $ROWS) i;
VACUUM ANALYZE bench_calls;
VACUUM ANALYZE tenancy.accounts;
SQL
echo "accounts: $(q -c 'SELECT count(*) FROM tenancy.accounts'), rows: $(q -c 'SELECT count(*) FROM bench_calls')"
MID=$(q -c "SELECT public_id FROM tenancy.accounts WHERE tenancy.nlevel(path) = 2 ORDER BY path LIMIT 1")
LEAF=$(q -c "SELECT public_id FROM tenancy.accounts WHERE tenancy.nlevel(path) = 4 ORDER BY path LIMIT 1")
KEY=$(q -c "SELECT tenancy.admin_create_api_key('$MAIN', 'bench')")

# median execution time (ms) of a query, run 5 times after one warm-up
median_ms() {  # median_ms ROLE PRELUDE QUERY
    local role=$1 prelude=$2 query=$3
    psql -qAtX -v ON_ERROR_STOP=1 -U "$role" <<SQL | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
BEGIN;
$prelude
SELECT 1 FROM ($query) warm;
CREATE TEMP TABLE t (ms float8);
DO \$\$
DECLARE plan json; i int;
BEGIN
    FOR i IN 1..5 LOOP
        EXECUTE \$q\$EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) $query\$q\$ INTO plan;
        INSERT INTO t VALUES ((plan->0->>'Execution Time')::float8);
    END LOOP;
END \$\$;
SELECT ms FROM t;
ROLLBACK;
SQL
}

QUERY="SELECT count(*), sum(duration) FROM bench_calls"
printf '\n%-8s %10s %14s %14s %8s\n' context rows "rls ms" "no-rls ms" ratio
for level in top mid leaf; do
    case $level in top) acct=$MAIN ;; mid) acct=$MID ;; leaf) acct=$LEAF ;; esac
    path=$(q -c "SELECT path FROM tenancy.accounts WHERE public_id = '$acct'")
    rows=$(q -c "SELECT count(*) FROM bench_calls WHERE account_path OPERATOR(tenancy.<@) '$path'")
    rls=$(median_ms bench_client "SELECT tenancy.authenticate('$KEY'); SELECT tenancy.act_as('$acct');" "$QUERY")
    raw=$(median_ms postgres "" "$QUERY WHERE account_path OPERATOR(tenancy.<@) '$path'::tenancy.account_path")
    printf '%-8s %10s %14.1f %14.1f %7.2fx\n' "$level" "$rows" "$rls" "$raw" "$(echo "$rls / $raw" | bc -l)"
done

# Parallel scan under RLS returns exactly the subtree.
path=$(q -c "SELECT path FROM tenancy.accounts WHERE public_id = '$MID'")
truth=$(q -c "SELECT count(*) FROM bench_calls WHERE account_path OPERATOR(tenancy.<@) '$path'")
parallel=$(psql -qAtX -U bench_client <<SQL | tail -1
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET enable_indexscan = off; SET enable_bitmapscan = off;
BEGIN; SELECT tenancy.authenticate('$KEY'); SELECT tenancy.act_as('$MID');
SELECT count(*) FROM bench_calls;
COMMIT;
SQL
)
echo
echo "parallel scan under RLS (mid context): $parallel rows; subtree holds $truth rows: $([ "$parallel" = "$truth" ] && echo exact || echo MISMATCH)"

# authenticate() per call.
psql -qAtX -U bench_client <<SQL
CREATE TEMP TABLE samples (us float8);
DO \$\$
DECLARE t0 timestamptz; i int;
BEGIN
    FOR i IN 1..10000 LOOP
        t0 := clock_timestamp();
        PERFORM tenancy.authenticate('$KEY');
        INSERT INTO samples VALUES (extract(epoch FROM clock_timestamp() - t0) * 1e6);
    END LOOP;
END \$\$;
SELECT format('authenticate(): 10,000 calls, median %s us, p99 %s us',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us)::numeric, 1),
              round(percentile_cont(0.99) WITHIN GROUP (ORDER BY us)::numeric, 1)) FROM samples;
SQL
