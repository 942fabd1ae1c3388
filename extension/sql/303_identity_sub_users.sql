-- Identity, part 4: sub-users (the AI4CALL model): create, activate (fresh
-- credentials by mail), deactivate, delete, edit, and their login.

-- ---- sub-users ------------------------------------------------------------------------------

-- The sub-user with this public id in the active main account, or raise.
CREATE FUNCTION tenancy._managed_sub_user(sub_user text, lock boolean DEFAULT false)
    RETURNS tenancy.sub_users
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    parts text[] := tenancy._id_parts(sub_user, 'sub', 2, 0);
    su tenancy.sub_users;
BEGIN
    PERFORM tenancy._require('sub_users', 'write');
    IF parts IS NOT NULL THEN
        IF lock THEN
            SELECT * INTO su FROM tenancy.sub_users x
            WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
              AND x.account_path <@ tenancy.current_path()
            FOR UPDATE;
        ELSE
            SELECT * INTO su FROM tenancy.sub_users x
            WHERE x.main_id = parts[1]::bigint AND x.id = parts[2]::bigint
              AND x.account_path <@ tenancy.current_path();
        END IF;
    END IF;
    IF su.id IS NULL THEN
        RAISE EXCEPTION 'sub-user "%" not found', sub_user USING ERRCODE = 'P0002';
    END IF;
    RETURN su;
END $$;

-- The email the sub-user types as "main account email": the first owner's.
CREATE FUNCTION tenancy._main_account_email(main_id bigint) RETURNS text
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

CREATE FUNCTION tenancy.create_sub_user(email text, name text, surname text, temp_password text)
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

-- Activation (and every re-activation, or activating an active sub-user, which
-- resets its password) issues fresh credentials: a new random temporary
-- password, valid 7 days, that must be changed at first login, sent by email
-- through the outbox. Open sessions of the sub-user end.
CREATE FUNCTION tenancy.activate_sub_user(sub_user text) RETURNS void
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

CREATE FUNCTION tenancy.deactivate_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    UPDATE tenancy.sub_users x SET status = 'inactive' WHERE x.main_id = su.main_id AND x.id = su.id;
    UPDATE tenancy.sessions x SET revoked_at = now()
    WHERE x.sub_user_main_id = su.main_id AND x.sub_user_id = su.id AND x.revoked_at IS NULL;
END $$;

-- For good: the row and its sessions go.
CREATE FUNCTION tenancy.delete_sub_user(sub_user text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    DELETE FROM tenancy.sub_users x WHERE x.main_id = su.main_id AND x.id = su.id;
END $$;

-- Edit: name, surname, visibility (NULL keeps the current value).
CREATE FUNCTION tenancy.update_sub_user(sub_user text, name text DEFAULT NULL, surname text DEFAULT NULL,
                                        visible boolean DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    su tenancy.sub_users := tenancy._managed_sub_user(sub_user, true);
BEGIN
    IF (update_sub_user.name IS NOT NULL AND length(btrim(update_sub_user.name)) NOT BETWEEN 1 AND 200)
       OR (update_sub_user.surname IS NOT NULL AND length(btrim(update_sub_user.surname)) NOT BETWEEN 1 AND 200) THEN
        RAISE EXCEPTION 'name and surname must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    UPDATE tenancy.sub_users x
    SET name = coalesce(btrim(update_sub_user.name), x.name),
        surname = coalesce(btrim(update_sub_user.surname), x.surname),
        visible = coalesce(update_sub_user.visible, x.visible)
    WHERE x.main_id = su.main_id AND x.id = su.id;
END $$;

-- login_sub_user(main account email, sub-user email, password). The main
-- account email is the email of an owner of the main account. Failures and
-- throttling as for login().
CREATE FUNCTION tenancy.login_sub_user(main_account_email text, email text, password text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    mains bigint[];
    login_keys text[];
    entered_keys text[] := '{}';
    entered_mains bigint[] := '{}';
    i integer;
    su tenancy.sub_users;
    candidate tenancy.sub_users;
    main tenancy.accounts;
    token text;
BEGIN
    IF main_account_email IS NULL OR login_sub_user.email IS NULL OR login_sub_user.password IS NULL THEN
        RETURN tenancy._login_failed();
    END IF;
    -- Throttled per sub-user targeted: (main account id, sub-user email) for
    -- each main account the email typed owns, so a main account's N owners'
    -- emails do not buy 5 x N guesses; the typed pair when it owns none (the
    -- same cost and answer: nothing tells whether the names exist).
    mains := tenancy._owned_main_ids(main_account_email);
    login_keys := CASE WHEN cardinality(mains) = 0
                       THEN ARRAY[format('sub:%s:%s', lower(main_account_email), lower(login_sub_user.email))]
                       ELSE ARRAY(SELECT format('subid:%s:%s', x, lower(login_sub_user.email))
                                  FROM unnest(mains) WITH ORDINALITY AS u(x, n) ORDER BY n) END;
    FOR i IN 1 .. cardinality(login_keys) LOOP
        IF tenancy._throttle_enter(login_keys[i]) THEN
            entered_keys := entered_keys || login_keys[i];
            entered_mains := entered_mains || mains[i];
        END IF;
    END LOOP;
    IF cardinality(entered_keys) = 0 THEN
        PERFORM tenancy.dummy_password_check(login_sub_user.password);
        PERFORM tenancy._audit_sub_login_failure(main_account_email, login_sub_user.email, 'throttled', login_keys);
        RETURN tenancy._login_failed();
    END IF;
    -- The same person may own several main accounts: the first sub-user whose
    -- password matches (usually there is exactly one candidate), among the
    -- main accounts not throttled for this name.
    FOR candidate IN
        SELECT x.* FROM tenancy.sub_users x
        WHERE x.main_id = ANY (entered_mains) AND lower(x.email) = lower(login_sub_user.email)
        ORDER BY x.main_id
    LOOP
        IF tenancy.verify_password(login_sub_user.password, candidate.password_hash) THEN
            su := candidate;
            EXIT;
        END IF;
    END LOOP;
    IF su.id IS NULL THEN
        IF candidate.id IS NULL THEN
            PERFORM tenancy.dummy_password_check(login_sub_user.password);
        END IF;
        FOR i IN 1 .. cardinality(entered_keys) LOOP
            PERFORM tenancy._record_failure(entered_keys[i]);
        END LOOP;
        PERFORM tenancy._audit_sub_login_failure(main_account_email, login_sub_user.email,
            CASE WHEN candidate.id IS NULL THEN 'unknown_sub_user' ELSE 'bad_password' END, login_keys);
        RETURN tenancy._login_failed();
    END IF;
    PERFORM tenancy._clear_failures(format('subid:%s:%s', su.main_id, lower(login_sub_user.email)));
    -- The password is right: from here on errors may say why.
    IF su.status <> 'active' THEN
        RAISE EXCEPTION 'sub-user "%" is inactive', su.public_id USING ERRCODE = '28000';
    END IF;
    IF su.must_change_password AND su.temp_password_expires_at IS NOT NULL
       AND su.temp_password_expires_at <= now() THEN
        RAISE EXCEPTION 'the temporary password has expired; ask the main account to re-activate you'
            USING ERRCODE = '28000';
    END IF;
    SELECT * INTO main FROM tenancy.accounts a WHERE a.main_id = su.main_id AND a.id = su.main_id;
    IF main.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', main.public_id USING ERRCODE = '28000';
    END IF;
    UPDATE tenancy.sub_users x SET last_login_at = now() WHERE x.main_id = su.main_id AND x.id = su.id;
    token := tenancy._new_session('sub_user', NULL, su.main_id, su.id, su.main_id, su.main_id, true);
    PERFORM tenancy._establish('sub_user', su.main_id, split_part(token, '_', 2)::bigint, su.main_id,
                               'transaction');
    PERFORM tenancy._audit_record(su.main_id, su.account_path, 'login.success', lower(su.email),
        jsonb_build_object('login', 'sub_user', 'must_change_password', su.must_change_password),
        'sub_user', su.id::text, split_part(token, '_', 2)::bigint);
    RETURN token;
END $$;

REVOKE ALL ON FUNCTION tenancy._managed_sub_user(text, boolean), tenancy._main_account_email(bigint) FROM PUBLIC;
