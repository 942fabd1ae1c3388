# A shard move (what citus_rebalance_start() does for each shard group): a
# main account's rows move to the other worker and stay readable there with
# the same keys; its sealed transcripts still open (transcript_keys is a
# reference table). Runs after 40_promote.sh and moves the shard group of the
# main account promoted there with a sealed transcript ($cp_s2, $cp_key3).

# Citus creates the shards on the target as the tables' owner: tenancy_owner
# may log in on the workers only (tenancy.citus_worker_logins()).
ct_check tenancy-owner-login-on-workers-only "f t t" \
    "$(for n in coord w1 w2; do ct $n postgres -c "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'tenancy_owner'"; done | tr '\n' ' ' | sed 's/ $//')"
ct_out=$(PGPASSWORD=wrong psql -w -qAtX -h 127.0.0.1 -p "${ct_port[w1]}" -U tenancy_owner -d postgres -c "SELECT 1" 2>&1)
ct_check tenancy-owner-refused-on-a-worker-without-its-password "0 1" \
    "$(grep -c '^1$' <<<"$ct_out") $(grep -q 'password authentication failed' <<<"$ct_out" && echo 1)"

if [ -n "${cp_key3:-}" ]; then
    cm_shard=$($CC -c "SELECT get_shard_id_for_distribution_column('tenancy.accounts', $cp_s2)")
    cm_from=$(cp_shard_node "$cp_s2")
    cm_to=$([ "$cm_from" = "${ct_port[w1]}" ] && echo "${ct_port[w2]}" || echo "${ct_port[w1]}")
    CM_COUNTS="SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM public.notes) || ' ' ||
                      (SELECT count(*) FROM tenancy.conversations) || ' ' || (SELECT count(*) FROM tenancy.api_keys)"
    cm_before=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" -c "$CM_COUNTS" -c "COMMIT" | sed -n 2p)
    cm_all=$($CC -c "SELECT count(*) FROM tenancy.accounts")
    out=$($CC -c "SELECT citus_move_shard_placement($cm_shard, '127.0.0.1', $cm_from, '127.0.0.1', $cm_to,
                                                    shard_transfer_mode => 'block_writes')" 2>&1)
    ct_check shard-move-done "0 $cm_to" "$(grep -c ERROR <<<"$out") $(cp_shard_node "$cp_s2")"
    grep ERROR <<<"$out"
    ct_check shard-move-every-row-kept "$cm_all" "$($CC -c "SELECT count(*) FROM tenancy.accounts")"
    ct_check shard-move-key-sees-the-same "$cm_before" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" -c "$CM_COUNTS" -c "COMMIT" | sed -n 2p)"
    ct_check shard-move-sealed-transcript-opens "my date of birth" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" -c "$CP_OPEN" -c "COMMIT" 2>&1 | sed -n 2p)"
    # With encryption on for the promoted account, a new transcript is sealed on
    # the new node under its own key, and both open.
    $CC -c "UPDATE tenancy.accounts SET plan = 'enterprise' WHERE main_id = $cp_s2 AND id = $cp_s2" \
        -c "UPDATE tenancy.accounts SET settings = jsonb_set(coalesce(settings, '{}'), '{security}',
                                                             '{\"transcript_encryption\": true}')
            WHERE main_id = $cp_s2 AND id = $cp_s2" >/dev/null
    ct_check shard-move-new-transcript-sealed-and-opens "after the move,my date of birth" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" \
            -c "INSERT INTO tenancy.conversations (direction, transcript) VALUES ('inbound', '[{\"text\": \"after the move\"}]')" \
            -c "COMMIT" -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" \
            -c "$CP_OPEN" -c "COMMIT" 2>&1 | sed -n 3p)"
    # The audit chain does not move with the shard by itself: entries after
    # the move start a new chain on the new node, which audit_verify(account)
    # verifies; the old one stays verifiable on its node through the DBA's
    # audit_verify(), until audit_rehome() brings it over (below).
    ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" \
        -c "SELECT tenancy.audit_event('app.after_move', 'shard $cm_shard') IS NOT NULL" -c "COMMIT" >/dev/null
    cm_node=$(for n in w1 w2; do [ "${ct_port[$n]}" = "$cm_to" ] && echo $n; done)
    ca_wait shard-move-audit-sealed-on-new-node "SELECT EXISTS (SELECT FROM tenancy.audit_log l JOIN tenancy.audit_chain c
        ON c.main_id = l.main_id AND l.id = ANY (c.entry_ids) WHERE l.main_id = $cp_s2 AND l.action = 'app.after_move')" \
        "$cm_node" && record PASS $CT_SUITE shard-move-audit-sealed-on-new-node
    ct_check shard-move-audit-verify-new-chain "t" "$($CC -c "SELECT ok FROM tenancy.audit_verify('$cp_pub2')")"
    ct_check shard-move-audit-both-chains-verify "2 t" \
        "$($CC -F ' ' -c "SELECT count(*), bool_and(ok) FROM tenancy.audit_verify() WHERE main_id = $cp_s2")"
    # audit_rehome() brings the old chain to the new worker: the first call
    # copies it (verified on the old worker) with an audit.rehome entry, the
    # second removes it from the old worker once the copy is there, a third
    # has nothing to do for it. One chain then holds every entry.
    cm_old_node=$([ "$cm_node" = w1 ] && echo w2 || echo w1)
    CM_N="SELECT count(*) FROM tenancy.audit_log WHERE main_id = $cp_s2"
    cm_old_n=$(ct "$cm_old_node" postgres -c "$CM_N")
    cm_new_n=$(ct "$cm_node" postgres -c "$CM_N")
    ct_check audit-rehome-copies "copied $cm_old_n 127.0.0.1:$cm_from 127.0.0.1:$cm_to" \
        "$($CC -F ' ' -c "SELECT action, entries, from_node, to_node FROM tenancy.audit_rehome() WHERE main_id = $cp_s2")"
    # (Its own entries: the log there may hold entries 20_audit.sh cut out of
    # other main accounts' chains, which stay outside any chain.)
    ca_wait audit-rehome-copy-sealed-on-new-node "SELECT ($CM_N) = $((cm_old_n + cm_new_n + 1)) AND NOT EXISTS (
        SELECT FROM tenancy.audit_log l WHERE l.main_id = $cp_s2 AND NOT EXISTS (
            SELECT FROM tenancy.audit_chain c CROSS JOIN LATERAL unnest(c.entry_xids, c.entry_ids) u(xid, id)
            WHERE c.main_id = l.main_id AND u.xid = l.xid AND u.id = l.id))" \
        "$cm_node" && record PASS $CT_SUITE audit-rehome-copy-sealed-on-new-node
    ct_check audit-rehome-removes-old "removed from the old node" \
        "$($CC -c "SELECT action FROM tenancy.audit_rehome() WHERE main_id = $cp_s2")"
    ct_check audit-rehome-old-node-empty "0 0 0" \
        "$(ct "$cm_old_node" postgres -F ' ' -c "SELECT ($CM_N), (SELECT count(*) FROM tenancy.audit_chain WHERE main_id = $cp_s2),
                                                  (SELECT count(*) FROM tenancy.audit_heads WHERE main_id = $cp_s2)")"
    ct_check audit-rehome-nothing-left-to-do 0 \
        "$($CC -c "SELECT count(*) FROM tenancy.audit_rehome() WHERE main_id = $cp_s2")"
    # A chain that does not verify is not copied: named, and left where it
    # is. Which ones are in the moved shard depends on the ids (20_audit.sh
    # tampered with main accounts 1 to 4, e2e.py with one of its own): any
    # skipped chain must be one that audit_verify() reports as not ok.
    cm_bad=$($CC -c "SELECT coalesce(string_agg(DISTINCT main_id::text, ','), '0') FROM tenancy.audit_verify() WHERE NOT ok")
    ct_check audit-rehome-skips-only-tampered-chains "none" \
        "$($CC -c "SELECT coalesce(string_agg(main_id || ': ' || action, '; '), 'none') FROM tenancy.audit_rehome()
                   WHERE action LIKE 'skipped:%' AND main_id NOT IN ($cm_bad)")"
    ct_check audit-rehome-one-chain-verifies "1 t $((cm_old_n + cm_new_n + 1))" \
        "$($CC -F ' ' -c "SELECT count(*), bool_and(ok), sum(entries) FROM tenancy.audit_verify() WHERE main_id = $cp_s2")"
    ct_check audit-rehome-account-verify "t $((cm_old_n + cm_new_n + 1))" \
        "$($CC -F ' ' -c "SELECT ok, entries FROM tenancy.audit_verify('$cp_pub2')")"
    # The main account's key reads the history from before the move again.
    ct_check audit-rehome-history-readable "1 1" \
        "$(ct coord ct_app -F ' ' -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" \
            -c "SELECT jsonb_array_length(tenancy.audit_page(tenancy.current_path(), NULL, 'account.promote', lim => 50)),
                       jsonb_array_length(tenancy.audit_page(tenancy.current_path(), NULL, 'audit.rehome', lim => 50))" \
            -c "COMMIT" 2>&1 | sed -n 2p)"
fi
