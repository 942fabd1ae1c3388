# Throw-away PostgreSQL clusters for tests and the local demo.
# PostgreSQL refuses to run as root, so when we are root the server runs as the
# `postgres` user; the cluster directory is made readable and writable for it.
#
#   cluster_init DIR PORT [postgresql.conf lines...]
#   cluster_start DIR / cluster_stop DIR / cluster_running DIR
# After cluster_init, connect with: PGHOST=DIR PGPORT=PORT PGUSER=postgres.

PG_CONFIG=${PG_CONFIG:-pg_config}
PG_BINDIR=$("$PG_CONFIG" --bindir)

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cluster_init() {
    local dir=$1 port=$2
    shift 2
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 0755 "$dir"
    as_postgres "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 \
        --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        echo "max_connections = 100"
        for line in "$@"; do echo "$line"; done
    } | as_postgres tee -a "$dir/data/postgresql.conf" >/dev/null
}

cluster_start() {
    as_postgres "$PG_BINDIR/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
    as_postgres "$PG_BINDIR/pg_ctl" -D "$1/data" -m fast -w -t 60 stop >/dev/null
}

cluster_running() {
    as_postgres "$PG_BINDIR/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

# A free TCP port on loopback: the first from $1 (default 25432) nothing
# listens on, below the kernel's ephemeral range (32768-60999): a port there may be the local end of
# an outgoing connection (the gateway tests open thousands), and a server
# could not bind it although nothing listens.
free_port() {
    local port
    for port in $(seq "${1:-25432}" 32000); do
        if ! (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}
