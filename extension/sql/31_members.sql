-- Members of an account (issue 18's SQL side): change a member's role, remove
-- a member. Invitations add members (304_identity_invitations.sql).
--
-- Rules, all checked here, under the main account's row lock (so two owners
-- demoting each other at once cannot both pass the last-owner check):
--  * members write (owner, admin); the account is in the active subtree;
--  * only an owner may touch an owner's membership or make someone an owner;
--  * the last owner of a main account can be neither demoted nor removed.
-- Removing a member ends their use of that account at once: authenticate()
-- checks the membership for every session.

-- The membership of user_id exactly at account, locked, or raise P0002.
CREATE FUNCTION tenancy._managed_membership(account text, user_id bigint)
    RETURNS tenancy.memberships
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    m tenancy.memberships;
BEGIN
    PERFORM tenancy._require('members', 'write');
    a := tenancy._visible_account(account);
    -- Serialise with every other membership change of this main account.
    PERFORM FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.main_id FOR UPDATE;
    SELECT * INTO m FROM tenancy.memberships x
    WHERE x.main_id = a.main_id AND x.account_id = a.id AND x.user_id = _managed_membership.user_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'member % of account "%" not found', user_id, a.public_id USING ERRCODE = 'P0002';
    END IF;
    IF m.role = 'owner' AND tenancy.current_role_name() <> 'owner' THEN
        RAISE EXCEPTION 'only an owner may change an owner''s membership' USING ERRCODE = '42501';
    END IF;
    RETURN m;
END $$;

-- Raise unless another owner of the main account remains without m.
CREATE FUNCTION tenancy._keep_an_owner(m tenancy.memberships) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF m.role = 'owner' AND m.account_id = m.main_id AND NOT EXISTS (
            SELECT 1 FROM tenancy.memberships x
            WHERE x.main_id = m.main_id AND x.account_id = m.main_id AND x.role = 'owner'
              AND x.user_id <> m.user_id) THEN
        RAISE EXCEPTION 'the last owner of a main account can be neither demoted nor removed'
            USING ERRCODE = '55000', HINT = 'Make another member an owner first.';
    END IF;
END $$;

-- set_member_role(account, user_id, role): the member's role in that account.
CREATE FUNCTION tenancy.set_member_role(account text, user_id bigint, role text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    m tenancy.memberships := tenancy._managed_membership(account, user_id);
BEGIN
    PERFORM tenancy._check_member_role(set_member_role.role, 'make');
    IF set_member_role.role = m.role THEN
        RETURN;
    END IF;
    IF set_member_role.role <> 'owner' THEN
        PERFORM tenancy._keep_an_owner(m);
    END IF;
    UPDATE tenancy.memberships x SET role = set_member_role.role
    WHERE x.main_id = m.main_id AND x.account_id = m.account_id AND x.user_id = m.user_id;
END $$;

-- remove_member(account, user_id): the membership goes; the user stays.
CREATE FUNCTION tenancy.remove_member(account text, user_id bigint) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    m tenancy.memberships := tenancy._managed_membership(account, user_id);
BEGIN
    PERFORM tenancy._keep_an_owner(m);
    DELETE FROM tenancy.memberships x
    WHERE x.main_id = m.main_id AND x.account_id = m.account_id AND x.user_id = m.user_id;
END $$;

REVOKE ALL ON FUNCTION tenancy._managed_membership(text, bigint), tenancy._keep_an_owner(tenancy.memberships)
    FROM PUBLIC;
