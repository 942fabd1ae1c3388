# promote_account() on Citus: the subaccount's subtree becomes a main account,
# its rows copied to the new main account's shard and deleted from the old
# one in one transaction (extension/sql/95_citus.sql, _citus_promote). Sourced
# by tests/suites/60_citus.sh; runs last, as it revokes keys of the keys file.

# Every tenant table's rows in a subtree, as "table:count" words: $1 main id,
# $2 path (api_key_secrets through its keys).
cp_rows() {
    $CC -c "DO \$\$
        DECLARE t regclass; c name; n bigint; out text := '';
        BEGIN
            FOREACH t IN ARRAY tenancy._citus_tenant_tables() LOOP
                c := tenancy._citus_path_column(t);
                IF c IS NULL THEN
                    EXECUTE format('SELECT count(*) FROM %s x WHERE x.main_id = \$1 AND EXISTS (SELECT FROM tenancy.api_keys k
                                    WHERE k.main_id = x.main_id AND k.id = x.key_id AND k.account_path OPERATOR(tenancy.<@) \$2)', t)
                        INTO n USING $1, '$2'::tenancy.account_path;
                ELSE
                    EXECUTE format('SELECT count(*) FROM %s x WHERE x.main_id = \$1 AND x.%I OPERATOR(tenancy.<@) \$2', t, c)
                        INTO n USING $1, '$2'::tenancy.account_path;
                END IF;
                out := out || t || ':' || n || ' ';
            END LOOP;
            RAISE NOTICE '%', rtrim(out);
        END \$\$" 2>&1 | sed -n 's/^NOTICE: *//p'
}

# The subaccount with the largest subtree among main accounts the earlier parts
# left untouched (0: deactivations; 1-4: audit tampering), on the other worker
# than its main account, so rows cross nodes.
cp_shard_node() {
    $CC -c "SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = get_shard_id_for_distribution_column('tenancy.accounts', $1)"
}
cp_pick=""
for m in "${ct_mains[@]:5}"; do
    mid=$($CC -c "SELECT main_id FROM tenancy.accounts WHERE public_id = '$m'")
    while read -r sid spub; do
        [ "$(cp_shard_node "$sid")" != "$(cp_shard_node "$mid")" ] && { cp_pick="$mid $sid $spub"; break 2; }
    done < <($CC -F ' ' -c "SELECT s.id, s.public_id FROM tenancy.accounts s WHERE s.main_id = $mid AND s.parent_id IS NOT NULL
                            AND s.status = 'active'
                            ORDER BY (SELECT count(*) FROM tenancy.accounts x WHERE x.main_id = s.main_id
                                      AND x.path OPERATOR(tenancy.<@) s.path) DESC, s.id")
done
ct_check promote-candidate-on-the-other-worker t "$([ -n "$cp_pick" ] && echo t)"
read -r cp_m cp_s cp_pub <<<"$cp_pick"
if [ -n "$cp_pick" ]; then
    cp_path=$($CC -c "SELECT path FROM tenancy.accounts WHERE main_id = $cp_m AND id = $cp_s")
    cp_mpub=$($CC -c "SELECT public_id FROM tenancy.accounts WHERE main_id = $cp_m AND id = $cp_m")
    cp_before=$(cp_rows "$cp_m" "$cp_path")
    # The counts the checks below compare with: one per tenant table, some
    # accounts (an empty answer would make every comparison pass).
    ct_check promote-rows-counted-before t \
        "$(grep -qE '(^| )tenancy\.accounts:[1-9]' <<<"$cp_before" && echo t)"
    cp_sub_keys=$(awk 'NR==FNR {ids[$1]; next} $1 in ids' \
        <($CC -c "SELECT public_id FROM tenancy.accounts WHERE main_id = $cp_m AND path OPERATOR(tenancy.<@) '$cp_path'") \
        "$CT_WORK/keys")
    cp_mkey=$(grep "^$cp_mpub " "$CT_WORK/keys" | cut -d' ' -f2)
    cp_m_total=$($CC -c "SELECT count(*) FROM tenancy.accounts WHERE main_id = $cp_m")
    cp_n=$($CC -c "SELECT count(*) FROM tenancy.accounts WHERE main_id = $cp_m AND path OPERATOR(tenancy.<@) '$cp_path'")
    cp_notes=$($CC -c "SELECT count(*) FROM public.notes WHERE main_id = $cp_m AND account_path OPERATOR(tenancy.<@) '$cp_path'")

    # In a transaction rolled back: nothing changes.
    $CC -c "BEGIN" -c "SELECT tenancy.promote_account('$cp_pub')" -c "ROLLBACK" >/dev/null 2>&1
    ct_check promote-rolled-back-changes-nothing "$cp_before" "$(cp_rows "$cp_m" "$cp_path")"

    out=$($CC -v ON_ERROR_STOP=1 -c "SELECT tenancy.promote_account('$cp_pub')" 2>&1)
    ct_check promote-on-citus-succeeds 0 "$(grep -c ERROR <<<"$out")"
    [ -n "$out" ] && grep ERROR <<<"$out"
    # The subaccount is a main account; every row of its subtree is under it,
    # on its shard, with the path's prefix cut; none is left under the old one.
    ct_check promote-account-is-main "$cp_s $cp_s t" \
        "$($CC -F ' ' -c "SELECT main_id, path, parent_id IS NULL FROM tenancy.accounts WHERE public_id = '$cp_pub'")"
    ct_check promote-every-row-moved "$cp_before" "$(cp_rows "$cp_s" "$cp_s")"
    ct_check promote-nothing-left-behind "$(sed -E 's/:[0-9]+/:0/g' <<<"$cp_before")" "$(cp_rows "$cp_m" "$cp_path")"
    ct_check promote-old-main-keeps-the-rest "$((cp_m_total - cp_n))" \
        "$($CC -c "SELECT count(*) FROM tenancy.accounts WHERE main_id = $cp_m")"
    # Each row is on the new main account's shard: the worker holding it answers.
    cp_node=$(for n in w1 w2; do [ "${ct_port[$n]}" = "$(cp_shard_node "$cp_s")" ] && echo $n; done)
    ct_check promote-rows-on-the-new-shard "$cp_n $cp_notes" \
        "$(ct "$cp_node" postgres -F ' ' -c "SET citus.enable_ddl_propagation = off" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts WHERE main_id = $cp_s), (SELECT count(*) FROM public.notes WHERE main_id = $cp_s)")"
    # Credentials of the subtree are re-issued: its keys are revoked, and
    # refused (a key's token names its old main account: "invalid credential").
    bad=0
    while read -r a key; do
        grep -q 'invalid credential\|revoked' <<<"$(ct coord ct_app -c "SELECT tenancy.authenticate('$key')" 2>&1)" ||
            bad=$((bad + 1))
    done <<<"$cp_sub_keys"
    ct_check promote-subtree-keys-refused "0 t" "$bad $([ -n "$cp_sub_keys" ] && echo t)"
    ct_check promote-subtree-keys-revoked 0 \
        "$($CC -c "SELECT count(*) FROM tenancy.api_keys WHERE main_id = $cp_s AND revoked_at IS NULL")"
    # A new key of the promoted account sees exactly its subtree; the old main
    # account's key sees it no more.
    cp_new_key=$($CC -c "SELECT tenancy.admin_create_api_key('$cp_pub', 'after promotion')")
    ct_check promote-new-key-sees-the-subtree "$cp_n $cp_notes" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_new_key') IS NOT NULL" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM public.notes)" -c "COMMIT" | sed -n 2p)"
    ct_check promote-old-main-sees-it-no-more "$((cp_m_total - cp_n)) 0" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_mkey') IS NOT NULL" \
            -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM tenancy.accounts WHERE public_id = '$cp_pub')" \
            -c "COMMIT" | sed -n 2p)"
    # The move is on both main accounts' audit chains, on their own workers.
    for x in "old-main:$cp_m" "new-main:$cp_s"; do
        xw=${x%%:*} x=${x#*:}
        xn=$(for n in w1 w2; do [ "${ct_port[$n]}" = "$(cp_shard_node "$x")" ] && echo $n; done)
        ca_wait "promote-audited-$xw" "SELECT EXISTS (SELECT FROM tenancy.audit_log l JOIN tenancy.audit_chain c
            ON c.main_id = l.main_id AND l.id = ANY (c.entry_ids) WHERE l.main_id = $x AND l.action = 'account.promote'
            AND l.target = '$cp_pub' AND l.actor_kind = 'dba')" "$xn" && record PASS $CT_SUITE "promote-audited-$xw"
    done
    ct_check promote-new-chain-verifies "t" "$($CC -c "SELECT ok FROM tenancy.audit_verify('$cp_pub')")"
fi

# Sealed transcripts cross nodes too: their data key is on every node
# (transcript_keys is a reference table). Another subaccount whose shard is
# on the other worker than its main account's, with transcript encryption on
# and one conversation sealed in its subtree: after the promotion the
# transcript opens for the new main account's key.
cp_pick2=""
for m in "${ct_mains[@]:5}"; do
    mid=$($CC -c "SELECT main_id FROM tenancy.accounts WHERE public_id = '$m'")
    while read -r sid spub; do
        grep -q "^$spub " "$CT_WORK/keys" || continue
        [ "$(cp_shard_node "$sid")" != "$(cp_shard_node "$mid")" ] && { cp_pick2="$mid $sid $spub"; break 2; }
    done < <($CC -F ' ' -c "SELECT s.id, s.public_id FROM tenancy.accounts s WHERE s.main_id = $mid
                            AND s.parent_id IS NOT NULL AND s.status = 'active' ORDER BY s.id")
done
ct_check promote-sealed-candidate t "$([ -n "$cp_pick2" ] && echo t)"
read -r cp_m2 cp_s2 cp_pub2 <<<"$cp_pick2"
CP_OPEN="SELECT string_agg(t, ',' ORDER BY t) FROM (SELECT tenancy.transcript_of(c.account_path, c.transcript,
             c.transcript_sealed) #>> '{0,text}' AS t FROM tenancy.conversations c WHERE c.transcript_sealed IS NOT NULL) x"
if [ -n "$cp_pick2" ]; then
    cp_key2=$(grep "^$cp_pub2 " "$CT_WORK/keys" | cut -d' ' -f2)
    $CC -c "UPDATE tenancy.accounts SET plan = 'enterprise' WHERE main_id = $cp_m2 AND id = $cp_m2" \
        -c "UPDATE tenancy.accounts SET settings = jsonb_set(coalesce(settings, '{}'), '{security}',
                                                             '{\"transcript_encryption\": true}')
            WHERE main_id = $cp_m2 AND id = $cp_m2" >/dev/null
    ct_check promote-sealed-conversation-written "my date of birth" \
        "$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key2') IS NOT NULL" \
            -c "INSERT INTO tenancy.conversations (direction, transcript) VALUES ('inbound', '[{\"text\": \"my date of birth\"}]')" \
            -c "COMMIT" -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key2') IS NOT NULL" -c "$CP_OPEN" -c "COMMIT" 2>&1 | sed -n 3p)"
    out=$($CC -c "SELECT tenancy.promote_account('$cp_pub2')" 2>&1)
    ct_check promote-with-sealed-transcripts 0 "$(grep -c ERROR <<<"$out")"
    cp_key3=$($CC -c "SELECT tenancy.admin_create_api_key('$cp_pub2', 'after promotion')")
    ct_check promote-sealed-transcript-opens-after "$cp_s2 my date of birth" \
        "$($CC -c "SELECT DISTINCT main_id FROM tenancy.conversations WHERE transcript_sealed IS NOT NULL AND account_path OPERATOR(tenancy.<@) '$cp_s2'") $(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$cp_key3') IS NOT NULL" -c "$CP_OPEN" -c "COMMIT" 2>&1 | sed -n 2p)"
fi
