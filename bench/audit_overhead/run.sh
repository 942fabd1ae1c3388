#!/usr/bin/env bash
# Audit overhead: single-row INSERTs and UPDATEs of a protected table with
#   none     no audit trigger
#   ours     tenancy's C++ trigger (unsealed write) + the background sealer
#   plpgsql  a hand-written PL/pgSQL trigger writing a comparable jsonb row
#   chain    the same, chained per main account with SHA-256 under a lock on
#            the account's chain head
# at 1 and 8 clients, synchronous_commit on and off; prints tps and the ratio
# to "none". Runs in its own throw-away cluster (fsync on), as the superuser
# without a tenancy context (RLS is bypassed alike for every variant: the
# difference is the audit alone). Rows spread over 100 main accounts.
#
# The machine is shared: each configuration runs the four variants
# interleaved, ROUNDS times, and prints each variant's best run and the ratio
# of bests, and in brackets the median over rounds of the variant's ratio to
# the "none" run of the same round (steadier when the machine's speed drifts).
#
#   bench/audit_overhead/run.sh [seconds per run, default 4] [rounds, default 3]
#   SYNC="off" OPS="insert" CLIENTS="8" bench/audit_overhead/run.sh 4 7   # a subset
# Needs the extension installed in $PG_CONFIG's server (make install).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PG_CONFIG=${PG_CONFIG:-pg_config}
. tests/lib/cluster.sh
SECONDS_PER_RUN=${1:-4}
ROUNDS=${2:-3}
HERE=$ROOT/bench/audit_overhead

WORK=$(mktemp -d /tmp/tenancy-audit-bench.XXXXXX)
chmod 0755 "$WORK"
cp "$HERE"/*.pgbench "$HERE"/setup.sql "$WORK"/
chmod 0644 "$WORK"/*
CLUSTER=$WORK/pg
PORT=$(free_port $((24000 + RANDOM % 3000)))
cleanup() {
    cluster_running "$CLUSTER" && cluster_stop "$CLUSTER"
    rm -rf "$WORK"
}
trap cleanup EXIT

cluster_init "$CLUSTER" "$PORT" "fsync = on" "shared_buffers = 256MB" "max_wal_size = 4GB" \
    "shared_preload_libraries = 'tenancy'" "tenancy.audit_databases = 'bench'"
cluster_start "$CLUSTER"
export PGHOST=$CLUSTER PGPORT=$PORT PGUSER=postgres
PSQL=("$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
"${PSQL[@]}" -d bench -f "$WORK/setup.sql" >/dev/null
# A server that has run for a while has touched all of its shared memory; a
# fresh one takes a page fault the first time each buffer is used, which here
# would fall on whichever variant allocates new pages first and most (the
# audited ones). Fill every buffer once (one row per page), then drop it.
"${PSQL[@]}" -d bench -c "CREATE TABLE public.warm_buffers (pad text) WITH (fillfactor = 10, autovacuum_enabled = false)" \
    -c "INSERT INTO public.warm_buffers SELECT repeat('x', 700)
        FROM generate_series(1, (SELECT setting::int FROM pg_settings WHERE name = 'shared_buffers'))" \
    -c "DROP TABLE public.warm_buffers"

variant() {  # enable exactly one audit trigger (or none)
    local sql="ALTER TABLE bench.items DISABLE TRIGGER tenancy_audit;
               ALTER TABLE bench.items DISABLE TRIGGER audit_plain;
               ALTER TABLE bench.items DISABLE TRIGGER audit_chain;"
    case $1 in
        ours) sql+="ALTER TABLE bench.items ENABLE TRIGGER tenancy_audit;" ;;
        plpgsql) sql+="ALTER TABLE bench.items ENABLE TRIGGER audit_plain;" ;;
        chain) sql+="ALTER TABLE bench.items ENABLE TRIGGER audit_chain;" ;;
    esac
    "${PSQL[@]}" -d bench -c "$sql"
}

tps_of() {  # script clients sync
    local out
    out=$(PGOPTIONS="-c synchronous_commit=$3" timeout $((SECONDS_PER_RUN + 60)) "$PG_BINDIR/pgbench" -n -M prepared \
        -c "$2" -j "$2" -T "$SECONDS_PER_RUN" -f "$WORK/$1.pgbench" bench 2>&1) || { echo "pgbench failed: $out" >&2; echo 0; return; }
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1
}

declare -A TPS PAIRED
variants=(none ours plpgsql chain)
echo "# audit overhead, $ROUNDS interleaved rounds of ${SECONDS_PER_RUN}s, $(nproc) cores, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# per variant: best tps, ratio of bests, and [median of the per-round ratios to that round's none]"
for sync in ${SYNC:-off on}; do
    for op in ${OPS:-insert update}; do
        for clients in ${CLIENTS:-1 8}; do
            for v in "${variants[@]}"; do TPS[$v]=0; PAIRED[$v]=""; done
            for ((round = 1; round <= ROUNDS; round++)); do
                for v in "${variants[@]}"; do
                    variant "$v"
                    "${PSQL[@]}" -d bench -c "CHECKPOINT" >/dev/null
                    t=$(tps_of "$op" "$clients" "$sync")
                    [ "$v" = none ] && none_now=$t
                    TPS[$v]=$(awk -v a="$t" -v b="${TPS[$v]}" 'BEGIN { print (a > b ? a : b) }')
                    PAIRED[$v]+=" $(awk -v a="$t" -v b="$none_now" 'BEGIN { printf "%.4f", (b > 0 ? a / b : 0) }')"
                done
            done
            line=$(printf '%-6s %-3s c=%-2s' "$op" "$sync" "$clients")
            for v in "${variants[@]}"; do
                ratio=$(awk -v a="${TPS[$v]}" -v b="${TPS[none]}" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
                median=$(tr ' ' '\n' <<<"${PAIRED[$v]}" | sed '/^$/d' | sort -n |
                         awk '{ x[NR] = $1 } END { printf "%.2f", (NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2) }')
                line+=$(printf '  %s %8.0f (%sx) [%s]' "$v" "${TPS[$v]}" "$ratio" "$median")
            done
            echo "$line"
        done
    done
done
# The sealer kept up: nothing committed stays unsealed, and the chains verify.
sleep 1
"${PSQL[@]}" -d bench -At -c "SELECT 'audit entries: ' || count(*) || ', unsealed after the runs: ' ||
    count(*) FILTER (WHERE c.id IS NULL)
    FROM tenancy.audit_log l
    LEFT JOIN (SELECT k.main_id, u.xid, u.id FROM tenancy.audit_chain k, unnest(k.entry_xids, k.entry_ids) u(xid, id)) c
    ON c.main_id = l.main_id AND c.xid = l.xid AND c.id = l.id"
"${PSQL[@]}" -d bench -At -c "SELECT 'chains verified ok: ' || count(*) FILTER (WHERE ok) || ' of ' || count(*)
    FROM tenancy.audit_verify()"
# The bound: how long after its write each entry was sealed (background sealer).
"${PSQL[@]}" -d bench -At -c "SELECT format('sealed after (s): p50 %s, p99 %s, max %s',
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)::numeric, 3),
        round(percentile_cont(0.99) WITHIN GROUP (ORDER BY d)::numeric, 3), round(max(d)::numeric, 3))
    FROM (SELECT extract(epoch FROM c.sealed_at - l.at) AS d
          FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
          JOIN tenancy.audit_log l ON l.xid = u.xid AND l.id = u.id) s"
# The same in steady state: without each run's first 1.5 s, when a sealer is
# started afresh (the other variants' runs leave it idle, and an idle sealer
# exits after 1 s) on cores the writers already saturate.
"${PSQL[@]}" -d bench -At -c "SELECT format('sealed after, steady state (s): p50 %s, p99 %s, max %s (%s entries)',
        round(percentile_cont(0.5) WITHIN GROUP (ORDER BY d)::numeric, 3),
        round(percentile_cont(0.99) WITHIN GROUP (ORDER BY d)::numeric, 3), round(max(d)::numeric, 3), count(*))
    FROM (SELECT extract(epoch FROM c.sealed_at - l.at) AS d, l.at,
                 max(l.at) FILTER (WHERE l.gap) OVER (ORDER BY l.at) AS run_start
          FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
          JOIN (SELECT x.xid, x.id, x.at, coalesce(x.at - lag(x.at) OVER (ORDER BY x.at) > interval '1 s', true) AS gap
                FROM tenancy.audit_log x) l ON l.xid = u.xid AND l.id = u.id) s
    WHERE s.at >= s.run_start + interval '1.5 s'"
echo "# CPU time of one backend per row (bench/audit_overhead/cpu_per_row.py):"
PGDATABASE=bench /usr/bin/python3 "$HERE/cpu_per_row.py" || echo "cpu_per_row.py failed (needs python3-psycopg2)"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
