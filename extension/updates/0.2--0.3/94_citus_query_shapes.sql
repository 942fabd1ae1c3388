-- Citus scale-out, 0.2 -> 0.3: query shapes Citus can plan. SQL functions that
-- read tenant tables with their arguments become PL/pgSQL (Citus cannot plan a
-- distributed query with a SQL function's parameters) and name the main account,
-- so that Citus routes them to one shard; EXISTS (SELECT 1 FROM ...) rather than
-- an empty select list, which Citus cannot plan over several shards.

CREATE OR REPLACE FUNCTION tenancy._owned_main_ids(owner_email text) RETURNS bigint[]
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN ARRAY(SELECT m.main_id FROM tenancy.users o
                 JOIN tenancy.memberships m ON m.user_id = o.id AND m.role = 'owner' AND m.account_id = m.main_id
                 WHERE lower(o.email) = lower(owner_email)
                 ORDER BY m.main_id);
END $$;

CREATE OR REPLACE FUNCTION tenancy._chain_active(p tenancy.account_path) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN NOT EXISTS (SELECT FROM tenancy.accounts a
                       WHERE a.main_id = tenancy.root_id(p) AND a.path = ANY (tenancy.ancestors(p))
                         AND a.status <> 'active');
END $$;

CREATE OR REPLACE FUNCTION tenancy._main_account_email(main_id bigint) RETURNS text
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    -- (PL/pgSQL, and the owners read before their users: on Citus memberships
    -- are distributed, users are not, and a SQL function's parameters cannot
    -- be planned there.)
    RETURN (SELECT u.email
            FROM (SELECT m.user_id, m.created_at FROM tenancy.memberships m
                  WHERE m.main_id = _main_account_email.main_id AND m.account_id = _main_account_email.main_id
                    AND m.role = 'owner' OFFSET 0) o
            JOIN tenancy.users u ON u.id = o.user_id
            ORDER BY o.created_at, u.id LIMIT 1);
END $$;

CREATE OR REPLACE FUNCTION tenancy._account_json(a tenancy.accounts) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN jsonb_build_object(
        'id', a.public_id,
        'parent', (SELECT p.public_id FROM tenancy.accounts p
                   WHERE p.main_id = a.main_id AND p.id = a.parent_id
                     AND p.path OPERATOR(tenancy.<@) tenancy.current_path()),
        'name', a.name, 'status', a.status, 'plan', a.plan,
        'branding', coalesce(a.branding, '{}'), 'settings', coalesce(a.settings, '{}'),
        'created_at', a.created_at, 'updated_at', a.updated_at);
END $$;

CREATE OR REPLACE FUNCTION tenancy._mail_branding(p tenancy.account_path) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN coalesce((SELECT jsonb_object_agg(b.key, b.value ORDER BY tenancy.nlevel(a.path))
                     FROM tenancy.accounts a, jsonb_each(a.branding) b
                     WHERE a.main_id = tenancy.root_id(p) AND a.path @> p AND a.branding IS NOT NULL),
                    '{}'::jsonb)
           || jsonb_build_object('account_name', (SELECT a.name FROM tenancy.accounts a
                                                  WHERE a.main_id = tenancy.root_id(p) AND a.path = p));
END $$;

CREATE OR REPLACE FUNCTION tenancy.invite(account text, email text, role text) RETURNS text
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

CREATE OR REPLACE FUNCTION tenancy._keep_an_owner(m tenancy.memberships) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy.revoke_api_key_in(account text, key_id text) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy._api_key_settings_check() RETURNS trigger
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    new_s jsonb := NEW.settings -> 'api_keys';
    v jsonb;
    other text;
    above float8;
BEGIN
    IF new_s IS NOT DISTINCT FROM OLD.settings -> 'api_keys' THEN
        RETURN NEW;
    END IF;
    IF new_s IS NOT NULL AND jsonb_typeof(new_s) <> 'object' THEN
        RAISE EXCEPTION 'settings.api_keys must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT k INTO other FROM jsonb_object_keys(coalesce(new_s, '{}')) k WHERE k <> 'max_lifetime_days' LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'unknown API key setting "%"', other USING ERRCODE = '22023',
            HINT = 'API key settings: max_lifetime_days.';
    END IF;
    v := new_s -> 'max_lifetime_days';
    IF jsonb_typeof(v) = 'null' THEN
        v := NULL;
    END IF;
    IF v IS NOT NULL AND (jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,4}$'
                          OR v::text::integer NOT BETWEEN 1 AND 3650) THEN
        RAISE EXCEPTION 'settings.api_keys.max_lifetime_days must be a whole number of days from 1 to 3650'
            USING ERRCODE = '22023';
    END IF;
    IF tenancy._context_field('account') IS NOT NULL THEN
        PERFORM tenancy._refuse_restricted();
        IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
            RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
        END IF;
    ELSIF NOT tenancy._is_dba_outside_context() THEN
        RAISE EXCEPTION 'only an owner may change the API key settings' USING ERRCODE = '42501';
    END IF;
    IF v IS NOT NULL THEN
        SELECT min((a.settings #>> '{api_keys,max_lifetime_days}')::float8) INTO above
        FROM tenancy.accounts a
        WHERE a.main_id = OLD.main_id AND a.path = ANY (tenancy.ancestors(NEW.path)) AND a.path <> NEW.path
          AND jsonb_typeof(a.settings #> '{api_keys,max_lifetime_days}') = 'number';
        IF above IS NOT NULL AND v::text::integer > above THEN
            RAISE EXCEPTION 'max_lifetime_days may not exceed the % days an ancestor account sets', above
                USING ERRCODE = '22023';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tenancy.create_sub_user(email text, name text, surname text, temp_password text)
    RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    main tenancy.accounts;
    mid bigint;
    max_sub_users integer;
    new_id bigint := nextval('tenancy.sub_user_id_seq');
    pub text;
    clean_email text;
BEGIN
    PERFORM tenancy._require('sub_users', 'write');
    IF tenancy.current_account_id() IS DISTINCT FROM tenancy.current_main_id() THEN
        RAISE EXCEPTION 'sub-users are managed in the main account; act in it' USING ERRCODE = '42501';
    END IF;
    clean_email := tenancy._check_email(create_sub_user.email);
    IF create_sub_user.name IS NULL OR length(btrim(create_sub_user.name)) NOT BETWEEN 1 AND 200
       OR surname IS NULL OR length(btrim(surname)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'name and surname must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    PERFORM tenancy._check_password(temp_password);
    -- One creator at a time per main account, so the plan limit holds. (The
    -- main id as a value: Citus routes a locking read only by a value.)
    mid := tenancy.current_main_id();
    SELECT m.* INTO main FROM tenancy.accounts m WHERE m.main_id = mid AND m.id = mid FOR UPDATE;
    SELECT pl.max_sub_users INTO max_sub_users FROM tenancy.plans pl WHERE pl.name = main.plan;
    IF main.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', main.public_id USING ERRCODE = '55000';
    END IF;
    IF (SELECT count(*) FROM tenancy.sub_users x WHERE x.main_id = main.id) >= max_sub_users THEN
        RAISE EXCEPTION 'plan "%" allows % sub-users', main.plan, max_sub_users USING ERRCODE = '53400';
    END IF;
    IF EXISTS (SELECT FROM tenancy.sub_users x WHERE x.main_id = main.id AND lower(x.email) = lower(clean_email)) THEN
        RAISE EXCEPTION 'a sub-user with email "%" already exists', clean_email USING ERRCODE = '23505';
    END IF;
    pub := format('sub_%s_%s', main.id, new_id);
    INSERT INTO tenancy.sub_users (account_path, id, public_id, email, name, surname, password_hash)
    VALUES (main.path, new_id, pub, clean_email, btrim(create_sub_user.name), btrim(surname),
            tenancy.hash_password(temp_password));
    RETURN pub;
END $$;

CREATE OR REPLACE FUNCTION tenancy.create_sub_user_in(account text, email text, name text, surname text,
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

CREATE OR REPLACE FUNCTION tenancy.change_password(old_password text, new_password text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions := tenancy._require_session();
    stored text;
    pw_key text;
    new_hash text;
BEGIN
    -- The password alone must not let anyone change it (nor end the owner's sessions).
    IF NOT s.mfa_verified THEN
        RAISE EXCEPTION 'the session must complete tenancy.verify_mfa() first' USING ERRCODE = '28T01';
    END IF;
    PERFORM tenancy._check_password(new_password);
    IF s.principal_kind = 'user' THEN
        SELECT u.password_hash INTO stored FROM tenancy.users u WHERE u.id = s.user_id FOR UPDATE;
    ELSE
        SELECT su.password_hash INTO stored FROM tenancy.sub_users su
        WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id FOR UPDATE;
    END IF;
    -- Guesses of the current password are throttled like logins, per
    -- principal. The error rolls the table counter back: the shared-memory
    -- counter (tenancy preloaded) is what counts here.
    pw_key := CASE s.principal_kind WHEN 'user' THEN format('password:user:%s', s.user_id)
                  ELSE format('password:sub_user:%s:%s', s.sub_user_main_id, s.sub_user_id) END;
    IF NOT tenancy._throttle_enter(pw_key) THEN
        PERFORM tenancy.dummy_password_check(coalesce(old_password, ''));
        RAISE EXCEPTION 'the current password is not correct, or too many attempts' USING ERRCODE = '28P01';
    END IF;
    IF old_password IS NULL OR stored IS NULL OR NOT tenancy.verify_password(old_password, stored) THEN
        PERFORM tenancy._record_failure(pw_key);
        RAISE EXCEPTION 'the current password is not correct, or too many attempts' USING ERRCODE = '28P01';
    END IF;
    PERFORM tenancy._clear_failures(pw_key);
    IF old_password = new_password THEN
        RAISE EXCEPTION 'the new password must differ from the current one' USING ERRCODE = '22023';
    END IF;
    IF s.principal_kind = 'user' THEN
        UPDATE tenancy.users u SET password_hash = tenancy.hash_password(new_password),
                                   must_change_password = false
        WHERE u.id = s.user_id;
        -- A user row belongs to no account: the change is an event in the
        -- session's account (a sub-user's is an entry on tenancy.sub_users).
        PERFORM tenancy._audit_session_event(s, 'password.change',
            (SELECT lower(u.email) FROM tenancy.users u WHERE u.id = s.user_id), NULL);
    ELSE
        new_hash := tenancy.hash_password(new_password);  -- a value: Citus updates shards only with one
        UPDATE tenancy.sub_users su SET password_hash = new_hash,
                                        must_change_password = false, temp_password_expires_at = NULL
        WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id;
    END IF;
    -- Other sessions of this principal end: whoever held the old password is out.
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.id <> s.id AND x.revoked_at IS NULL AND x.principal_kind = s.principal_kind
      AND x.user_id IS NOT DISTINCT FROM s.user_id
      AND x.sub_user_main_id IS NOT DISTINCT FROM s.sub_user_main_id
      AND x.sub_user_id IS NOT DISTINCT FROM s.sub_user_id;
    PERFORM tenancy._refresh_context();
END $$;

CREATE OR REPLACE FUNCTION tenancy.activate_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
    temp_password text := tenancy.random_token(16);
    main tenancy.accounts;
    new_hash text;
BEGIN
    SELECT * INTO main FROM tenancy.accounts a WHERE a.main_id = su.main_id AND a.id = su.main_id;
    new_hash := tenancy.hash_password(temp_password);  -- a value: Citus updates shards only with one
    UPDATE tenancy.sub_users x
    SET status = 'active', password_hash = new_hash,
        must_change_password = true, temp_password_expires_at = now() + interval '7 days',
        activated_at = now()
    WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
    PERFORM tenancy._enqueue_mail('sub_user_credentials', main.path, su.email,
        format('Your access to %s', main.name),
        format(E'Hello %s %s,\n\nYou have been given access to %s as a sub-user.\n\n'
               'Log in on the SUB-USER tab of the login page with:\n'
               '  main account email: %s\n  sub-user email: %s\n  temporary password: %s\n\n'
               'You must change this password at first login; it expires on %s.\n',
               su.name, su.surname, main.name, tenancy._main_account_email(su.main_id), su.email,
               temp_password, to_char(now() + interval '7 days', 'YYYY-MM-DD HH24:MI TZ')),
        jsonb_build_object('name', su.name, 'surname', su.surname, 'account', main.name,
                           'main_account_email', tenancy._main_account_email(su.main_id),
                           'email', su.email, 'temp_password', temp_password,
                           'expires_at', now() + interval '7 days'));
END $$;

CREATE OR REPLACE FUNCTION tenancy.set_sub_user_password(sub_user text, password text) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy._login_answer(token text) RETURNS jsonb
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    s tenancy.sessions;
BEGIN
    -- (PL/pgSQL, one table at a time: on Citus sub_users are distributed,
    -- sessions and users are not, and a SQL function's parameters cannot be
    -- planned there.)
    SELECT * INTO s FROM tenancy.sessions x WHERE x.id = split_part(token, '_', 2)::bigint;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'token', token,
        'expires_at', s.expires_at,
        'account', tenancy.current_account(),
        'mfa_required', NOT s.mfa_verified,
        'must_change_password', coalesce(
            (SELECT u.must_change_password FROM tenancy.users u WHERE u.id = s.user_id),
            (SELECT su.must_change_password FROM tenancy.sub_users su
             WHERE su.main_id = s.sub_user_main_id AND su.id = s.sub_user_id),
            false));
END $$;
