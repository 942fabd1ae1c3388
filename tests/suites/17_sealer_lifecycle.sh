# The background sealer's life (extension/src/audit_worker.cpp), in a cluster
# of its own: taken off tenancy.audit_databases, a database's sealer stops on
# the reload, also while its writers keep it busy (it would otherwise seal on
# until a quiet moment). A listed database that does not exist is reported
# once, costs no FATAL line a second, and is sealed as soon as it is created.
# Failed logins rolled back in a database that is not listed are written
# again by a login audit writer (extension/src/login_queue.cpp).
LIFE_WORK=$TENANCY_TEST_WORK/lifecycle
mkdir -p "$LIFE_WORK" && chmod 0755 "$LIFE_WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$LIFE_WORK"
life_port=$(free_port $((28000 + RANDOM % 1000)))
if cluster_init "$LIFE_WORK/pg" "$life_port" "shared_preload_libraries = 'tenancy'" \
        "tenancy.audit_databases = 'lifecycle,nosuchdb'" && cluster_start "$LIFE_WORK/pg"; then
    L="psql -qAtX -v ON_ERROR_STOP=1 -h $LIFE_WORK/pg -p $life_port -U postgres"
    $L -d postgres -c "CREATE DATABASE lifecycle"
    $L -d lifecycle -c "CREATE EXTENSION tenancy" \
        -c "SELECT tenancy.create_main_account('Life', 'life@life.test', 'life-pass-1')" >/dev/null
    sealer_pid() {
        $L -d postgres -c "SELECT pid FROM pg_stat_activity
                           WHERE backend_type = 'tenancy audit sealer' AND datname = 'lifecycle'"
    }
    # Writers commit an entry every 20 ms for about 8 s.
    $L -d lifecycle -c "DO \$\$
        DECLARE m bigint; p tenancy.account_path;
        BEGIN
            SELECT a.main_id, a.path INTO m, p FROM tenancy.accounts a WHERE a.parent_id IS NULL LIMIT 1;
            FOR i IN 1..400 LOOP
                PERFORM tenancy._audit_record(m, p, 'test.busy', 'x', NULL);
                COMMIT;
                PERFORM pg_sleep(0.02);
            END LOOP;
        END \$\$" >/dev/null 2>"$LIFE_WORK/writer.err" &
    writer=$!
    busy_pid=""
    for _ in $(seq 1 50); do
        busy_pid=$(sealer_pid)
        [ -n "$busy_pid" ] && break
        sleep 0.1
    done
    [ -n "$busy_pid" ] && record PASS sealer-lifecycle started-for-a-busy-database ||
        record FAIL sealer-lifecycle started-for-a-busy-database
    $L -d postgres -c "ALTER SYSTEM SET tenancy.audit_databases = ''" -c "SELECT pg_reload_conf()" >/dev/null
    stopped=no
    for _ in $(seq 1 30); do
        if [ -z "$(sealer_pid)" ]; then stopped=yes; break; fi
        sleep 0.1
    done
    # Within 3 s, while the writers are still at it.
    if [ "$stopped" = yes ] && kill -0 "$writer" 2>/dev/null; then
        record PASS sealer-lifecycle stops-when-unlisted-while-busy
    else
        echo "sealer stopped: $stopped; writer still running: $(kill -0 "$writer" 2>/dev/null && echo yes || echo no)"
        record FAIL sealer-lifecycle stops-when-unlisted-while-busy
    fi
    wait "$writer"
    # Listed again: a sealer comes back and seals what was written meanwhile.
    $L -d postgres -c "ALTER SYSTEM RESET tenancy.audit_databases" -c "SELECT pg_reload_conf()" >/dev/null
    sealed=no
    for _ in $(seq 1 100); do
        left=$($L -d lifecycle -c "SELECT count(*) FROM tenancy.audit_log l WHERE NOT EXISTS (
                   SELECT FROM tenancy.audit_chain c WHERE c.main_id = l.main_id AND l.id = ANY (c.entry_ids))")
        if [ "$left" = 0 ]; then sealed=yes; break; fi
        sleep 0.1
    done
    [ "$sealed" = yes ] && [ "$($L -d lifecycle -c "SELECT bool_and(ok) FROM tenancy.audit_verify()")" = t ] &&
        record PASS sealer-lifecycle relisted-seals-the-backlog ||
        { echo "unsealed entries left: $left"; record FAIL sealer-lifecycle relisted-seals-the-backlog; }
    # The database that does not exist: no sealer tried (no FATAL line), the
    # launcher said so once per configuration (the reloads above re-listed it).
    fatal=$(grep -c 'FATAL: *database "nosuchdb" does not exist' "$LIFE_WORK/pg/server.log")
    reported=$(grep -c 'database "nosuchdb" in tenancy.audit_databases does not exist' "$LIFE_WORK/pg/server.log")
    [ "$fatal" = 0 ] && [ "$reported" -ge 1 ] && [ "$reported" -le 2 ] &&
        record PASS sealer-lifecycle missing-database-reported-once ||
        { echo "FATAL lines: $fatal, reports: $reported"; record FAIL sealer-lifecycle missing-database-reported-once; }
    # Created: its sealer starts within the launcher's next round or so.
    $L -d postgres -c "CREATE DATABASE nosuchdb"
    appeared=no
    for _ in $(seq 1 100); do
        if [ -n "$($L -d postgres -c "SELECT pid FROM pg_stat_activity
                   WHERE backend_type = 'tenancy audit sealer' AND datname = 'nosuchdb'")" ]; then
            appeared=yes; break
        fi
        sleep 0.1
    done
    [ "$appeared" = yes ] && record PASS sealer-lifecycle sealer-starts-when-database-appears ||
        record FAIL sealer-lifecycle sealer-starts-when-database-appears
    # A database not listed: five failed logins rolled back still leave their
    # login.failure entries and table rows (written by the login audit writer).
    $L -d postgres -c "CREATE DATABASE unlisted"
    $L -d unlisted -c "CREATE EXTENSION tenancy" \
        -c "SELECT tenancy.create_main_account('Unlisted', 'un@un.test', 'un-pass-1')" >/dev/null
    $L -d unlisted -c "BEGIN" \
        -c "SELECT count(*) FROM generate_series(1, 5) g WHERE tenancy.login('un@un.test', 'bad-' || g) IS NULL" \
        -c "ROLLBACK" >/dev/null 2>&1
    written=""
    for _ in $(seq 1 100); do
        written=$($L -d unlisted -c "SELECT (SELECT count(*) FROM tenancy.audit_log WHERE action = 'login.failure'
                                             AND target = 'un@un.test' AND change->>'rolled_back' = 'true')
                                         || '/' || (SELECT count(*) FROM tenancy.login_failures
                                                   WHERE key_hash = tenancy.sha256_hex('user:un@un.test'))")
        [ "$written" = 5/5 ] && break
        sleep 0.1
    done
    [ "$written" = 5/5 ] && record PASS sealer-lifecycle rolled-back-logins-written-in-unlisted-database ||
        { echo "entries/rows written: $written"; record FAIL sealer-lifecycle rolled-back-logins-written-in-unlisted-database; }
    cluster_stop "$LIFE_WORK/pg"
else
    record FAIL sealer-lifecycle cluster-started
    tail -20 "$LIFE_WORK/pg/server.log" 2>/dev/null
fi
true
