# authenticate() on a hot standby and in READ ONLY transactions: a primary and a
# streaming standby of its own (the shared test cluster is left alone).
STANDBY_WORK=$TENANCY_TEST_WORK/standby
mkdir -p "$STANDBY_WORK" && chmod 0755 "$STANDBY_WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$STANDBY_WORK"
primary_port=$(free_port $((28000 + RANDOM % 1000)))
standby_port=$(free_port $((primary_port + 1)))
standby_ok=1
mapfile -t standby_extra_conf < <(grep -v '^\s*#' tests/postgresql.conf | grep -v '^\s*$')
cluster_init "$STANDBY_WORK/primary" "$primary_port" "wal_level = replica" "max_wal_senders = 4" \
    "hot_standby = on" "${standby_extra_conf[@]}" &&
    echo "local replication all trust" | as_postgres tee -a "$STANDBY_WORK/primary/data/pg_hba.conf" >/dev/null &&
    cluster_start "$STANDBY_WORK/primary" || standby_ok=0
P="psql -qAtX -h $STANDBY_WORK/primary -p $primary_port -U postgres"
if [ $standby_ok = 1 ]; then
    $P -c "CREATE EXTENSION tenancy" >/dev/null &&
    $P -c "SELECT tenancy.create_client('standby_client')" >/dev/null &&
    main=$($P -c "SELECT tenancy.create_main_account('Standby Co', 'standby@example.test', 'a long enough password')") &&
    key=$($P -c "SELECT tenancy.admin_create_api_key('$main', 'reader', 'viewer')") &&
    $P -c "SELECT pg_switch_wal()" >/dev/null || standby_ok=0
fi
if [ $standby_ok = 1 ]; then
    mkdir -p "$STANDBY_WORK/standby" && chmod 0755 "$STANDBY_WORK/standby"
    [ "$(id -u)" = 0 ] && chown postgres: "$STANDBY_WORK/standby"
    as_postgres "$PG_BINDIR/pg_basebackup" -h "$STANDBY_WORK/primary" -p "$primary_port" -U postgres \
        -D "$STANDBY_WORK/standby/data" -R -X stream >/dev/null 2>&1 &&
    {
        echo "port = $standby_port"
        echo "unix_socket_directories = '$STANDBY_WORK/standby'"
    } | as_postgres tee -a "$STANDBY_WORK/standby/data/postgresql.conf" >/dev/null &&
    cluster_start "$STANDBY_WORK/standby" || standby_ok=0
fi
S="psql -qAtX -h $STANDBY_WORK/standby -p $standby_port -U standby_client postgres"
if [ $standby_ok = 1 ]; then
    record PASS standby streaming-standby-started
    [ "$($S -c "SELECT pg_is_in_recovery()")" = t ] && record PASS standby is-in-recovery || record FAIL standby is-in-recovery
    out=$($S -c "BEGIN" -c "SELECT tenancy.authenticate('$key') = '$main'" -c "SELECT count(*) FROM tenancy.accounts" -c "COMMIT" 2>&1)
    [ "$(echo "$out" | tr '\n' ' ')" = "t 1 " ] && record PASS standby authenticate-on-standby ||
        { echo "$out"; record FAIL standby authenticate-on-standby; }
    out=$($S -c "SELECT tenancy.authenticate('$key', session => true) = '$main'" -c "SELECT count(*) FROM tenancy.accounts" -c "SELECT count(*) FROM tenancy.accounts" 2>&1)
    [ "$(echo "$out" | tr '\n' ' ')" = "t 1 1 " ] && record PASS standby session-context-on-standby ||
        { echo "$out"; record FAIL standby session-context-on-standby; }
    out=$($S -c "SELECT count(*) FROM tenancy.accounts" 2>&1)
    [ "$out" = 0 ] && record PASS standby no-context-no-rows-on-standby || { echo "$out"; record FAIL standby no-context-no-rows-on-standby; }
    # Revocation on the primary reaches the standby's next authentication.
    $P -c "UPDATE tenancy.api_keys SET revoked_at = now() WHERE name = 'reader'" >/dev/null
    for _ in $(seq 50); do
        out=$(psql -qAtX -h "$STANDBY_WORK/standby" -p "$standby_port" -U postgres postgres \
            -c "SELECT revoked_at IS NOT NULL FROM tenancy.api_keys WHERE name = 'reader'")
        [ "$out" = t ] && break
        sleep 0.1
    done
    out=$($S -c "SELECT tenancy.authenticate('$key')" 2>&1)
    grep -q "revoked" <<<"$out" && record PASS standby revoked-key-refused-on-standby ||
        { echo "$out"; record FAIL standby revoked-key-refused-on-standby; }
else
    record FAIL standby streaming-standby-started
    tail -20 "$STANDBY_WORK"/*/server.log 2>/dev/null
fi
cluster_running "$STANDBY_WORK/standby" && cluster_stop "$STANDBY_WORK/standby"
cluster_running "$STANDBY_WORK/primary" && cluster_stop "$STANDBY_WORK/primary"
true
