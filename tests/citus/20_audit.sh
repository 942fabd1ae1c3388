# The audit log on Citus (docs/operations/scale-out.md): every entry of a main
# account is in the log of the worker holding its shard, sealed there, and
# audit_verify() through the coordinator runs where each chain lives and sees
# tampering on a worker. Sourced by tests/suites/60_citus.sh (its cluster).

# The worker (w1, w2) holding main account id $1's shard.
ca_node_of() {
    local port
    port=$($CC -c "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('tenancy.accounts', $1)")
    for n in w1 w2; do [ "${ct_port[$n]}" = "$port" ] && echo $n; done
}
# ca_wait NAME SQL [NODE...]: until the query prints t on each node (coord, w1
# and w2 by default), at most 60 s (the sealers run every 200 ms); records a
# failure otherwise.
ca_wait() {
    local name=$1 sql=$2 i n all nodes=("${@:3}")
    [ ${#nodes[@]} = 0 ] && nodes=(coord w1 w2)
    for i in $(seq 1 120); do
        all=t
        for n in "${nodes[@]}"; do
            [ "$(ct $n postgres -c "$sql" 2>&1)" = t ] || all=f
        done
        [ $all = t ] && return 0
        sleep 0.5
    done
    echo "        still not true after 60 s: $sql"
    record FAIL $CT_SUITE "$name"
    return 1
}
# Every entry of this node's log is in one of its chains.
CA_ALL_SEALED="SELECT NOT EXISTS (SELECT FROM tenancy.audit_log l WHERE NOT EXISTS (
    SELECT FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
    WHERE c.main_id = l.main_id AND u.xid = l.xid AND u.id = l.id))"

ca_mid=()
declare -A ca_node
for m in "${ct_mains[@]}"; do
    mid=$($CC -c "SELECT main_id FROM tenancy.accounts WHERE public_id = '$m'")
    ca_mid+=("$mid")
    ca_node[$mid]=$(ca_node_of "$mid")
done

# Events the coordinator writes for each main account, in context with its
# owner's admin key: an application event (audit_event) and a context switch
# (act_as) into a subaccount.
bad=0
for i in "${!ct_mains[@]}"; do
    m=${ct_mains[$i]}
    key=$(grep "^$m " "$CT_WORK/keys" | cut -d' ' -f2)
    sub=$($CC -c "SELECT public_id FROM tenancy.accounts WHERE main_id = ${ca_mid[$i]} AND parent_id IS NOT NULL ORDER BY id LIMIT 1")
    out=$(ct coord ct_app -v ON_ERROR_STOP=1 -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NOT NULL" \
        -c "SELECT tenancy.audit_event('app.citus_audit', 'main $m', '{\"n\": $i}') IS NOT NULL" \
        -c "SELECT tenancy.act_as('$sub') IS NOT NULL" -c "COMMIT" 2>&1)
    [ "$(tr '\n' ' ' <<<"$out")" = "t t t " ] || { bad=$((bad + 1)); echo "        $m: $out"; }
done
ct_check audit-coordinator-events-written 0 $bad

# The coordinator's sealer moves them to the workers; every node seals its log.
ca_wait audit-moved-and-sealed "SELECT NOT EXISTS (SELECT FROM tenancy.audit_log WHERE main_id <> 0 AND
    (SELECT count(*) FROM pg_dist_local_group WHERE groupid = 0) = 1) AND ($CA_ALL_SEALED)" &&
    record PASS $CT_SUITE audit-moved-and-sealed
ct_check audit-coordinator-keeps-no-main-account-entry 0 \
    "$($CC -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id <> 0")"

# Each main account's entries (row changes on its shard, and the coordinator's
# events) are on the worker holding its shard, none on the other worker.
bad=0
for mid in "${ca_mid[@]}"; do
    own=${ca_node[$mid]}
    other=$([ "$own" = w1 ] && echo w2 || echo w1)
    got=$(ct "$own" postgres -c "SELECT count(*) FILTER (WHERE action = 'insert' AND target = 'tenancy.accounts') > 0,
                                        count(*) FILTER (WHERE action = 'insert' AND target = 'public.notes') > 0,
                                        count(*) FILTER (WHERE action = 'app.citus_audit') = 1,
                                        count(*) FILTER (WHERE action = 'context.switch') > 0
                                 FROM tenancy.audit_log WHERE main_id = $mid")
    got+=" $(ct "$other" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid")"
    [ "$got" = "t|t|t|t 0" ] || { bad=$((bad + 1)); echo "        main $mid on $own: $got"; }
done
ct_check audit-entries-on-the-shards-worker-only 0 $bad
# ... in a chain of that worker's, under its head.
bad=0
for mid in "${ca_mid[@]}"; do
    got=$(ct "${ca_node[$mid]}" postgres -c "SELECT (SELECT sum(n) FROM tenancy.audit_chain WHERE main_id = $mid)
        = (SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid)
        AND EXISTS (SELECT FROM tenancy.audit_heads WHERE main_id = $mid)")
    [ "$got" = t ] || { bad=$((bad + 1)); echo "        main $mid: $got"; }
done
ct_check audit-sealed-on-the-shards-worker 0 $bad
# audit_entries(): the DBA reads every node's log through the coordinator,
# each entry once (a main account's on its worker; the installation's on the
# coordinator); no client may call it.
bad=0
for mid in "${ca_mid[@]}"; do
    want=$(ct "${ca_node[$mid]}" postgres -c "SELECT count(*) || ' ' || count(DISTINCT id) FROM tenancy.audit_log WHERE main_id = $mid")
    got=$($CC -c "SELECT count(*) || ' ' || count(DISTINCT id) FROM tenancy.audit_entries($mid) WHERE main_id = $mid")
    [ "$got" = "$want" ] || { bad=$((bad + 1)); echo "        main $mid: expected $want, got $got"; }
done
ct_check audit-entries-reads-each-main-on-its-worker 0 $bad
want=0
for n in coord w1 w2; do want=$((want + $(ct $n postgres -c "SELECT count(*) FROM tenancy.audit_log"))); done
ct_check audit-entries-reads-every-node "$want" "$($CC -c "SELECT count(*) FROM tenancy.audit_entries()")"
ct_check audit-entries-refused-to-clients 1 \
    "$(ct coord ct_app -c "SELECT count(*) FROM tenancy.audit_entries()" 2>&1 | grep -c 'permission denied')"

# audit_verify through the coordinator: the DBA's, per main account and for
# all chains on every node; in context, the main account's and a subaccount's.
bad=0
for i in "${!ct_mains[@]}"; do
    mid=${ca_mid[$i]}
    n=$(ct "${ca_node[$mid]}" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid")
    got=$($CC -c "SELECT ok, entries, main_id FROM tenancy.audit_verify('${ct_mains[$i]}')")
    [ "$got" = "t|$n|$mid" ] || { bad=$((bad + 1)); echo "        ${ct_mains[$i]}: expected t|$n|$mid, got $got"; }
done
ct_check audit-verify-each-main-through-coordinator 0 $bad
ca_heads=0
for n in coord w1 w2; do
    ca_heads=$((ca_heads + $(ct $n postgres -c "SELECT count(*) FROM tenancy.audit_heads")))
done
ct_check audit-verify-all-covers-every-node "$ca_heads $ca_heads $(printf '%s\n' "${ca_mid[@]}" | sort -n | paste -sd' ')" \
    "$($CC -F ' ' -c "SELECT count(*), count(*) FILTER (WHERE ok),
        (SELECT string_agg(x::text, ' ' ORDER BY x) FROM unnest('{$(IFS=,; echo "${ca_mid[*]}")}'::bigint[]) x
         WHERE x IN (SELECT v.main_id FROM tenancy.audit_verify() v WHERE v.ok))
        FROM tenancy.audit_verify()")"
m=${ct_mains[0]}
mid=${ca_mid[0]}
key=$(grep "^$m " "$CT_WORK/keys" | cut -d' ' -f2)
n=$(ct "${ca_node[$mid]}" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid")
ct_check audit-verify-in-context-main "t|$n" \
    "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NULL" \
        -c "SELECT ok, entries FROM tenancy.audit_verify()" -c "COMMIT" 2>&1 | sed -n 2p)"
# An active subaccount of it with a key of its own.
for sub in $($CC -c "SELECT a.public_id FROM tenancy.accounts a WHERE a.main_id = $mid AND a.parent_id IS NOT NULL
                     AND a.status = 'active' AND EXISTS (SELECT FROM tenancy.api_keys k WHERE k.main_id = a.main_id
                     AND k.account_id = a.id AND k.revoked_at IS NULL) ORDER BY a.id"); do
    sub_key=$(grep "^$sub " "$CT_WORK/keys" | cut -d' ' -f2)
    [ -n "$sub_key" ] && break
done
sub_path=$($CC -c "SELECT path FROM tenancy.accounts WHERE public_id = '$sub'")
n=$(ct "${ca_node[$mid]}" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid AND account_path OPERATOR(tenancy.<@) '$sub_path'")
ct_check audit-verify-in-context-subaccount "t|$n" \
    "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$sub_key') IS NULL" \
        -c "SELECT ok, entries FROM tenancy.audit_verify()" -c "COMMIT" 2>&1 | sed -n 2p)"

# Reading the log through the coordinator: audit_page() (what GET
# /v1/accounts/{id}/audit-log answers) runs on the worker holding the chain.
# Up to the chain's present end (before_pos), a key reads all of its main
# account's sealed entries there, a subaccount's key its subtree's only, and
# nothing of its parent's.
main_path=$($CC -c "SELECT path FROM tenancy.accounts WHERE public_id = '$m'")
end=$(ct "${ca_node[$mid]}" postgres -c "SELECT last_pos + 1 FROM tenancy.audit_heads WHERE main_id = $mid")
# (The worker's chain read as its superuser: audit_trail would apply the
# log's policy, and the superuser has no context there.)
ca_chained="SELECT count(*) FROM tenancy.audit_chain c
    CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) WITH ORDINALITY u(xid, id, k)
    JOIN tenancy.audit_log l ON l.main_id = c.main_id AND l.xid = u.xid AND l.id = u.id
    WHERE c.main_id = $mid AND c.first_pos + u.k - 1 < $end"
want=$(ct "${ca_node[$mid]}" postgres -c "$ca_chained")
want_sub=$(ct "${ca_node[$mid]}" postgres -c "$ca_chained AND l.account_path OPERATOR(tenancy.<@) '$sub_path'")
ct_check audit-page-through-coordinator-main "t $want" \
    "$([ "$want" -gt 0 ] && echo t) $(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NULL" \
        -c "SELECT jsonb_array_length(tenancy.audit_page('$main_path', before_pos => $end, lim => 1001))" \
        -c "COMMIT" 2>&1 | sed -n 2p)"
ct_check audit-page-through-coordinator-subaccount "$want_sub 0" \
    "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$sub_key') IS NULL" \
        -c "SELECT jsonb_array_length(tenancy.audit_page('$sub_path', before_pos => $end, lim => 1001))" \
        -c "SELECT jsonb_array_length(tenancy.audit_page('$main_path', before_pos => $end, lim => 1001))" \
        -c "COMMIT" 2>&1 | sed -n '2,3p' | tr '\n' ' ' | sed 's/ $//')"

# Tampering on a worker, as its superuser, each kind on its own main account;
# audit_verify through the coordinator names it.
ca_tamper() {  # ca_tamper NAME INDEX REASON-PATTERN SQL (:mid stands for the main id)
    local name=$1 i=$2 pattern=$3 sql=${4//:mid/${ca_mid[$2]}}
    ct "${ca_node[${ca_mid[$i]}]}" postgres -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
    local got
    got=$($CC -c "SELECT ok, reason FROM tenancy.audit_verify('${ct_mains[$i]}')" 2>&1)
    if [[ "$got" =~ ^f\|.*$pattern ]]; then record PASS $CT_SUITE "$name"; else
        echo "        expected f|...$pattern..."
        echo "        actual:   $got"
        record FAIL $CT_SUITE "$name"
    fi
}
# The entry at chain position 1 of the main account.
CA_FIRST="SELECT c.entry_ids[1] FROM tenancy.audit_chain c WHERE c.main_id = :mid ORDER BY c.first_pos LIMIT 1"
ca_tamper audit-tamper-payload-detected 1 'digest mismatch' \
    "UPDATE tenancy.audit_log SET change = '{\"n\": 99}' WHERE main_id = :mid AND id = ($CA_FIRST)"
ca_tamper audit-tamper-deleted-entry-detected 2 'missing \(deleted entry\)' \
    "DELETE FROM tenancy.audit_log WHERE main_id = :mid AND id = ($CA_FIRST)"
ct_check audit-tamper-main-has-two-blocks t \
    "$(ct "${ca_node[${ca_mid[3]}]}" postgres -c "SELECT count(*) >= 2 FROM tenancy.audit_chain WHERE main_id = ${ca_mid[3]}")"
ca_tamper audit-tamper-deleted-block-detected 3 'missing \(entries deleted with their chain\)' \
    "DELETE FROM tenancy.audit_chain WHERE main_id = :mid AND first_pos = 1"
# The tail cut: the last block and its entries gone.
ca_tamper audit-tamper-cut-tail-detected 4 'head says' \
    "WITH last AS (DELETE FROM tenancy.audit_chain WHERE main_id = :mid AND first_pos =
                       (SELECT max(first_pos) FROM tenancy.audit_chain WHERE main_id = :mid) RETURNING *)
     DELETE FROM tenancy.audit_log l USING last, unnest(last.entry_xids, last.entry_ids) u(xid, id)
     WHERE l.main_id = :mid AND l.xid = u.xid AND l.id = u.id"
# In context too, and the DBA's verification of all chains names exactly those four.
read -r m1 k1 < <(grep "^${ct_mains[1]} " "$CT_WORK/keys")
ct_check audit-tamper-seen-in-context "f" \
    "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$k1') IS NULL" \
        -c "SELECT ok FROM tenancy.audit_verify()" -c "COMMIT" 2>&1 | sed -n 2p)"
ct_check audit-verify-all-names-the-tampered "$(printf '%s\n' "${ca_mid[@]:1:4}" | sort -n | paste -sd' ')" \
    "$($CC -c "SELECT string_agg(main_id::text, ' ' ORDER BY main_id) FROM tenancy.audit_verify() WHERE NOT ok")"

# A worker down: the coordinator's entries for its main accounts wait on the
# coordinator (the installation's chain is still sealed), the DBA's
# audit_verify() names the node it could not reach, and once the worker is
# back the entries move there and are sealed.
i=$(for k in "${!ca_mid[@]}"; do [ "${ca_node[${ca_mid[$k]}]}" = w2 ] && [ "$k" -gt 4 ] && echo "$k" && break; done)
mid=${ca_mid[$i]}
cluster_stop "$CT_WORK/w2"
$CC -c "SELECT tenancy._audit_record($mid, '$mid', 'app.while_down', 'w2', NULL)" \
    -c "SELECT tenancy._audit_record(0, NULL, 'app.installation_while_down', 'w2', NULL)" >/dev/null
ca_wait audit-installation-sealed-while-worker-down "SELECT EXISTS (SELECT FROM tenancy.audit_log l
    JOIN tenancy.audit_chain c ON c.main_id = 0 JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
    ON u.xid = l.xid AND u.id = l.id WHERE l.main_id = 0 AND l.action = 'app.installation_while_down')" coord &&
    record PASS $CT_SUITE audit-installation-sealed-while-worker-down
ct_check audit-entry-waits-while-worker-down 1 \
    "$($CC -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid AND action = 'app.while_down'")"
ct_check audit-verify-all-names-the-node-down 1 \
    "$($CC -c "SELECT count(*) FROM tenancy.audit_verify() WHERE main_id IS NULL AND NOT ok
               AND reason LIKE 'node 127.0.0.1:${ct_port[w2]} could not verify%'")"
ct_check audit-entries-error-names-the-node-down 1 \
    "$($CC -v VERBOSITY=verbose -c "SELECT count(*) FROM tenancy.audit_entries()" 2>&1 |
        grep -c "58000: audit_entries: cannot read the log of node 127.0.0.1:${ct_port[w2]}")"
cluster_start "$CT_WORK/w2"
ca_wait audit-moved-after-worker-back "SELECT NOT EXISTS (SELECT FROM tenancy.audit_log WHERE main_id <> 0)" coord &&
    ca_wait audit-moved-after-worker-back "SELECT EXISTS (SELECT FROM tenancy.audit_log l
        JOIN tenancy.audit_chain c ON c.main_id = l.main_id JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
        ON u.xid = l.xid AND u.id = l.id WHERE l.main_id = $mid AND l.action = 'app.while_down')" w2 &&
    record PASS $CT_SUITE audit-moved-after-worker-back
ct_check audit-moved-entry-on-its-worker "1 t" \
    "$(ct w2 postgres -F ' ' -c "SELECT count(*), bool_and(ok) FROM tenancy.audit_log l,
        LATERAL (SELECT v.ok FROM tenancy._audit_verify_main($mid) v) v
        WHERE l.main_id = $mid AND l.action = 'app.while_down'")"

# audit_purge() through the coordinator purges the chain where it lives (the
# worker holding the main account's shard), in the caller's transaction: the
# head keeps a checkpoint, an audit.purge entry records it there, and the
# chain still verifies. Main account 0 (never tampered with).
mid=${ca_mid[0]}
node=${ca_node[$mid]}
# (Its own entries: the tampering above left others' outside any chain.)
ca_main_sealed="SELECT NOT EXISTS (SELECT FROM tenancy.audit_log l WHERE l.main_id = $mid AND NOT EXISTS (
    SELECT FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
    WHERE c.main_id = l.main_id AND u.xid = l.xid AND u.id = l.id))"
ca_wait audit-purge-chain-sealed-first "$ca_main_sealed" "$node"
ca_before=$(ct "$node" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid")
ca_purged=$($CC -c "SELECT tenancy.audit_purge('${ct_mains[0]}', now())")
ca_after=$(ct "$node" postgres -c "SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid AND action <> 'audit.purge'")
ct_check audit-purge-through-coordinator-on-the-worker "t $ca_before" \
    "$([ "${ca_purged:-0}" -gt 0 ] && echo t || echo "f ($ca_purged)") $((ca_purged + ca_after))"
ct_check audit-purge-checkpoint-and-entry-on-the-worker "t 1" \
    "$(ct "$node" postgres -F ' ' -c "SELECT (SELECT base_pos > 0 FROM tenancy.audit_heads WHERE main_id = $mid),
        (SELECT count(*) FROM tenancy.audit_log WHERE main_id = $mid AND action = 'audit.purge')")"
ca_wait audit-purge-entry-sealed "$ca_main_sealed" "$node"
ct_check audit-purge-chain-still-verifies "t" \
    "$($CC -c "SELECT bool_and(ok) FROM tenancy.audit_verify() WHERE main_id = $mid")"
ct_check audit-purge-nothing-older-left 0 "$($CC -c "SELECT tenancy.audit_purge('${ct_mains[0]}', now() - interval '1 day')")"

# audit_relocate() through the coordinator relocates every worker's chains
# after a VACUUM FULL there; the chains verify by their new places.
ct "$node" postgres -c "VACUUM FULL tenancy.audit_log" >/dev/null
ct_check audit-relocate-through-coordinator "t 0" \
    "$($CC -c "SELECT tenancy.audit_relocate() > 0") $($CC -c "SELECT tenancy.audit_relocate()")"
ct_check audit-relocate-chain-verifies "t" \
    "$($CC -c "SELECT bool_and(ok) FROM tenancy.audit_verify() WHERE main_id = $mid")"
