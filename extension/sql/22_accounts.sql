-- Accounts, plans, users and memberships.
--
-- An account's path (main id . ... . own id) is its single source of truth:
-- id, parent_id and main_id are generated from it. Every tenant table points
-- at its account by path with ON UPDATE CASCADE, so moving a subtree (one
-- UPDATE of accounts.path) carries every row along, and an insert racing a move
-- either lands before it (and is carried) or fails its foreign key check after
-- it: never an orphan under a stale path.

CREATE TABLE tenancy.plans (
    name text PRIMARY KEY,
    max_subaccounts integer NOT NULL CHECK (max_subaccounts >= 0),
    max_depth integer NOT NULL CHECK (max_depth >= 1),      -- levels, the main account is 1
    max_sub_users integer NOT NULL DEFAULT 10 CHECK (max_sub_users >= 0),
    max_api_keys integer NOT NULL CHECK (max_api_keys >= 0), -- active keys per account
    phi_protection boolean NOT NULL DEFAULT false,
    audit_log boolean NOT NULL DEFAULT true,
    call_recording boolean NOT NULL DEFAULT false
);
INSERT INTO tenancy.plans VALUES
    ('free', 0, 1, 2, 2, false, false, false),
    ('standard', 100, 4, 10, 20, false, true, false),
    ('enterprise', 100000, 8, 50, 200, true, true, true);

CREATE SEQUENCE tenancy.account_id_seq;

CREATE TABLE tenancy.accounts (
    path tenancy.account_path NOT NULL,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(path)) STORED,
    id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(path)) STORED,
    parent_id bigint GENERATED ALWAYS AS (
        CASE WHEN tenancy.nlevel(path) > 1 THEN tenancy.leaf(tenancy.parent(path)) END) STORED,
    public_id text NOT NULL,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    plan text NOT NULL REFERENCES tenancy.plans (name),
    branding jsonb CHECK (branding IS NULL OR jsonb_typeof(branding) = 'object'),
    settings jsonb CHECK (settings IS NULL OR jsonb_typeof(settings) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, id),
    UNIQUE (main_id, public_id),
    -- system-generated, never chosen by a client: uniqueness reveals nothing.
    UNIQUE (path)
);

-- Public ids of accounts promoted to main accounts keep working.
CREATE TABLE tenancy.account_forwarding (
    public_id text PRIMARY KEY,
    main_id bigint NOT NULL
);

-- Users are global identities (logins come with the identity module).
CREATE TABLE tenancy.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    name text,
    password_hash text,
    must_change_password boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON tenancy.users (lower(email));

CREATE TABLE tenancy.memberships (
    account_path tenancy.account_path NOT NULL
        REFERENCES tenancy.accounts (path) ON UPDATE CASCADE ON DELETE CASCADE,
    main_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.root_id(account_path)) STORED,
    account_id bigint NOT NULL GENERATED ALWAYS AS (tenancy.leaf(account_path)) STORED,
    user_id bigint NOT NULL REFERENCES tenancy.users (id) ON DELETE CASCADE,
    role text NOT NULL REFERENCES tenancy.roles (name),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (main_id, account_id, user_id)
);
CREATE INDEX memberships_account_path ON tenancy.memberships (account_path);
CREATE INDEX memberships_user ON tenancy.memberships (user_id);

-- ---- lookups (internal) ----------------------------------------------------

-- Splits "<prefix>_<id>_..._<id>[_<secret>]" into its ids (1 to 18 digits each)
-- and, when secret_len > 0, a trailing base64url secret of exactly that length.
-- NULL when malformed. A C scanner (credentials.cpp): bounded repetition such as
-- {1,18} or {43} costs ~100 us a match in PostgreSQL's regex engine.
CREATE FUNCTION tenancy._id_parts(value text, prefix text, ids integer, secret_len integer)
    RETURNS text[]
    AS 'MODULE_PATHNAME', 'tenancy_id_parts' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- The account with this public id, or a row of NULLs. The id embeds the main
-- account, so the lookup needs no global index.
CREATE FUNCTION tenancy._find_account(public_id text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    hint bigint;
    found_row tenancy.accounts;
BEGIN
    -- (unbounded classes + length checks: bounded repetition is slow in PostgreSQL's regex engine)
    IF public_id IS NULL OR public_id !~ '^acc_[0-9]+_[0-9a-f]+$'
       OR length(split_part(public_id, '_', 2)) > 18 OR length(split_part(public_id, '_', 3)) <> 12 THEN
        RETURN found_row;
    END IF;
    hint := split_part(public_id, '_', 2)::bigint;
    SELECT * INTO found_row FROM tenancy.accounts a
    WHERE a.main_id = hint AND a.public_id = _find_account.public_id;
    IF NOT FOUND THEN
        SELECT a.* INTO found_row
        FROM tenancy.account_forwarding f
        JOIN tenancy.accounts a ON a.main_id = f.main_id AND a.public_id = f.public_id
        WHERE f.public_id = _find_account.public_id;
    END IF;
    RETURN found_row;
END $$;

-- The account, if it lies in the active account's subtree; otherwise the same
-- "not found" as for an account that does not exist (no existence leak).
CREATE FUNCTION tenancy._visible_account(public_id text) RETURNS tenancy.accounts
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(public_id);
BEGIN
    IF a.id IS NULL OR tenancy.current_path() IS NULL OR NOT (a.path <@ tenancy.current_path()) THEN
        RAISE EXCEPTION 'account "%" not found', public_id USING ERRCODE = 'P0002';
    END IF;
    RETURN a;
END $$;

CREATE FUNCTION tenancy._new_account_public_id(main_id bigint) RETURNS text
    LANGUAGE sql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT format('acc_%s_%s', main_id, encode(tenancy._random_bytes(6), 'hex')) $$;

CREATE FUNCTION tenancy._check_name(name text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF name IS NULL OR length(btrim(name)) = 0 OR length(name) > 200 THEN
        RAISE EXCEPTION 'account name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    RETURN btrim(name);
END $$;

-- ---- DBA functions ------------------------------------------------------------

CREATE FUNCTION tenancy.create_main_account(name text, owner_email text, owner_password text,
                                            plan text DEFAULT 'standard') RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    new_id bigint;
    pub text;
    owner_id bigint;
    clean_name text := tenancy._check_name(name);
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.plans p WHERE p.name = create_main_account.plan) THEN
        RAISE EXCEPTION 'unknown plan "%"', plan USING ERRCODE = '22023';
    END IF;
    IF owner_email IS NULL OR owner_email !~ '^[^@\s]+@[^@\s]+$' OR length(owner_email) > 254 THEN
        RAISE EXCEPTION 'owner email is not valid' USING ERRCODE = '22023';
    END IF;
    new_id := nextval('tenancy.account_id_seq');
    pub := tenancy._new_account_public_id(new_id);
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.accounts (main_id, path, public_id, name, plan)
        VALUES (new_id, new_id::text::tenancy.account_path, pub, clean_name, create_main_account.plan);
    ELSE
        INSERT INTO tenancy.accounts (path, public_id, name, plan)
        VALUES (new_id::text::tenancy.account_path, pub, clean_name, create_main_account.plan);
    END IF;

    SELECT u.id INTO owner_id FROM tenancy.users u WHERE lower(u.email) = lower(owner_email);
    IF NOT FOUND THEN
        -- An existing user keeps their password; a new one gets this one.
        INSERT INTO tenancy.users (email, password_hash)
        VALUES (owner_email, tenancy.hash_password(owner_password))
        RETURNING id INTO owner_id;
    END IF;
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.memberships (main_id, account_path, user_id, role)
        VALUES (new_id, new_id::text::tenancy.account_path, owner_id, 'owner');
        -- Its transcript data key, made here on the coordinator: transcript_keys
        -- is a reference table there, read on whichever node holds the shard.
        PERFORM tenancy._transcript_key_id(new_id);
    ELSE
        INSERT INTO tenancy.memberships (account_path, user_id, role)
        VALUES (new_id::text::tenancy.account_path, owner_id, 'owner');
    END IF;
    RETURN pub;
END $$;

-- Make a user an owner of an account (DBA only, never through the gateway);
-- by default the previous owners become admins.
CREATE FUNCTION tenancy.transfer_ownership(account text, new_owner_email text,
                                           demote_previous boolean DEFAULT true) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
    uid bigint;
BEGIN
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    SELECT u.id INTO uid FROM tenancy.users u WHERE lower(u.email) = lower(new_owner_email);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'user "%" not found', new_owner_email USING ERRCODE = 'P0002';
    END IF;
    IF demote_previous THEN
        UPDATE tenancy.memberships m SET role = 'admin'
        WHERE m.main_id = a.main_id AND m.account_id = a.id AND m.role = 'owner' AND m.user_id <> uid;
    END IF;
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.memberships (main_id, account_path, user_id, role)
        VALUES (a.main_id, a.path, uid, 'owner')
        ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = 'owner';
    ELSE
        INSERT INTO tenancy.memberships (account_path, user_id, role) VALUES (a.path, uid, 'owner')
        ON CONFLICT (main_id, account_id, user_id) DO UPDATE SET role = 'owner';
    END IF;
END $$;

-- Promote a subaccount (with its subtree and rows) to a main account. Its API
-- keys are revoked: the ownership boundary changed, so credentials are
-- re-issued, as for a transfer of ownership.
CREATE FUNCTION tenancy.promote_account(account text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts := tenancy._find_account(account);
BEGIN
    IF a.id IS NULL THEN
        RAISE EXCEPTION 'account "%" not found', account USING ERRCODE = 'P0002';
    END IF;
    IF a.parent_id IS NULL THEN
        RAISE EXCEPTION 'account "%" is already a main account', account USING ERRCODE = '22023';
    END IF;
    PERFORM FROM tenancy.accounts m WHERE m.main_id = a.main_id AND m.id = a.main_id FOR UPDATE;
    -- On Citus main_id is the distribution column, which Citus never updates:
    -- the subtree's rows move to the new main account's shard (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        PERFORM tenancy._citus_promote(a);
        RETURN;
    END IF;
    UPDATE tenancy.api_keys k SET revoked_at = now()
    WHERE k.account_path <@ a.path AND k.revoked_at IS NULL;
    INSERT INTO tenancy.account_forwarding (public_id, main_id)
    SELECT x.public_id, a.id FROM tenancy.accounts x WHERE x.path <@ a.path
    ON CONFLICT (public_id) DO UPDATE SET main_id = excluded.main_id;
    UPDATE tenancy.accounts x
    SET path = tenancy.subpath(x.path, tenancy.nlevel(a.path) - 1), updated_at = now()
    WHERE x.path <@ a.path;
END $$;

-- ---- in-context functions ------------------------------------------------------

CREATE FUNCTION tenancy.create_account(parent text, name text) RETURNS text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    p tenancy.accounts;
    main_plan tenancy.plans;
    subaccounts bigint;
    new_id bigint;
    pub text;
    clean_name text;
BEGIN
    PERFORM tenancy._require('accounts', 'write');
    p := tenancy._visible_account(parent);
    clean_name := tenancy._check_name(name);
    IF p.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', parent USING ERRCODE = '55000';
    END IF;
    -- One creator at a time per main account, so limits hold under concurrency.
    SELECT pl.* INTO main_plan
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = p.main_id AND m.id = p.main_id
    FOR UPDATE OF m;
    IF tenancy.nlevel(p.path) + 1 > main_plan.max_depth THEN
        RAISE EXCEPTION 'plan "%" allows accounts % levels deep', main_plan.name, main_plan.max_depth
            USING ERRCODE = '53400';
    END IF;
    SELECT count(*) INTO subaccounts FROM tenancy.accounts a
    WHERE a.main_id = p.main_id AND a.parent_id IS NOT NULL;
    IF subaccounts >= main_plan.max_subaccounts THEN
        RAISE EXCEPTION 'plan "%" allows % subaccounts', main_plan.name, main_plan.max_subaccounts
            USING ERRCODE = '53400';
    END IF;
    new_id := nextval('tenancy.account_id_seq');
    pub := tenancy._new_account_public_id(p.main_id);
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.accounts (main_id, path, public_id, name, plan)
        VALUES (p.main_id, p.path OPERATOR(tenancy.||) new_id, pub, clean_name, main_plan.name);
    ELSE
        INSERT INTO tenancy.accounts (path, public_id, name, plan)
        VALUES (p.path OPERATOR(tenancy.||) new_id, pub, clean_name, main_plan.name);
    END IF;
    RETURN pub;
END $$;

-- Soft delete: the subtree stops authenticating, its data is kept.
CREATE FUNCTION tenancy._set_status(account text, new_status text) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
BEGIN
    PERFORM tenancy._require('accounts', 'write');
    a := tenancy._visible_account(account);
    IF a.path = tenancy.current_path() THEN
        RAISE EXCEPTION 'an account cannot change its own status; act in an ancestor'
            USING ERRCODE = '42501';
    END IF;
    UPDATE tenancy.accounts x SET status = new_status, updated_at = now()
    WHERE x.main_id = a.main_id AND x.id = a.id;
END $$;
REVOKE ALL ON FUNCTION tenancy._set_status(text, text) FROM PUBLIC;

CREATE FUNCTION tenancy.deactivate_account(account text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._set_status(account, 'inactive') $$;

CREATE FUNCTION tenancy.reactivate_account(account text) RETURNS void
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$ SELECT tenancy._set_status(account, 'active') $$;

-- Move a subtree, with all its rows, under another parent in the same main
-- account (owners only).
CREATE FUNCTION tenancy.move_account(account text, new_parent text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    a tenancy.accounts;
    np tenancy.accounts;
    max_depth integer;
    subtree_depth integer;
BEGIN
    IF tenancy.current_role_name() IS DISTINCT FROM 'owner' THEN
        RAISE EXCEPTION 'only an owner may move accounts' USING ERRCODE = '42501';
    END IF;
    a := tenancy._visible_account(account);
    np := tenancy._visible_account(new_parent);
    IF a.path = tenancy.current_path() THEN
        RAISE EXCEPTION 'an account cannot move itself; act in an ancestor' USING ERRCODE = '42501';
    END IF;
    IF np.path <@ a.path THEN
        RAISE EXCEPTION 'cannot move account "%" under itself or its descendant "%"', account, new_parent
            USING ERRCODE = '22023';
    END IF;
    IF a.parent_id = np.id THEN
        RETURN;
    END IF;
    SELECT pl.max_depth INTO max_depth
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = a.main_id AND m.id = a.main_id
    FOR UPDATE OF m;
    SELECT max(tenancy.nlevel(x.path)) - tenancy.nlevel(a.path) + 1 INTO subtree_depth
    FROM tenancy.accounts x WHERE x.path <@ a.path;
    IF tenancy.nlevel(np.path) + subtree_depth > max_depth THEN
        RAISE EXCEPTION 'the move would nest accounts deeper than % levels', max_depth
            USING ERRCODE = '53400';
    END IF;
    -- One statement; foreign keys cascade the new paths into every tenant table.
    UPDATE tenancy.accounts x
    SET path = np.path OPERATOR(tenancy.||) tenancy.subpath(x.path, tenancy.nlevel(a.path) - 1),
        updated_at = now()
    WHERE x.path <@ a.path;
END $$;

-- account_tree(account): the account and its descendants as one nested JSON
-- document {id, name, status, plan, children: [...]}, children by creation
-- order (path order). Default: the active account; one outside the active
-- subtree is "not found", like everywhere else. Built a level at a time,
-- deepest first: each level's nodes take their children from the level below
-- in one grouped join, so the cost grows with the subtree, not its square.
-- Each query names the main account (on Citus: its shard alone).
CREATE FUNCTION tenancy.account_tree(account text DEFAULT NULL) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    top tenancy.accounts;
    parents bigint[];  -- the level below: each node's parent id, in path order
    nodes jsonb[];
BEGIN
    IF tenancy._context_field('account') IS NULL THEN
        RAISE EXCEPTION 'no tenancy context: call tenancy.authenticate() first' USING ERRCODE = '28000';
    END IF;
    PERFORM tenancy._refuse_restricted();
    top := tenancy._visible_account(coalesce(account, tenancy.current_account()));
    FOR depth IN REVERSE (SELECT max(tenancy.nlevel(a.path)) FROM tenancy.accounts a
                          WHERE a.main_id = top.main_id AND a.path <@ top.path)
                         .. tenancy.nlevel(top.path) LOOP
        SELECT array_agg(x.parent_id ORDER BY x.path), array_agg(x.node ORDER BY x.path)
        INTO parents, nodes
        FROM (SELECT a.parent_id, a.path,
                     jsonb_build_object('id', a.public_id, 'name', a.name, 'status', a.status, 'plan', a.plan,
                                        'children', coalesce(c.kids, '[]')) AS node
              FROM tenancy.accounts a
              LEFT JOIN (SELECT u.parent_id, jsonb_agg(u.node ORDER BY u.ord) AS kids
                         FROM unnest(parents, nodes) WITH ORDINALITY AS u(parent_id, node, ord)
                         GROUP BY u.parent_id) c ON c.parent_id = a.id
              WHERE a.main_id = top.main_id AND a.path <@ top.path AND tenancy.nlevel(a.path) = depth) x;
    END LOOP;
    RETURN nodes[1];
END $$;
