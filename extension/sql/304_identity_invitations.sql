-- Identity, part 5: invitations: invite (the token goes out only by mail)
-- and accept_invitation.

-- ---- invitations ------------------------------------------------------------------------------

-- A role a membership may get (any product role but sub_user), and only an
-- owner hands out owner: raises 22023 / 42501 ("only an owner may <verb> an
-- owner").
CREATE FUNCTION tenancy._check_member_role(role text, verb text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF role IS NULL OR role = 'sub_user' OR NOT EXISTS (SELECT FROM tenancy.roles r WHERE r.name = role) THEN
        RAISE EXCEPTION 'unknown role "%"', role USING ERRCODE = '22023';
    END IF;
    IF role = 'owner' AND tenancy.current_role_name() <> 'owner' THEN
        RAISE EXCEPTION 'only an owner may % an owner', verb USING ERRCODE = '42501';
    END IF;
END $$;

-- invite(account, email, role): owners and admins (members write); an admin
-- cannot invite an owner. Re-inviting the same email to the same account
-- replaces the pending invitation (the old token stops working). The token
-- goes out only by email (outbox); the invitation id is returned.
CREATE FUNCTION tenancy.invite(account text, email text, role text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    clean_email text;
    inv_id bigint := nextval('tenancy.invitation_id_seq');
    secret text := tenancy.random_token(32);
    pub text;
BEGIN
    PERFORM tenancy._require('members', 'write');
    a := tenancy._visible_account(account);
    clean_email := tenancy._check_email(invite.email);
    PERFORM tenancy._check_member_role(invite.role, 'invite');
    IF a.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '55000';
    END IF;
    -- Accepting would change the invitee's role there: an admin cannot touch an owner.
    -- (SELECT 1: Citus plans this join of a coordinator table only with a target list.)
    IF tenancy.current_role_name() <> 'owner' AND EXISTS (
            SELECT 1 FROM tenancy.memberships m JOIN tenancy.users u ON u.id = m.user_id
            WHERE m.main_id = a.main_id AND m.account_id = a.id AND m.role = 'owner'
              AND lower(u.email) = lower(clean_email)) THEN
        RAISE EXCEPTION 'only an owner may change an owner''s membership' USING ERRCODE = '42501';
    END IF;
    -- Re-inviting replaces the pending invitation, but an admin must not
    -- touch one it could not have made (an owner invitation).
    IF tenancy.current_role_name() <> 'owner' AND EXISTS (
            SELECT FROM tenancy.invitations i
            WHERE i.main_id = a.main_id AND i.account_id = a.id AND lower(i.email) = lower(clean_email)
              AND i.accepted_at IS NULL AND i.role = 'owner') THEN
        RAISE EXCEPTION 'only an owner may replace a pending owner invitation' USING ERRCODE = '42501';
    END IF;
    DELETE FROM tenancy.invitations i
    WHERE i.main_id = a.main_id AND i.account_id = a.id AND lower(i.email) = lower(clean_email)
      AND i.accepted_at IS NULL;
    pub := format('inv_%s_%s', a.main_id, inv_id);
    INSERT INTO tenancy.invitations (account_path, id, public_id, email, role, token_hash, expires_at)
    VALUES (a.path, inv_id, pub, clean_email, invite.role, tenancy._secret_hash(secret),
            now() + interval '7 days');
    PERFORM tenancy._enqueue_mail('invitation', a.path, clean_email, format('Invitation to %s', a.name),
        format(E'You have been invited to %s as %s.\n\nAccept with this token (single use, valid 7 days):\n%s\n',
               a.name, invite.role, format('tni_%s_%s_%s', a.main_id, inv_id, secret)),
        jsonb_build_object('account', a.name, 'role', invite.role, 'email', clean_email,
                           'token', format('tni_%s_%s_%s', a.main_id, inv_id, secret),
                           'expires_at', now() + interval '7 days'));
    RETURN pub;
END $$;

-- accept_invitation(token, name, password): creates the user if needed (then
-- password is required) or, for an existing user, checks their password; adds
-- the membership; returns a session token and sets the context there.
CREATE FUNCTION tenancy.accept_invitation(token text, name text DEFAULT NULL, password text DEFAULT NULL)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(token, 'tni', 2, 43);
    inv tenancy.invitations;
    u tenancy.users;
    a tenancy.accounts;
    session_token text;
BEGIN
    IF parts IS NOT NULL THEN
        SELECT * INTO inv FROM tenancy.invitations i
        WHERE i.main_id = parts[1]::bigint AND i.id = parts[2]::bigint FOR UPDATE;
    END IF;
    IF parts IS NULL OR NOT tenancy._secret_equal(parts[3], coalesce(inv.token_hash, '\x00'::bytea))
       OR inv.id IS NULL THEN
        RAISE EXCEPTION 'invalid invitation token' USING ERRCODE = '28000';
    END IF;
    IF inv.accepted_at IS NOT NULL THEN
        RAISE EXCEPTION 'the invitation has already been used' USING ERRCODE = '28000';
    END IF;
    IF inv.expires_at <= now() THEN
        RAISE EXCEPTION 'the invitation has expired' USING ERRCODE = '28000';
    END IF;
    SELECT * INTO a FROM tenancy.accounts x WHERE x.path = inv.account_path;
    IF NOT tenancy._chain_active(a.path) THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '28000';
    END IF;
    SELECT * INTO u FROM tenancy.users x WHERE lower(x.email) = lower(inv.email) FOR UPDATE;
    IF FOUND AND u.password_hash IS NULL THEN
        -- A user without a password yet sets one now.
        PERFORM tenancy._check_password(accept_invitation.password);
        UPDATE tenancy.users x SET password_hash = tenancy.hash_password(accept_invitation.password)
        WHERE x.id = u.id;
    ELSIF FOUND THEN
        IF accept_invitation.password IS NULL
           OR NOT tenancy.verify_password(accept_invitation.password, u.password_hash) THEN
            RAISE EXCEPTION 'an existing user accepts with their password' USING ERRCODE = '28P01';
        END IF;
    ELSE
        PERFORM tenancy._check_password(accept_invitation.password);
        INSERT INTO tenancy.users (email, name, password_hash)
        VALUES (inv.email, nullif(btrim(accept_invitation.name), ''),
                tenancy.hash_password(accept_invitation.password))
        RETURNING * INTO u;
    END IF;
    UPDATE tenancy.invitations i SET accepted_at = now() WHERE i.main_id = inv.main_id AND i.id = inv.id;
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.memberships (main_id, account_path, user_id, role)
        VALUES (a.main_id, a.path, u.id, inv.role)
        ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = excluded.role;
    ELSE
        INSERT INTO tenancy.memberships (account_path, user_id, role) VALUES (a.path, u.id, inv.role)
        ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = excluded.role;
    END IF;
    session_token := tenancy._new_session('user', u.id, NULL, NULL, a.main_id, a.id, NOT u.mfa_enabled);
    PERFORM tenancy._establish('user', a.main_id, split_part(session_token, '_', 2)::bigint, a.id,
                               'transaction');
    PERFORM tenancy._audit_record(a.main_id, a.path, 'login.success', lower(u.email),
        jsonb_build_object('login', 'invitation', 'invitation', inv.public_id, 'mfa_pending', u.mfa_enabled),
        'user', u.id::text, split_part(session_token, '_', 2)::bigint);
    RETURN session_token;
END $$;

REVOKE ALL ON FUNCTION tenancy._check_member_role(text, text) FROM PUBLIC;

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
