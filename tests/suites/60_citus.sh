# Citus scale-out (docs/operations/scale-out.md): a coordinator and two workers
# on loopback, the extension distributed by main account, the context verified
# on every node. Skipped (and passing) when Citus is not installed.
CT_SUITE=citus
ct_started=$SECONDS
ct_libdir=$("$PG_CONFIG" --pkglibdir)
ct_sharedir=$("$PG_CONFIG" --sharedir)
if [ ! -f "$ct_libdir/citus.so" ] || [ ! -f "$ct_sharedir/extension/citus.control" ]; then
    echo "  skipped: Citus not installed"
    record PASS $CT_SUITE skipped-citus-not-installed
    return 0
fi

CT_WORK=$TENANCY_TEST_WORK/citus
mkdir -p "$CT_WORK" && chmod 0755 "$CT_WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$CT_WORK"
ct_ok=1
# tests/postgresql.conf's settings, with Citus loaded first.
mapfile -t ct_conf < <(grep -v '^\s*#' tests/postgresql.conf | grep -v '^\s*$' | grep -v '^shared_preload_libraries')
ct_conf+=("shared_preload_libraries = 'citus,tenancy'" "max_prepared_transactions = 20"
          "citus.propagate_set_commands = 'local'" "citus.enable_unsafe_triggers = on"
          "citus.shard_count = 4" "citus.log_remote_commands = off"
          "citus.max_adaptive_executor_pool_size = 1")
ct_port_c=$(free_port $((29000 + RANDOM % 1000)))
ct_port_w1=$(free_port $((ct_port_c + 1)))
ct_port_w2=$(free_port $((ct_port_w1 + 1)))
declare -A ct_port=([coord]=$ct_port_c [w1]=$ct_port_w1 [w2]=$ct_port_w2)
for n in coord w1 w2; do
    cluster_init "$CT_WORK/$n" "${ct_port[$n]}" "${ct_conf[@]}" || ct_ok=0
done
# Workers: the superuser may connect (the harness, Citus's metadata sync); any
# other role only with a password that the coordinator alone holds
# (pg_dist_authinfo), so clients cannot reach a worker directly.
for n in w1 w2; do
    printf '%s\n' "local all postgres trust" "host all postgres 127.0.0.1/32 trust" \
        "local all all reject" "host all all 127.0.0.1/32 scram-sha-256" |
        as_postgres tee "$CT_WORK/$n/data/pg_hba.conf" >/dev/null
done
for n in coord w1 w2; do
    [ $ct_ok = 1 ] && { cluster_start "$CT_WORK/$n" || ct_ok=0; }
done

# psql on a node as a role: ct NODE ROLE -c ... (quiet, unaligned, tuples only)
ct() {
    local node=$1 role=$2
    shift 2
    psql -qAtX -h "$CT_WORK/$node" -p "${ct_port[$node]}" -U "$role" -d postgres "$@"
}
CC="ct coord postgres"
ct_check() {  # ct_check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then record PASS $CT_SUITE "$1"; else
        echo "        expected: $2"
        echo "        actual:   $3"
        record FAIL $CT_SUITE "$1"
    fi
}

if [ $ct_ok = 1 ]; then
    for n in coord w1 w2; do
        ct $n postgres -c "CREATE EXTENSION citus" >/dev/null || ct_ok=0
    done
    $CC -c "SELECT citus_set_coordinator_host('127.0.0.1', ${ct_port[coord]})" \
        -c "SELECT citus_add_node('127.0.0.1', ${ct_port[w1]})" \
        -c "SELECT citus_add_node('127.0.0.1', ${ct_port[w2]})" >/dev/null || ct_ok=0
fi
[ $ct_ok = 1 ] && record PASS $CT_SUITE cluster-started || {
    record FAIL $CT_SUITE cluster-started
    tail -20 "$CT_WORK"/*/server.log
}

# The extension: created on the coordinator (Citus propagates it), then
# distributed by the DBA.
if [ $ct_ok = 1 ]; then
    $CC -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "CREATE EXTENSION tenancy" \
        -c "SELECT * FROM tenancy.distribute()" >"$CT_WORK/distribute.out" 2>&1 || {
        ct_ok=0
        cat "$CT_WORK/distribute.out"
    }
    [ $ct_ok = 1 ] && record PASS $CT_SUITE distribute || record FAIL $CT_SUITE distribute
    ct_check extension-on-every-node "t t" \
        "$(for n in w1 w2; do ct $n postgres -c "SELECT count(*) = 1 FROM pg_extension WHERE extname = 'tenancy'"; done | tr '\n' ' ' | sed 's/ $//')"
    ct_check accounts-distributed-by-main-id "h main_id" \
        "$($CC -c "SELECT partmethod, column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition WHERE logicalrelid = 'tenancy.accounts'::regclass" | tr '|' ' ')"
    ct_check tenant-tables-colocated "0" \
        "$($CC -c "SELECT count(DISTINCT colocationid) - 1 FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tenancy' AND p.partmethod = 'h'")"
    ct_check global-tables-are-reference-tables "context_keys plans role_permissions roles" \
        "$($CC -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid WHERE p.partmethod = 'n' AND p.repmodel = 't' AND c.relname IN ('context_keys', 'plans', 'roles', 'role_permissions')")"
fi

echo "   (cluster and distribute() took $((SECONDS - ct_started)) s)"
# ---- tenants: random trees over many main accounts, on both workers ---------
ct_mains=()
if [ $ct_ok = 1 ]; then
    # A client role; on the workers it needs a password only the coordinator has.
    $CC -c "SELECT tenancy.create_client('ct_app')" -c "ALTER ROLE ct_app PASSWORD 'ct-worker-secret'" \
        -c "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, 'ct_app', 'password=ct-worker-secret')" \
        >/dev/null || ct_ok=0
    # An application table protected after distribute(): distributed with accounts.
    $CC -c "CREATE TABLE public.notes (id bigserial, body text NOT NULL)" \
        -c "SELECT tenancy.define_resource('notes')" -c "SELECT tenancy.protect('public.notes', 'notes')" \
        >/dev/null || ct_ok=0
    ct_check protected-table-distributed "h" \
        "$($CC -c "SELECT partmethod FROM pg_dist_partition p WHERE logicalrelid = 'public.notes'::regclass AND colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'tenancy.accounts'::regclass)")"
    for i in $(seq 1 12); do
        ct_mains+=("$($CC -c "SELECT tenancy.create_main_account('Agency $i', 'owner$i@example.test', 'a long enough password')")")
    done
    # Each main account: a random tree of 3 to 6 subaccounts, built in context
    # by its owner key; every account gets a key of its own and two notes.
    for m in "${ct_mains[@]}"; do
        root_key=$($CC -c "SELECT tenancy.admin_create_api_key('$m', 'root')")
        accts=("$m")
        for _ in $(seq 1 $((3 + RANDOM % 4))); do
            parent=${accts[$((RANDOM % ${#accts[@]}))]}
            a=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$root_key')" \
                -c "SELECT tenancy.create_account('$parent', 'sub of $parent')" -c "COMMIT" 2>/dev/null | sed -n 2p)
            [ -n "$a" ] && accts+=("$a")
        done
        for a in "${accts[@]}"; do
            echo "$a $($CC -c "SELECT tenancy.admin_create_api_key('$a', 'key of $a', 'admin')")"
        done
    done >"$CT_WORK/keys"
    while read -r a key; do
        ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$key')" \
            -c "INSERT INTO public.notes (body) VALUES ('note 1 of $a'), ('note 2 of $a')" -c "COMMIT" >/dev/null
    done <"$CT_WORK/keys"
    ct_check mains-on-both-workers "2" "$(for mid in $($CC -c "SELECT DISTINCT main_id FROM tenancy.accounts"); do
        $CC -c "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('tenancy.accounts', $mid)"
    done | sort -u | wc -l)"
    ct_check every-account-has-two-notes "$(wc -l <"$CT_WORK/keys")" \
        "$($CC -c "SELECT count(*) FROM (SELECT account_path FROM public.notes GROUP BY 1 HAVING count(*) = 2) x")"
fi

# ---- each key sees exactly its subtree, through the coordinator -----------
if [ $ct_ok = 1 ]; then
    bad=0
    while read -r a key; do
        want=$($CC -c "WITH me AS (SELECT path FROM tenancy.accounts WHERE public_id = '$a')
            SELECT (SELECT count(*) FROM tenancy.accounts x, me WHERE x.path OPERATOR(tenancy.<@) me.path) || ' ' ||
                   (SELECT count(*) FROM tenancy.api_keys x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path) || ' ' ||
                   (SELECT count(*) FROM public.notes x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path)")
        got=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$key')" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM tenancy.api_keys) || ' ' || (SELECT count(*) FROM public.notes)" \
            -c "COMMIT" 2>&1 | sed -n 2p)
        [ "$want" = "$got" ] || { bad=$((bad + 1)); echo "        $a: expected $want, got $got"; }
    done <"$CT_WORK/keys"
    ct_check select-exactly-the-subtree-accounts-keys-notes 0 $bad

    # Writes: UPDATE and DELETE reach exactly the subtree's rows; INSERT lands
    # in the active account; a row for another main account is refused.
    bad=0
    while read -r a key; do
        n=$($CC -c "WITH me AS (SELECT path FROM tenancy.accounts WHERE public_id = '$a')
            SELECT (SELECT count(*) FROM public.notes x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path)")
        got=$(ct coord ct_app -v ON_ERROR_STOP=1 -c "BEGIN" -c "SELECT tenancy.authenticate('$key')" \
            -c "WITH u AS (UPDATE public.notes SET body = body || '!' RETURNING 1) SELECT count(*) FROM u" \
            -c "WITH i AS (INSERT INTO public.notes (body) VALUES ('new') RETURNING account_path) SELECT count(*) FROM i WHERE account_path OPERATOR(tenancy.=) tenancy.current_path()" \
            -c "WITH d AS (DELETE FROM public.notes RETURNING 1) SELECT count(*) FROM d" \
            -c "ROLLBACK" 2>&1 | sed -n '2,4p' | tr '\n' ' ')
        [ "$got" = "$n 1 $((n + 1)) " ] || { bad=$((bad + 1)); echo "        $a: expected '$n 1 $((n + 1)) ', got '$got'"; }
        [ $bad -gt 3 ] && break
    done < <(head -20 "$CT_WORK/keys")
    ct_check update-insert-delete-exactly-the-subtree 0 $bad
    read -r a1 k1 < <(head -1 "$CT_WORK/keys")
    other=$(grep -v "^${a1%%_*}" "$CT_WORK/keys" | head -1 | cut -d' ' -f1)
    p_own=$($CC -c "SELECT path FROM tenancy.accounts WHERE public_id = '$a1'")
    read -r p_other m_other < <($CC -F ' ' -c "SELECT path, main_id FROM tenancy.accounts WHERE public_id = '$other'")
    refused=0
    for values in "'$p_other', DEFAULT" "'$p_own', $m_other" "'$p_other', $m_other"; do
        out=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k1')" \
            -c "INSERT INTO public.notes (body, account_path, main_id) VALUES ('x', $values)" -c "ROLLBACK" 2>&1)
        grep -q ERROR <<<"$out" && refused=$((refused + 1))
    done
    ct_check insert-into-another-main-refused 3 $refused

    # Accounts and keys through the API in context: create, rename, revoke.
    read -r m1 mk1 < <(grep "^${ct_mains[0]} " "$CT_WORK/keys")
    # (Citus refuses to read, as the client, placements that a SECURITY
    # DEFINER function wrote in the same transaction: the count is read in the next.)
    out=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$mk1')" \
        -c "SELECT tenancy.create_account('${ct_mains[0]}', 'made in context') IS NOT NULL" -c "COMMIT" \
        -c "BEGIN" -c "SELECT tenancy.authenticate('$mk1')" \
        -c "SELECT count(*) FROM tenancy.accounts WHERE name = 'made in context'" \
        -c "SELECT tenancy.create_account('${ct_mains[1]}', 'elsewhere')" -c "ROLLBACK" 2>&1)
    ct_check api-create-account-in-subtree-only "t 1 not-found" \
        "$(sed -n '2p;4p' <<<"$out" | tr '\n' ' ')$(grep -q 'not found' <<<"$out" && echo not-found)"
fi

# ---- router and multi-shard queries -------------------------------------------
if [ $ct_ok = 1 ]; then
    m=${ct_mains[3]}
    mid=$($CC -c "SELECT main_id FROM tenancy.accounts WHERE public_id = '$m'")
    ct_check router-query-one-task "Task Count: 1" \
        "$($CC -c "EXPLAIN SELECT * FROM tenancy.accounts WHERE main_id = $mid" | grep -o 'Task Count: [0-9]*')"
    ct_check multi-shard-dba-query \
        "$($CC -c "SELECT count(*) FROM tenancy.accounts")" \
        "$(( $(wc -l <"$CT_WORK/keys") + 1 ))"
fi

# ---- the context on every node --------------------------------------------------
if [ $ct_ok = 1 ]; then
    read -r a1 k1 < <(head -1 "$CT_WORK/keys")
    # Propagation off: an error, not another tenant's rows.
    out=$(ct coord ct_app -c "BEGIN" -c "SET LOCAL citus.propagate_set_commands = 'none'" \
        -c "SELECT tenancy.authenticate('$k1')" -c "ROLLBACK" 2>&1)
    ct_check propagation-off-is-an-error 1 "$(grep -c "propagate_set_commands = 'local'" <<<"$out")"
    out=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k1') IS NOT NULL" \
        -c "SET LOCAL citus.propagate_set_commands = 'none'" -c "SELECT count(*) FROM public.notes" -c "ROLLBACK" 2>&1)
    ct_check propagation-turned-off-later-is-an-error 1 "$(grep -c "propagate_set_commands = 'local'" <<<"$out")"
    # No context: no rows, on any node's shard.
    ct_check no-context-no-rows "0 0 0" \
        "$(ct coord ct_app -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM tenancy.api_keys) || ' ' || (SELECT count(*) FROM public.notes)")"
    # A token captured in one transaction (as a worker would log it) and set
    # again in another: no context.
    tok=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k1')" \
        -c "SELECT current_setting('tenancy.context')" -c "COMMIT" | sed -n 2p)
    ct_check token-captured "t" "$([ ${#tok} -gt 40 ] && echo t)"
    ct_check replayed-token-no-rows-through-coordinator "0 0" \
        "$(ct coord ct_app -c "BEGIN" -c "SET LOCAL tenancy.context = '$tok'" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM public.notes)" -c "COMMIT" | tail -1)"
    # ... even with the captured transaction's distributed id claimed.
    xid=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k1')" \
        -c "SELECT format('%s, %s, %L', initiator_node_identifier, transaction_number, transaction_stamp) FROM get_current_transaction_id()" \
        -c "SELECT current_setting('tenancy.context')" -c "COMMIT" | sed -n '2,3p' | tr '\n' '|')
    out=$(ct coord ct_app -c "BEGIN" -c "SELECT assign_distributed_transaction_id(${xid%%|*})" \
        -c "SET LOCAL tenancy.context = '$(cut -d'|' -f2 <<<"$xid")'" -c "SELECT count(*) FROM public.notes" -c "ROLLBACK" 2>&1)
    ct_check claimed-distributed-id-refused-on-coordinator "1 0" \
        "$(grep -c 'permission denied' <<<"$out") $(grep -c '^[1-9]' <<<"$out")"
    # Workers take no direct client connections ...
    out=$(PGPASSWORD= psql -w -qAtX -h 127.0.0.1 -p "${ct_port[w1]}" -U ct_app -d postgres -c "SELECT 1" 2>&1)
    ct_check direct-worker-connection-refused 1 "$(grep -c 'password authentication failed\|no password supplied\|rejects connection' <<<"$out")"
    # ... and a token replayed on one (a leaked worker password) is no context.
    for n in w1 w2; do
        got=$(PGPASSWORD=ct-worker-secret psql -qAtX -h 127.0.0.1 -p "${ct_port[$n]}" -U ct_app -d postgres \
            -c "BEGIN" -c "SET LOCAL tenancy.context = '$(cut -d'|' -f2 <<<"$xid")'" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM public.notes)" -c "COMMIT" 2>&1 | tail -1)
        # No rows, or an error: never a count above zero.
        grep -q 'ERROR' <<<"$got" && got="0 0"
        ct_check "replayed-token-on-worker-$n-no-rows" "0 0" "$got"
    done
    # Revocation and deactivation: from the next transaction.
    read -r a2 k2 < <(sed -n 2p "$CT_WORK/keys")
    $CC -c "UPDATE tenancy.api_keys SET revoked_at = now() WHERE name = 'key of $a2'" >/dev/null
    out=$(ct coord ct_app -c "SELECT tenancy.authenticate('$k2')" 2>&1)
    ct_check revoked-key-refused-next-transaction 1 "$(grep -c 'revoked' <<<"$out")"
    # act_as: the subtree of the account acted in, for this transaction only;
    # deactivation: the subaccount's key stops from the next transaction. (The
    # newest subaccount of the first main account: the keys file's lines 2 and
    # 3, used above and below, are older ones.)
    sub=$($CC -c "SELECT public_id FROM tenancy.accounts WHERE main_id = (SELECT main_id FROM tenancy.accounts WHERE public_id = '${ct_mains[0]}') AND parent_id IS NOT NULL AND name <> 'made in context' ORDER BY id DESC LIMIT 1")
    sub_key=$(grep "^$sub " "$CT_WORK/keys" | cut -d' ' -f2)
    want=$($CC -c "WITH me AS (SELECT path FROM tenancy.accounts WHERE public_id = '$sub')
        SELECT (SELECT count(*) FROM tenancy.accounts x, me WHERE x.path OPERATOR(tenancy.<@) me.path)")
    all=$($CC -c "SELECT count(*) FROM tenancy.accounts WHERE main_id = (SELECT main_id FROM tenancy.accounts WHERE public_id = '${ct_mains[0]}')")
    out=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$mk1') IS NOT NULL" -c "SELECT tenancy.act_as('$sub') IS NOT NULL" \
        -c "SELECT count(*) FROM tenancy.accounts" -c "COMMIT" \
        -c "BEGIN" -c "SELECT tenancy.authenticate('$mk1') IS NOT NULL" -c "SELECT count(*) FROM tenancy.accounts" -c "COMMIT" 2>&1)
    ct_check act-as-this-transaction-only "t t $want t $all" "$(tr '\n' ' ' <<<"$out" | sed 's/ $//')"
    out=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$mk1') IS NOT NULL" \
        -c "SELECT tenancy.deactivate_account('$sub')" -c "COMMIT" 2>&1)
    out+=$(ct coord ct_app -c "SELECT tenancy.authenticate('$sub_key')" 2>&1)
    grep -q 'inactive' <<<"$out" || echo "$sub $sub_key: $out"
    ct_check deactivated-account-refused-next-transaction 1 "$(grep -c 'inactive' <<<"$out")"
fi

# ---- moves across main accounts ----------------------------------------------------
if [ $ct_ok = 1 ]; then
    # (promote_account(): tests/citus/40_promote.sh, after the other parts.)
    sub4=$($CC -c "SELECT public_id FROM tenancy.accounts WHERE parent_id IS NOT NULL AND status = 'active' ORDER BY id LIMIT 1")
    # transfer_ownership() stays within one main account: it works on Citus.
    out=$($CC -c "SELECT tenancy.transfer_ownership('$sub4', 'owner1@example.test')" 2>&1)
    ct_check transfer-ownership-on-citus "owner 0" \
        "$($CC -c "SELECT m.role FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id WHERE a.public_id = '$sub4' AND u.email = 'owner1@example.test'") $(grep -c ERROR <<<"$out")"
fi

# ---- a worker restart -------------------------------------------------------------
if [ $ct_ok = 1 ]; then
    read -r a3 k3 < <(sed -n 3p "$CT_WORK/keys")
    before=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k3') IS NOT NULL" -c "SELECT count(*) FROM public.notes" -c "COMMIT" | tail -1)
    cluster_stop "$CT_WORK/w1" && cluster_start "$CT_WORK/w1"
    after=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k3') IS NOT NULL" -c "SELECT count(*) FROM public.notes" -c "COMMIT" 2>&1 | tail -1)
    ct_check worker-restart-recovers "$before" "$after"
    ct_check worker-restart-all-notes "$(( $(wc -l <"$CT_WORK/keys") * 2 ))" "$($CC -c "SELECT count(*) FROM public.notes")"
fi

# ---- further parts, on the same cluster (tests/citus/*.sh, in name order) ----------
# Each sees ct, CC, ct_check, ct_ok, ct_port, ct_mains and $CT_WORK/keys
# (one "account key" line per account made above).
for ct_part in tests/citus/*.sh; do
    [ -f "$ct_part" ] || continue
    ct_part_started=$SECONDS
    [ $ct_ok = 1 ] && . "$ct_part"
    echo "   ($ct_part took $((SECONDS - ct_part_started)) s)"
done

# CITUS_KEEP_RUNNING=1 (with KEEP_TEST_DIR=1): leave the three nodes up for a
# developer to look at; they are stopped with pg_ctl -D DIR/data stop.
if [ -n "${CITUS_KEEP_RUNNING:-}" ]; then
    echo "  left running: coordinator $CT_WORK/coord port ${ct_port[coord]}, workers ${ct_port[w1]} ${ct_port[w2]}"
    echo "coord=${ct_port[coord]} w1=${ct_port[w1]} w2=${ct_port[w2]} dir=$CT_WORK" >"$CT_WORK/ports"
else
    for n in w2 w1 coord; do
        cluster_running "$CT_WORK/$n" && cluster_stop "$CT_WORK/$n"
    done
fi
true
