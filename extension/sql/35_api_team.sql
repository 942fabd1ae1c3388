-- Team management as the gateway's routes need it (issue 18): sub-users and
-- API keys addressed through the account in the route's path, and a manager's
-- reset of a sub-user's password. Members and invitations: 30/31.
--
-- Every function here takes the account of the path and checks that what it
-- touches belongs to that account, so a route cannot act on one account's
-- sub-user or key while naming another. Each answers as the API shows the
-- resource (jsonb), never with a secret other than the one it exists to give.

-- ---- sub-users ------------------------------------------------------------------------------

-- A sub-user as the API shows it (never the hash).
CREATE FUNCTION tenancy._sub_user_json(su tenancy.sub_users) RETURNS jsonb
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT jsonb_build_object('id', su.public_id, 'email', su.email, 'name', su.name, 'surname', su.surname,
                              'active', su.status = 'active', 'visible', su.visible,
                              'must_change_password', su.must_change_password,
                              'created_at', su.created_at, 'activated_at', su.activated_at,
                              'last_login_at', su.last_login_at)
$$;

-- The main account `account` names, in the active subtree. Sub-users belong
-- to main accounts: a subaccount has none to manage.
CREATE FUNCTION tenancy._sub_user_home(account text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._visible_account(account);
BEGIN
    IF a.id <> a.main_id THEN
        RAISE EXCEPTION 'sub-users are managed in the main account; account "%" is a subaccount', account
            USING ERRCODE = '42501';
    END IF;
    RETURN a;
END $$;

-- The sub-user of main account `account`, locked, or "not found" (also when it
-- belongs to another account: the same answer as a missing one).
CREATE FUNCTION tenancy._sub_user_at(account text, sub_user text) RETURNS tenancy.sub_users
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    home tenancy.accounts := tenancy._sub_user_home(account);
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    IF su.main_id <> home.id THEN
        RAISE EXCEPTION 'sub-user "%" not found', sub_user USING ERRCODE = 'P0002';
    END IF;
    RETURN su;
END $$;

-- set_sub_user_password(sub_user, password): a manager (sub_users write)
-- resets a sub-user's password. It is a temporary password, as at activation:
-- the sub-user must change it at the next login, within 7 days, and every open
-- session of the sub-user ends (whoever held the old password is out). Nothing
-- is mailed: the manager chose it and hands it over.
CREATE FUNCTION tenancy.set_sub_user_password(sub_user text, password text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
    new_hash text;
BEGIN
    PERFORM tenancy._check_password(password);
    new_hash := tenancy.hash_password(password);  -- a value: Citus updates shards only with one
    UPDATE tenancy.sub_users x
    SET password_hash = new_hash, must_change_password = true,
        temp_password_expires_at = now() + interval '7 days'
    WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
END $$;

-- create_sub_user_in(account, ...): create_sub_user in the main account the
-- path names; answers the new sub-user (inactive).
CREATE FUNCTION tenancy.create_sub_user_in(account text, email text, name text, surname text,
                                           temp_password text) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    home tenancy.accounts := tenancy._sub_user_home(account);
    pub text := tenancy.create_sub_user(email, name, surname, temp_password);
    su tenancy.sub_users;
BEGIN
    -- The row first, then its JSON here: on Citus a whole-row argument in a
    -- query pushed to a shard names the shard's row type, not sub_users.
    SELECT x.* INTO su FROM tenancy.sub_users x WHERE x.main_id = home.id AND x.public_id = pub;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN tenancy._sub_user_json(su);
END $$;

-- update_sub_user_in(account, sub_user, active, visible, name, surname,
-- password): the edit form of a sub-user; NULL keeps a value. active changes
-- the status only when it differs: true activates (fresh credentials by
-- email, see activate_sub_user), false deactivates (refused at once). A new
-- password is a temporary one (set_sub_user_password). Activation issues its
-- own password, so active = true with a password is refused. Answers the
-- sub-user as it now is.
CREATE FUNCTION tenancy.update_sub_user_in(account text, sub_user text, active boolean DEFAULT NULL,
                                           visible boolean DEFAULT NULL, name text DEFAULT NULL,
                                           surname text DEFAULT NULL, password text DEFAULT NULL)
    RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._sub_user_at(account, sub_user);
BEGIN
    IF active AND password IS NOT NULL THEN
        RAISE EXCEPTION 'activation mails a fresh temporary password: set active or password, not both'
            USING ERRCODE = '22023';
    END IF;
    IF password IS NOT NULL THEN
        PERFORM tenancy._check_password(password);  -- before anything changes
    END IF;
    IF name IS NOT NULL OR surname IS NOT NULL OR visible IS NOT NULL THEN
        PERFORM tenancy.update_sub_user(su.public_id, name, surname, visible);
    END IF;
    IF password IS NOT NULL THEN
        PERFORM tenancy.set_sub_user_password(su.public_id, password);
    END IF;
    IF active AND su.status <> 'active' THEN
        PERFORM tenancy.activate_sub_user(su.public_id);
    ELSIF NOT active AND su.status <> 'inactive' THEN
        PERFORM tenancy.deactivate_sub_user(su.public_id);
    END IF;
    SELECT * INTO su FROM tenancy.sub_users x WHERE x.main_id = su.main_id AND x.id = su.id;
    RETURN tenancy._sub_user_json(su);
END $$;

-- delete_sub_user_in(account, sub_user): for good, as delete_sub_user.
CREATE FUNCTION tenancy.delete_sub_user_in(account text, sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._sub_user_at(account, sub_user);
BEGIN
    PERFORM tenancy.delete_sub_user(su.public_id);
END $$;

-- ---- API keys ---------------------------------------------------------------------------------

-- create_api_key_in(account, name, role, expires_at): create_api_key, answered
-- as {id, key, prefix, name, role, expires_at, created_at}: the only answer
-- that ever holds the full key.
CREATE FUNCTION tenancy.create_api_key_in(account text, name text, role text,
                                          expires_at timestamptz DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    full_key text := tenancy.create_api_key(account, name, role, expires_at);
    parts text[] := tenancy._id_parts(full_key, 'tnc', 2, 43);
    k tenancy.api_keys;
BEGIN
    SELECT * INTO STRICT k FROM tenancy.api_keys x
    WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint;
    RETURN jsonb_build_object('id', k.public_id, 'key', full_key, 'prefix', k.prefix, 'name', k.name,
                              'role', k.role, 'expires_at', k.expires_at, 'created_at', k.created_at);
END $$;

-- revoke_api_key_in(account, key_id): revoke_api_key for a key of exactly
-- that account; a key of any other account is "not found".
CREATE FUNCTION tenancy.revoke_api_key_in(account text, key_id text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    parts text[] := tenancy._id_parts(key_id, 'key', 2, 0);
BEGIN
    PERFORM tenancy._require('api_keys', 'write');
    a := tenancy._visible_account(account);
    IF parts IS NULL OR NOT EXISTS (
            SELECT 1 FROM tenancy.api_keys k
            WHERE k.main_id = parts[1]::bigint AND k.id = parts[2]::bigint AND k.account_path = a.path) THEN
        RAISE EXCEPTION 'API key "%" not found', key_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM tenancy.revoke_api_key(key_id);
END $$;

REVOKE ALL ON FUNCTION tenancy._sub_user_json(tenancy.sub_users), tenancy._sub_user_home(text),
    tenancy._sub_user_at(text, text) FROM PUBLIC;
