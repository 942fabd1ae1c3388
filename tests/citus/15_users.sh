# Users through the coordinator: invited in context by an admin key,
# accepted, logged in; a user's session sees exactly the subtree of the
# account it logged in to, for reads and writes, like an API key. (Accounts
# of the first main account are left out: earlier checks revoked a key and
# deactivated an account there.)
ct_users_pw='a long enough password'
ct_users_bad=0
ct_users_n=0
while read -r a key; do
    ct_users_n=$((ct_users_n + 1))
    [ $ct_users_n -gt 6 ] && break
    email="citus-user$ct_users_n@example.test"
    ct coord ct_app -v ON_ERROR_STOP=1 -c "BEGIN" -c "SELECT tenancy.authenticate('$key') IS NOT NULL" \
        -c "SELECT tenancy.invite('$a', '$email', 'admin')" -c "COMMIT" >/dev/null || {
        ct_users_bad=$((ct_users_bad + 1)); echo "        invite in $a failed"; continue; }
    # The token goes out by mail only: the DBA reads it from the outbox.
    tok=$($CC -c "SELECT substring(body from 'tni_[0-9]+_[0-9]+_[A-Za-z0-9_-]+') FROM tenancy.outbox
                  WHERE recipient = '$email' ORDER BY id DESC LIMIT 1")
    session=$(ct coord ct_app -c "SELECT tenancy.accept_invitation('$tok', 'User $ct_users_n', '$ct_users_pw')" 2>&1)
    want=$($CC -c "WITH me AS (SELECT path FROM tenancy.accounts WHERE public_id = '$a')
        SELECT (SELECT count(*) FROM tenancy.accounts x, me WHERE x.path OPERATOR(tenancy.<@) me.path) || ' ' ||
               (SELECT count(*) FROM tenancy.api_keys x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path) || ' ' ||
               (SELECT count(*) FROM public.notes x, me WHERE x.account_path OPERATOR(tenancy.<@) me.path)")
    # A new login, then the session token in a later transaction; each
    # counts, then updates and deletes the notes it sees (rolled back).
    got=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.login('$email', '$ct_users_pw', '$a') IS NOT NULL" \
        -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM tenancy.api_keys) || ' ' || (SELECT count(*) FROM public.notes)" \
        -c "COMMIT" 2>&1 | sed -n 2p)
    got2=$(ct coord ct_app -c "BEGIN" -c "SELECT tenancy.authenticate('$session') IS NOT NULL" \
        -c "SELECT (SELECT count(*) FROM tenancy.accounts) || ' ' || (SELECT count(*) FROM tenancy.api_keys) || ' ' || (SELECT count(*) FROM public.notes)" \
        -c "WITH u AS (UPDATE public.notes SET body = body || '?' RETURNING 1) SELECT count(*) FROM u" \
        -c "WITH d AS (DELETE FROM public.notes RETURNING 1) SELECT count(*) FROM d" \
        -c "ROLLBACK" 2>&1 | sed -n '2,4p' | tr '\n' ' ')
    notes=${want##* }
    if [ "$want" != "$got" ] || [ "$got2" != "$want $notes $notes " ]; then
        ct_users_bad=$((ct_users_bad + 1))
        echo "        $email in $a: expected '$want', login gave '$got', session gave '$got2'"
    fi
done < <(grep -v "^$(cut -d_ -f1,2 <<<"${ct_mains[0]}")_" "$CT_WORK/keys")
ct_check users-see-exactly-their-subtree 0 $ct_users_bad
ct_check users-made "6" "$($CC -c "SELECT count(*) FROM tenancy.users WHERE email LIKE 'citus-user%@example.test'")"
