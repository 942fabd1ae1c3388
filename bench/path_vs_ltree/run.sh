#!/usr/bin/env bash
# account_path vs ltree vs an adjacency list, on one machine in one run.
#
#   bench/path_vs_ltree/run.sh            # PG_CONFIG from the environment (default pg_config)
#
# Installs the extension into the server of $PG_CONFIG (set BENCH_SKIP_INSTALL=1
# to skip), starts a throw-away cluster with tests/lib/cluster.sh (or uses the
# server at BENCH_PGHOST/BENCH_PGPORT when both are set), loads 1.1 M accounts
# and 2 x 5 M rows (about 1.5 GB on disk), measures, prints the report and
# keeps it in $BENCH_OUT (default /tmp/path_vs_ltree-last-run.txt).
# BENCH_MAINS / BENCH_BIG_ROWS shrink the data for a smoke run. Needs contrib (ltree). Not part of scripts/test. Takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PG_CONFIG=${PG_CONFIG:-pg_config}
out=${BENCH_OUT:-/tmp/path_vs_ltree-last-run.txt}
if [ -z "${BENCH_SKIP_INSTALL:-}" ]; then
    make -s -j2 PG_CONFIG="$PG_CONFIG" >/dev/null
    make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
fi
. tests/lib/cluster.sh
if [ -n "${BENCH_PGHOST:-}" ] && [ -n "${BENCH_PGPORT:-}" ]; then
    export PGHOST=$BENCH_PGHOST PGPORT=$BENCH_PGPORT
else
    work=$(mktemp -d /tmp/tenancy-bench.XXXXXX)
    chmod 0755 "$work"
    port=$(free_port $((24000 + RANDOM % 3000)))
    trap 'cluster_running "$work/pg" && cluster_stop "$work/pg"; rm -rf "$work"' EXIT
    cluster_init "$work/pg" "$port" "shared_buffers = 2GB" "work_mem = 64MB" \
        "maintenance_work_mem = 512MB" "max_wal_size = 8GB" "checkpoint_timeout = 30min" \
        "synchronous_commit = off" "max_parallel_workers_per_gather = 0" "jit = off"
    cluster_start "$work/pg"
    export PGHOST=$work/pg PGPORT=$port
fi
export PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-postgres}
psql_run() { "$("$PG_CONFIG" --bindir)/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
{
    echo "# path_vs_ltree $(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm), $(nproc) cores," \
        "$(free -g | awk '/^Mem:/ {print $2}') GiB, $(psql_run -Atc 'SHOW server_version')"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    start=$(date +%s)
    psql_run ${BENCH_MAINS:+-v mains=$BENCH_MAINS} ${BENCH_BIG_ROWS:+-v big_rows=$BENCH_BIG_ROWS} \
        -f bench/path_vs_ltree/setup.sql
    echo "# loaded in $(( $(date +%s) - start )) s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    psql_run -f bench/path_vs_ltree/measure.sql
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$out"
