# Citus part (sourced by tests/suites/60_citus.sh on its cluster): every tenant
# table is distributed by main_id with accounts, the global catalogs are
# reference tables, and a key sees exactly its subtree in the tables beyond
# accounts, keys and notes (sub-users, invitations, voice, usage, users).

# ---- the catalog: no table with a main_id is forgotten --------------------------
# Tables with a main_id that deliberately stay off the distributed group
# (95_citus.sql says why): account_forwarding (a reference table), outbox (the
# mailer's global queue, main_id may be NULL), api_key_usage (authenticate()
# writes it as the DBA in the client's transaction), transcript_keys (not
# yet). audit_* belong to the audit part.
ct_check every-main-id-table-colocated-with-accounts "" \
    "$($CC -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname)
        FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'main_id' AND NOT a.attisdropped
        WHERE c.relnamespace = 'tenancy'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relname NOT LIKE 'audit\_%'
          AND c.relname NOT IN ('account_forwarding', 'outbox', 'api_key_usage', 'transcript_keys')
          AND NOT EXISTS (SELECT FROM pg_dist_partition p
                          WHERE p.logicalrelid = c.oid AND p.partmethod = 'h'
                            AND column_to_column_name(p.logicalrelid, p.partkey) = 'main_id'
                            AND p.colocationid = (SELECT colocationid FROM pg_dist_partition
                                                  WHERE logicalrelid = 'tenancy.accounts'::regclass))")"
ct_check named-tenant-tables-distributed "19" \
    "$($CC -c "SELECT count(*) FROM pg_dist_partition p
        WHERE p.partmethod = 'h' AND p.logicalrelid IN ('tenancy.sub_users'::regclass, 'tenancy.invitations',
            'tenancy.outbox_failures', 'tenancy.phi_redaction_jobs',
            'tenancy.usage_records', 'tenancy.usage_totals', 'tenancy.agents', 'tenancy.knowledge_bases',
            'tenancy.knowledge_documents', 'tenancy.flows', 'tenancy.channels', 'tenancy.campaigns',
            'tenancy.integrations', 'tenancy.contacts', 'tenancy.conversations',
            'tenancy.support_availability', 'tenancy.accounts', 'tenancy.memberships', 'tenancy.api_keys')")"
ct_check catalogs-are-reference-tables "account_forwarding usage_kinds" \
    "$($CC -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_dist_partition p
        JOIN pg_class c ON c.oid = p.logicalrelid
        WHERE p.partmethod = 'n' AND p.repmodel = 't' AND c.relname IN ('usage_kinds', 'account_forwarding')")"

# ---- rows made through the API, in context, in every account -------------------
# The keys that still authenticate (the suite revoked one and deactivated an
# account above).
while read -r a key; do
    ct coord ct_app -c "SELECT tenancy.authenticate('$key') IS NOT NULL" >/dev/null 2>&1 && echo "$a $key"
done <"$CT_WORK/keys" >"$CT_WORK/keys-live"
ct_check most-keys-still-live t "$([ $(wc -l <"$CT_WORK/keys-live") -ge $(($(wc -l <"$CT_WORK/keys") - 3)) ] && echo t)"
# Each main account's key makes two sub-users; every account's key invites one
# member, adds an agent, a conversation and a usage record.
ct_made=0
while read -r a key; do
    subs=""
    if printf '%s\n' "${ct_mains[@]}" | grep -qx "$a"; then
        subs="BEGIN; SELECT tenancy.authenticate('$key') IS NOT NULL;
              SELECT tenancy.create_sub_user('s1.$a@example.test', 'Sub', 'One', 'a long enough password 1') IS NOT NULL;
              SELECT tenancy.create_sub_user('s2.$a@example.test', 'Sub', 'Two', 'a long enough password 2') IS NOT NULL;
              COMMIT;"
    fi
    # One transaction per writer: Citus refuses a client the placements that
    # a SECURITY DEFINER function (the DBA) modified in the same transaction.
    ct coord ct_app -v ON_ERROR_STOP=1 >/dev/null 2>"$CT_WORK/tables-make.err" <<SQL && ct_made=$((ct_made + 1)) || cat "$CT_WORK/tables-make.err"
$subs
BEGIN;
SELECT tenancy.authenticate('$key') IS NOT NULL;
SELECT tenancy.invite('$a', 'invitee.$a@example.test', 'member') IS NOT NULL;
COMMIT;
BEGIN;
SELECT tenancy.authenticate('$key') IS NOT NULL;
INSERT INTO tenancy.agents (name) VALUES ('agent of $a');
INSERT INTO tenancy.conversations (direction) VALUES ('inbound');
COMMIT;
BEGIN;
SELECT tenancy.authenticate('$key') IS NOT NULL;
SELECT tenancy.record_usage('$a', 'call_minutes', 3) IS NOT NULL;
COMMIT;
SQL
done <"$CT_WORK/keys-live"
ct_check api-rows-made-in-every-account "$(wc -l <"$CT_WORK/keys-live")" "$ct_made"

# ---- each key sees exactly its subtree in them ----------------------------------------
# The DBA counts, per account, the rows under it; the account's key counts
# what row security lets it see through the coordinator. users: those with a
# membership in the subtree (a coordinator table whose policy reads the
# distributed memberships); api_key_usage: one row per visible key.
bad=0
while read -r a key; do
    want=$($CC -c "WITH me AS (SELECT path, main_id FROM tenancy.accounts WHERE public_id = '$a')
        SELECT concat_ws(' ',
            (SELECT count(*) FROM tenancy.sub_users x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.invitations x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.agents x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.conversations x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.usage_records x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.usage_totals x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(DISTINCT x.user_id) FROM tenancy.memberships x, me
             WHERE x.main_id = me.main_id AND x.account_path OPERATOR(tenancy.<@) me.path),
            (SELECT count(*) FROM tenancy.api_keys x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path))")
    got=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NOT NULL" \
        -c "SELECT concat_ws(' ', (SELECT count(*) FROM tenancy.sub_users), (SELECT count(*) FROM tenancy.invitations),
                (SELECT count(*) FROM tenancy.agents), (SELECT count(*) FROM tenancy.conversations),
                (SELECT count(*) FROM tenancy.usage_records), (SELECT count(*) FROM tenancy.usage_totals),
                (SELECT count(*) FROM tenancy.users), (SELECT count(*) FROM tenancy.api_key_usage))" \
        -c "COMMIT" 2>&1 | sed -n 2p)
    [ "$want" = "$got" ] || { bad=$((bad + 1)); echo "        $a: expected $want, got $got"; }
    [ $bad -gt 3 ] && break
done <"$CT_WORK/keys-live"
ct_check select-exactly-the-subtree-subusers-invitations-voice-usage-users 0 $bad
# The counts compared above are not all zero: two sub-users per main account,
# one agent per account, the owner among a main account's users.
ct_check subtree-rows-exist "$((2 * $(printf '%s\n' "${ct_mains[@]}" | grep -cxFf <(cut -d' ' -f1 "$CT_WORK/keys-live")))) $(wc -l <"$CT_WORK/keys-live") true" \
    "$($CC -c "SELECT (SELECT count(*) FROM tenancy.sub_users) || ' ' || (SELECT count(*) FROM tenancy.agents)
                      || ' ' || (SELECT count(*) >= ${#ct_mains[@]} FROM tenancy.users)")"

# ---- router queries: one main account's rows, one task ------------------------------
mid=$($CC -c "SELECT main_id FROM tenancy.accounts WHERE public_id = '${ct_mains[2]}'")
for t in sub_users invitations agents conversations usage_records; do
    ct_check "router-query-one-task-$t" "Task Count: 1" \
        "$($CC -c "EXPLAIN SELECT * FROM tenancy.$t WHERE main_id = $mid" | grep -o 'Task Count: [0-9]*')"
done
