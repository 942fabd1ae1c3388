-- 0.2 -> 0.3: reading an invitation back as the function owner (Citus: the transaction that invited), as in extension/sql/304_identity_invitations.sql.

-- An invitation as the gateway answers it ({id, account, email, role,
-- created_at, expires_at}), or NULL where the invitations policy would hide
-- it (outside the active subtree, or a role that may not read members). It
-- reads as its owner: on Citus the transaction that invited (invite() writes
-- as its owner) can read the new row back only as that same role.
CREATE FUNCTION tenancy._invitation_json(invitation text) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    found_json jsonb;
BEGIN
    IF invitation IS NULL OR invitation !~ '^inv_[0-9]+_[0-9]+$' OR length(invitation) > 60
       OR NOT tenancy.may('members', 'read') THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object('id', i.public_id, 'account', a.public_id, 'email', i.email, 'role', i.role,
                              'created_at', i.created_at, 'expires_at', i.expires_at)
    INTO found_json
    FROM tenancy.invitations i JOIN tenancy.accounts a ON a.main_id = i.main_id AND a.id = i.account_id
    WHERE i.main_id = split_part(invitation, '_', 2)::bigint AND i.id = split_part(invitation, '_', 3)::bigint
      AND i.account_path OPERATOR(tenancy.<@) tenancy.current_path();
    RETURN found_json;
END $$;
