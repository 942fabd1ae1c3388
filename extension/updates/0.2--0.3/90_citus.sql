-- Citus scale-out (docs/operations/scale-out.md), 0.2 -> 0.3: tenancy.distribute()
-- and its helpers (as in extension/sql/95_citus.sql), and the functions that
-- name main_id on Citus or distribute a protected table (22_accounts.sql,
-- 23_api_keys.sql, 25_protect.sql), and an ancestor check that names the main
-- account, so that Citus routes it to one shard (24_authenticate.sql).

CREATE OR REPLACE FUNCTION tenancy.create_main_account(name text, owner_email text, owner_password text,
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

CREATE OR REPLACE FUNCTION tenancy.create_account(parent text, name text) RETURNS text
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

CREATE OR REPLACE FUNCTION tenancy._make_api_key(a tenancy.accounts, name text, role text,
                                      expires_at timestamptz) RETURNS text
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    key_id bigint := nextval('tenancy.api_key_id_seq');
    secret text := tenancy.random_token(32);
    key_prefix text;
    limit_per_account integer;
BEGIN
    IF name IS NULL OR length(btrim(name)) = 0 OR length(name) > 200 THEN
        RAISE EXCEPTION 'key name must be 1 to 200 characters' USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM tenancy.roles r WHERE r.name = _make_api_key.role) THEN
        RAISE EXCEPTION 'unknown role "%"', role USING ERRCODE = '22023';
    END IF;
    IF expires_at IS NOT NULL AND expires_at <= now() THEN
        RAISE EXCEPTION 'expires_at must be in the future' USING ERRCODE = '22023';
    END IF;
    IF a.status <> 'active' THEN
        RAISE EXCEPTION 'account "%" is inactive', a.public_id USING ERRCODE = '55000';
    END IF;
    -- Serialise key creation per account so the plan limit holds.
    PERFORM FROM tenancy.accounts x WHERE x.main_id = a.main_id AND x.id = a.id FOR UPDATE;
    SELECT pl.max_api_keys INTO limit_per_account
    FROM tenancy.accounts m JOIN tenancy.plans pl ON pl.name = m.plan
    WHERE m.main_id = a.main_id AND m.id = a.main_id;
    -- A rotated key, in its grace period, no longer counts: its replacement does.
    IF (SELECT count(*) FROM tenancy.api_keys k
        WHERE k.main_id = a.main_id AND k.account_id = a.id AND k.revoked_at IS NULL
          AND k.rotated_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())) >= limit_per_account THEN
        RAISE EXCEPTION 'the plan allows % active API keys per account', limit_per_account
            USING ERRCODE = '53400';
    END IF;
    key_prefix := format('tnc_%s_%s_%s', a.main_id, key_id, left(secret, 4));
    -- On Citus main_id is a plain column that routes the row (95_citus.sql).
    IF tenancy._citus_distributed() THEN
        INSERT INTO tenancy.api_keys (main_id, account_path, id, public_id, name, role, prefix, expires_at)
        VALUES (a.main_id, a.path, key_id, format('key_%s_%s', a.main_id, key_id), btrim(name), role,
                key_prefix, expires_at);
    ELSE
        INSERT INTO tenancy.api_keys (account_path, id, public_id, name, role, prefix, expires_at)
        VALUES (a.path, key_id, format('key_%s_%s', a.main_id, key_id), btrim(name), role, key_prefix,
                expires_at);
    END IF;
    INSERT INTO tenancy.api_key_secrets (main_id, key_id, secret_hash)
    VALUES (a.main_id, key_id, tenancy._secret_hash(secret));
    INSERT INTO tenancy.api_key_usage (main_id, key_id) VALUES (a.main_id, key_id);
    RETURN format('tnc_%s_%s_%s', a.main_id, key_id, secret);
END $$;

CREATE OR REPLACE FUNCTION tenancy.protect(tbl regclass, resource text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    coltype regtype;
    in_scope text := 'account_path OPERATOR(tenancy.<@) tenancy.current_path()';
    may_write text;
    seq regclass;
    policy name;
    citus boolean := false;
BEGIN
    IF to_regprocedure('tenancy._citus_distributed()') IS NOT NULL THEN
        citus := tenancy._citus_distributed();
    END IF;
    IF resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'resource must be a lower-case identifier' USING ERRCODE = '22023';
    END IF;
    -- A resource no role may write would lock even the owner out of the table.
    IF NOT EXISTS (SELECT FROM tenancy.role_permissions p WHERE p.resource = protect.resource) THEN
        RAISE EXCEPTION 'unknown resource "%"', resource USING ERRCODE = '22023',
            HINT = format('Known resources: %s. Declare a new one with tenancy.define_resource().',
                          (SELECT string_agg(DISTINCT p.resource, ', ' ORDER BY p.resource)
                           FROM tenancy.role_permissions p));
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = '22023';
    END IF;
    may_write := format('tenancy.may(%L, ''write'')', resource);
    SELECT a.atttypid::regtype INTO coltype FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'account_path' AND NOT a.attisdropped;
    IF coltype IS NULL THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN account_path tenancy.account_path', tbl);
    ELSIF coltype <> 'tenancy.account_path'::regtype THEN
        RAISE EXCEPTION 'column account_path of % must be of type tenancy.account_path', tbl
            USING ERRCODE = '42804';
    END IF;
    EXECUTE format('ALTER TABLE %s ALTER COLUMN account_path SET DEFAULT tenancy.current_path()', tbl);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN account_path SET NOT NULL', tbl);
    IF NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = 'main_id'
                   AND NOT a.attisdropped) THEN
        EXECUTE format('ALTER TABLE %s ADD COLUMN main_id bigint GENERATED ALWAYS AS '
                       '(tenancy.root_id(account_path)) STORED', tbl);
    END IF;
    -- (On Citus the foreign key is on (main_id, account_path): 95_citus.sql.)
    IF NOT citus AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conrelid = tbl AND c.conname = 'tenancy_account') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenancy_account FOREIGN KEY (account_path) '
                       'REFERENCES tenancy.accounts (path) ON UPDATE CASCADE', tbl);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                   AND a.attnum = i.indkey[0]
                   WHERE i.indrelid = tbl AND a.attname = 'account_path') THEN
        EXECUTE format('CREATE INDEX ON %s (account_path)', tbl);
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', tbl);
    FOR policy IN SELECT p.polname FROM pg_policy p
                  WHERE p.polrelid = tbl AND p.polname LIKE 'tenancy\_%'
    LOOP
        EXECUTE format('DROP POLICY %I ON %s', policy, tbl);
    END LOOP;
    EXECUTE format('CREATE POLICY tenancy_read ON %s FOR SELECT USING (%s)', tbl, in_scope);
    EXECUTE format('CREATE POLICY tenancy_insert ON %s FOR INSERT WITH CHECK (%s AND %s)',
                   tbl, in_scope, may_write);
    EXECUTE format('CREATE POLICY tenancy_update ON %s FOR UPDATE USING (%s AND %s) WITH CHECK (%s AND %s)',
                   tbl, in_scope, may_write, in_scope, may_write);
    EXECUTE format('CREATE POLICY tenancy_delete ON %s FOR DELETE USING (%s AND %s)',
                   tbl, in_scope, may_write);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO tenancy_app', tbl);
    FOR seq IN SELECT d.objid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
               WHERE d.refobjid = tbl AND d.classid = 'pg_class'::regclass AND c.relkind = 'S'
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tenancy_app', seq);
    END LOOP;
    INSERT INTO tenancy.protected_tables (tbl, resource) VALUES (tbl, resource)
    ON CONFLICT ON CONSTRAINT protected_tables_pkey DO UPDATE SET resource = excluded.resource;
    -- The audit trigger (40_audit.sql; tables protected earlier in the install
    -- script are attached there).
    IF to_regprocedure('tenancy._audit_attach(regclass,text)') IS NOT NULL THEN
        PERFORM tenancy._audit_attach(tbl);
    END IF;
    -- On a distributed install the table is distributed with accounts (95_citus.sql).
    IF citus THEN
        PERFORM tenancy._citus_distribute_protected(tbl);
    END IF;
END $$;


-- Is the extension distributed (tenancy.accounts a Citus table)? false without Citus.
CREATE FUNCTION tenancy._citus_distributed() RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition '
            'WHERE logicalrelid = ''tenancy.accounts''::regclass)' INTO found;
    RETURN found;
END $$;

-- The tables distribute() makes reference tables (small, global, read by
-- policies on every node) and distributed tables (by main_id, co-located with
-- accounts). Every other table stays on the coordinator for now: users and
-- api_key_usage among them, as their policies hold subqueries, which Citus
-- refuses in policies on distributed tables.
CREATE OR REPLACE FUNCTION tenancy._citus_reference_tables() RETURNS regclass[]
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT ARRAY['tenancy.roles', 'tenancy.role_permissions', 'tenancy.plans',
                       'tenancy.context_keys', 'tenancy.usage_kinds',
                       'tenancy.account_forwarding', 'tenancy.transcript_keys']::regclass[] $$;
CREATE FUNCTION tenancy._citus_tenant_tables() RETURNS regclass[]
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT ARRAY['tenancy.accounts', 'tenancy.memberships', 'tenancy.api_keys',
                 'tenancy.api_key_secrets', 'tenancy.sub_users',
                 'tenancy.invitations', 'tenancy.outbox_failures', 'tenancy.phi_redaction_jobs',
                 'tenancy.usage_totals']::regclass[]
           -- Protected tables: the voice tables, usage_records, the application's.
           || coalesce((SELECT array_agg(p.tbl ORDER BY p.tbl::oid) FROM tenancy.protected_tables p), '{}')
$$;

REVOKE ALL ON FUNCTION tenancy._citus_distributed(), tenancy._citus_reference_tables(),
    tenancy._citus_tenant_tables() FROM PUBLIC;

-- A tenant table's account path column: path (accounts), account_path (the
-- others), or NULL (api_key_secrets, which follows its key).
CREATE FUNCTION tenancy._citus_path_column(tbl regclass) RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT a.attname FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname IN ('path', 'account_path') AND NOT a.attisdropped
    ORDER BY a.attname = 'path' DESC LIMIT 1
$$;
REVOKE ALL ON FUNCTION tenancy._citus_path_column(regclass) FROM PUBLIC;

-- Reshapes one table so that Citus accepts it as distributed by main_id, on
-- the node where it runs (distribute() runs it on every node, as the
-- extension's tables exist on every node): a generated main_id becomes a plain
-- column checked against the path (Citus routes by it before any trigger or
-- generated column could compute it); unique constraints and indexes gain
-- main_id in front (path and public ids are unique per main account anyway).
-- Returns the foreign keys it dropped: Citus allows them only between
-- co-located tables on the distribution column, or to reference tables.
CREATE OR REPLACE FUNCTION tenancy._citus_prepare_table(tbl regclass, distributed boolean)
    RETURNS TABLE (conrelid regclass, confrelid regclass, conname name, condef text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    path_col name;
    c record;
    pp record;
    def text;
    chk text;
BEGIN
    -- Foreign keys from or to this table: dropped here, re-added by distribute().
    FOR c IN SELECT x.conrelid::regclass AS rel, x.confrelid::regclass AS ref, x.conname AS name,
                    pg_get_constraintdef(x.oid) AS def
             FROM pg_constraint x
             WHERE x.contype = 'f' AND (x.conrelid = tbl OR x.confrelid = tbl)
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.rel, c.name);
        conrelid := c.rel;
        confrelid := c.ref;
        conname := c.name;
        condef := c.def;
        RETURN NEXT;
    END LOOP;
    IF NOT distributed THEN
        RETURN;
    END IF;
    -- Citus 13 copies policies to the shards without AS RESTRICTIVE, which
    -- would turn a restrictive condition (the voice tables' and usage
    -- records' read permission) into an alternative: fold each into the
    -- permissive policies it restricts, (P1 OR P2) AND R = (P1 AND R) OR (P2 AND R).
    FOR c IN SELECT p.polname AS name, p.polcmd AS cmd, pg_get_expr(p.polqual, p.polrelid) AS qual,
                    pg_get_expr(p.polwithcheck, p.polrelid) AS chk, p.polroles AS roles
             FROM pg_policy p WHERE p.polrelid = tbl AND NOT p.polpermissive
    LOOP
        IF c.roles <> '{0}'::oid[] OR EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = tbl AND p.polpermissive
                                              AND p.polcmd = '*' AND c.cmd <> '*') THEN
            RAISE EXCEPTION 'restrictive policy % on % cannot be folded for Citus', c.name, tbl
                USING ERRCODE = '0A000', HINT = 'Citus copies policies to shards as permissive ones.';
        END IF;
        FOR pp IN SELECT p.polname AS name, p.polcmd AS cmd, pg_get_expr(p.polqual, p.polrelid) AS qual,
                         pg_get_expr(p.polwithcheck, p.polrelid) AS chk
                  FROM pg_policy p WHERE p.polrelid = tbl AND p.polpermissive AND (c.cmd = '*' OR p.polcmd = c.cmd)
        LOOP
            def := CASE WHEN pp.cmd <> 'a' THEN format('USING ((%s) AND (%s))', pp.qual, coalesce(c.qual, 'true')) END;
            chk := CASE WHEN pp.cmd IN ('a', 'w', '*')
                        THEN format('WITH CHECK ((%s) AND (%s))', coalesce(pp.chk, pp.qual),
                                    coalesce(c.chk, c.qual, 'true')) END;
            EXECUTE format('ALTER POLICY %I ON %s %s %s', pp.name, tbl, coalesce(def, ''), coalesce(chk, ''));
        END LOOP;
        EXECUTE format('DROP POLICY %I ON %s', c.name, tbl);
    END LOOP;
    path_col := tenancy._citus_path_column(tbl);
    IF EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = 'main_id'
               AND a.attgenerated = 's') THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN main_id DROP EXPRESSION', tbl);
    END IF;
    -- main_id follows the path (generated before, or kept by a trigger as in
    -- the voice tables): a CHECK holds it to that on every shard.
    IF path_col IS NOT NULL AND NOT EXISTS (SELECT FROM pg_constraint x WHERE x.conrelid = tbl
                                            AND x.conname = 'tenancy_main_id') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenancy_main_id CHECK '
                       '(main_id = tenancy.root_id(%I))', tbl, path_col);
    END IF;
    -- Rows of protected tables default to the active account, so main_id
    -- defaults to its main account (evaluated where Citus routes the row).
    IF path_col = 'account_path' AND NOT EXISTS (SELECT FROM pg_attrdef d JOIN pg_attribute a
                                                 ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                                                 WHERE d.adrelid = tbl AND a.attname = 'main_id') THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN main_id SET DEFAULT '
                       'tenancy.root_id(tenancy.current_path())', tbl);
    END IF;
    -- Citus sends the defaults it evaluated on the coordinator as values: a
    -- client with column-level INSERT (the voice tables) needs it on the
    -- defaulted columns too. Their row trigger still sets the public id
    -- and the timestamps, and refuses a main_id not the path's (50_voice.sql).
    IF NOT has_table_privilege('tenancy_app', tbl, 'INSERT')
       AND has_any_column_privilege('tenancy_app', tbl, 'INSERT') THEN
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO def
        FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = tbl AND NOT a.attisdropped AND a.attgenerated = '';
        IF def IS NOT NULL THEN
            EXECUTE format('GRANT INSERT (%s) ON %s TO tenancy_app', def, tbl);
        END IF;
    END IF;
    FOR c IN SELECT x.conname AS name, pg_get_constraintdef(x.oid) AS def
             FROM pg_constraint x
             WHERE x.conrelid = tbl AND x.contype IN ('p', 'u')
               AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl
                               AND a.attname = 'main_id' AND a.attnum = ANY (x.conkey))
    LOOP
        def := regexp_replace(c.def, '^(PRIMARY KEY|UNIQUE) \(', '\1 (main_id, ');
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', tbl, c.name);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, c.name, def);
    END LOOP;
    FOR c IN SELECT i.indexrelid::regclass AS idx, pg_get_indexdef(i.indexrelid) AS def
             FROM pg_index i
             WHERE i.indrelid = tbl AND i.indisunique
               AND NOT EXISTS (SELECT FROM pg_constraint x WHERE x.conindid = i.indexrelid)
               AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl
                               AND a.attname = 'main_id' AND a.attnum = ANY (i.indkey))
    LOOP
        EXECUTE format('DROP INDEX %s', c.idx);
        EXECUTE regexp_replace(c.def, ' USING (\w+) \(', ' USING \1 (main_id, ');
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_prepare_table(regclass, boolean) FROM PUBLIC;

-- Reshapes every table distribute() will make a Citus table, on this node.
-- Returns the foreign keys dropped.
CREATE OR REPLACE FUNCTION tenancy._citus_prepare()
    RETURNS TABLE (conrelid regclass, confrelid regclass, conname name, condef text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    t regclass;
BEGIN
    FOREACH t IN ARRAY tenancy._citus_reference_tables() LOOP
        RETURN QUERY SELECT * FROM tenancy._citus_prepare_table(t, false);
    END LOOP;
    FOREACH t IN ARRAY tenancy._citus_tenant_tables() LOOP
        RETURN QUERY SELECT * FROM tenancy._citus_prepare_table(t, true);
    END LOOP;
    -- Citus re-creates triggers on the shards from their text with its own
    -- search_path, where IS DISTINCT FROM finds no operator for account_path
    -- (path is NOT NULL, so <> says the same).
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'tenancy.accounts'::regclass
               AND tgname = 'security_on_move') THEN
        DROP TRIGGER security_on_move ON tenancy.accounts;
        CREATE TRIGGER security_on_move AFTER UPDATE OF path ON tenancy.accounts
            FOR EACH ROW WHEN (OLD.path OPERATOR(tenancy.<>) NEW.path)
            EXECUTE FUNCTION tenancy._security_on_move();
    END IF;
    -- Citus plans a query with parameters only as a custom plan.
    ALTER FUNCTION tenancy._establish_api_key(bigint, bigint, bigint, text, boolean, text) RESET plan_cache_mode;
    -- Policies run on the worker holding the shard, inside Citus's query on it;
    -- may() reads role_permissions (a reference table: a local read there).
    ALTER FUNCTION tenancy.may(text, text) SET citus.allow_nested_distributed_execution = on;
    -- Triggers on accounts run on the worker holding the row and read other
    -- accounts of the same main account (their queries name main_id): the
    -- same shard, executed locally there.
    ALTER FUNCTION tenancy._api_key_settings_check() SET citus.allow_nested_distributed_execution = on;
    ALTER FUNCTION tenancy._security_settings_check() SET citus.allow_nested_distributed_execution = on;
    ALTER FUNCTION tenancy._security_on_move() SET citus.allow_nested_distributed_execution = on;
    -- So do the policy helpers that stand for subqueries (29_security.sql):
    -- they read one main account's shard (on the coordinator, from the
    -- policies of tables left there).
    ALTER FUNCTION tenancy._api_key_visible(bigint, bigint) SET citus.allow_nested_distributed_execution = on;
    ALTER FUNCTION tenancy._subtree_member(bigint) SET citus.allow_nested_distributed_execution = on;
    -- The transcript triggers' WHEN clause reads the account's settings on
    -- the shard (its own main account's, a local shard), before Citus counts
    -- it as inside a trigger.
    ALTER FUNCTION tenancy._effective_security(tenancy.account_path)
        SET citus.allow_nested_distributed_execution = on;
    -- Sealing and opening a transcript on a shard reads its data key from
    -- transcript_keys, a reference table: a local read on that worker.
    ALTER FUNCTION tenancy._transcript_key(bigint) SET citus.allow_nested_distributed_execution = on;
    ALTER FUNCTION tenancy._transcript_key_id(bigint) SET citus.allow_nested_distributed_execution = on;
    -- A sealed transcript is opened where its row is (transcript_of() in a
    -- query on the shard): the server key comes from context_keys, a
    -- reference table, read locally on that worker.
    ALTER FUNCTION tenancy._derived_key(text) SET citus.allow_nested_distributed_execution = on;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_prepare() FROM PUBLIC;

-- A foreign key Citus accepts, or NULL: between tenant tables it must include
-- main_id on both sides and cannot cascade updates (the distribution column
-- never changes); a reference on an account's path becomes one on
-- (main_id, path).
CREATE FUNCTION tenancy._citus_foreign_key(conrelid regclass, condef text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    def text := replace(condef, ' ON UPDATE CASCADE', '');
BEGIN
    IF def ~ 'ON DELETE SET (NULL|DEFAULT)' THEN
        RETURN NULL;
    END IF;
    def := regexp_replace(def, '^FOREIGN KEY \((\w+)\) REFERENCES (tenancy\.)?accounts\(path\)',
                          'FOREIGN KEY (main_id, \1) REFERENCES tenancy.accounts(main_id, path)');
    RETURN def;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_foreign_key(regclass, text) FROM PUBLIC;

-- distribute(): run once by the DBA on the coordinator, after CREATE
-- EXTENSION, citus_set_coordinator_host() and citus_add_node() for every
-- worker. Returns what it did, one row per table or constraint.
CREATE OR REPLACE FUNCTION tenancy.distribute() RETURNS TABLE (object text, action text)
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    t regclass;
    fk record;
    def text;
    failed text;
    dropped text[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database' USING ERRCODE = '55000',
            HINT = 'CREATE EXTENSION citus first; see docs/operations/scale-out.md.';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'tenancy.distribute() is for the DBA (a superuser)' USING ERRCODE = '42501';
    END IF;
    IF tenancy._citus_distributed() THEN
        RAISE EXCEPTION 'tenancy is already distributed' USING ERRCODE = '55000';
    END IF;
    EXECUTE 'SELECT count(*) FROM pg_dist_node WHERE groupid = 0' INTO failed;
    IF failed::int = 0 THEN
        RAISE EXCEPTION 'the coordinator is not in the Citus metadata' USING ERRCODE = '55000',
            HINT = 'Run SELECT citus_set_coordinator_host(host, port) first: the context key '
                   'must have a copy on the coordinator too.';
    END IF;
    -- Every node reshapes its own copy of the extension's tables (they are the
    -- shell tables Citus uses there).
    failed := NULL;
    EXECUTE $q$SELECT string_agg(nodename || ':' || nodeport || ' ' || result, '; ')
               FROM run_command_on_workers('SELECT count(*) FROM tenancy._citus_prepare()')
               WHERE NOT success$q$ INTO failed;
    IF failed IS NOT NULL THEN
        RAISE EXCEPTION 'could not prepare the workers: %', failed USING ERRCODE = '55000';
    END IF;
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    -- Every main account's transcript data key, before transcript_keys becomes
    -- a reference table: from then on keys are made on the coordinator only.
    PERFORM tenancy._transcript_key_id(a.id) FROM tenancy.accounts a WHERE a.parent_id IS NULL;
    CREATE TEMP TABLE pg_temp.citus_dropped_fks ON COMMIT DROP AS SELECT * FROM tenancy._citus_prepare();
    FOREACH t IN ARRAY tenancy._citus_reference_tables() LOOP
        EXECUTE 'SELECT create_reference_table($1)' USING t;
        object := t::text;
        action := 'reference table';
        RETURN NEXT;
    END LOOP;
    FOREACH t IN ARRAY tenancy._citus_tenant_tables() LOOP
        IF t = 'tenancy.accounts'::regclass THEN
            EXECUTE 'SELECT create_distributed_table($1, ''main_id'', colocate_with => ''none'')' USING t;
        ELSE
            EXECUTE 'SELECT create_distributed_table($1, ''main_id'', colocate_with => ''tenancy.accounts'')'
                USING t;
        END IF;
        object := t::text;
        action := 'distributed by main_id';
        RETURN NEXT;
    END LOOP;
    RETURN QUERY SELECT * FROM tenancy._citus_audit_distribute();  -- 97_citus_audit.sql
    -- Clients must not claim a distributed transaction id here: a token bound
    -- to another transaction's id would then be forwarded to the workers with
    -- it (workers must keep it: Citus calls it there as the client's role).
    PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
    REVOKE EXECUTE ON FUNCTION pg_catalog.assign_distributed_transaction_id(integer, bigint, timestamptz)
        FROM PUBLIC;
    PERFORM set_config('citus.enable_ddl_propagation', 'on', true);
    -- Foreign keys back, where Citus accepts them: between co-located tenant
    -- tables on main_id, from tenant tables to reference tables, between
    -- reference tables. Those from coordinator-only tables are left out.
    FOR fk IN SELECT DISTINCT * FROM pg_temp.citus_dropped_fks ORDER BY 1, 2 LOOP
        def := NULL;
        IF EXISTS (SELECT FROM pg_dist_partition p WHERE p.logicalrelid = fk.conrelid)
           AND EXISTS (SELECT FROM pg_dist_partition p WHERE p.logicalrelid = fk.confrelid) THEN
            def := tenancy._citus_foreign_key(fk.conrelid, fk.condef);
        END IF;
        object := format('%s.%s', fk.conrelid, fk.conname);
        IF def IS NULL THEN
            action := 'foreign key dropped: ' || fk.condef;
        ELSE
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.conrelid, fk.conname, def);
            action := CASE WHEN def = fk.condef THEN 'foreign key kept'
                           ELSE 'foreign key now ' || def END;
        END IF;
        RETURN NEXT;
    END LOOP;
    -- The gateway's requests reach the workers as tenancy_app (96_citus_logins.sql).
    RETURN QUERY SELECT 'worker login on ' || l.node, l.action FROM tenancy.citus_worker_logins() l;
END $$;
REVOKE ALL ON FUNCTION tenancy.distribute() FROM PUBLIC;

-- protect() on a distributed install: the application table becomes a tenant
-- table too, distributed by main_id and co-located with accounts.
CREATE FUNCTION tenancy._citus_distribute_protected(tbl regclass) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    fk record;
    def text;
BEGIN
    IF EXISTS (SELECT FROM pg_dist_partition p WHERE p.logicalrelid = tbl) THEN
        RETURN;
    END IF;
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    CREATE TEMP TABLE pg_temp.citus_protected_fks ON COMMIT DROP AS
        SELECT * FROM tenancy._citus_prepare_table(tbl, true);
    PERFORM create_distributed_table(tbl, 'main_id', colocate_with => 'tenancy.accounts');
    FOR fk IN SELECT * FROM pg_temp.citus_protected_fks LOOP
        def := NULL;
        IF EXISTS (SELECT FROM pg_dist_partition p WHERE p.logicalrelid = fk.confrelid) THEN
            def := tenancy._citus_foreign_key(fk.conrelid, fk.condef);
        END IF;
        IF def IS NULL THEN
            RAISE NOTICE 'foreign key %.% dropped: Citus does not support %', fk.conrelid, fk.conname, fk.condef;
        ELSE
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', fk.conrelid, fk.conname, def);
        END IF;
    END LOOP;
    DROP TABLE pg_temp.citus_protected_fks;
    IF NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conrelid = tbl AND c.conname = 'tenancy_account') THEN
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT tenancy_account FOREIGN KEY (main_id, account_path) '
                       'REFERENCES tenancy.accounts (main_id, path)', tbl);
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_distribute_protected(regclass) FROM PUBLIC;

-- promote_account() on Citus (22_accounts.sql calls this after its checks and
-- the lock on the main account). main_id routes each row to its shard and
-- Citus never updates it, so the subtree's rows are copied under the new main
-- account and the old ones deleted, in the caller's transaction: Citus
-- commits the writes on every worker by two-phase commit, all or nothing.
-- Row triggers are off while the rows move (session_replication_role, which
-- Citus forwards to the workers as a SET LOCAL): they would stamp new public
-- ids and times, seal transcripts again and count usage twice; the copy is
-- the rows as they were, and one audit event in each main account's chain
-- records the move. As on one node, the subtree's API keys are revoked and
-- its old public ids forward to the new main account; sessions opened in it
-- are revoked too (on one node they stop resolving).
CREATE OR REPLACE FUNCTION tenancy._citus_promote(a tenancy.accounts) RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    m bigint := a.main_id;
    s bigint := a.id;
    cut integer := tenancy.nlevel(a.path) - 1;
    tables regclass[] := tenancy._citus_tenant_tables();
    t regclass;
    path_col name;
    cols text;
    vals text;
    subtree text;
    subtrees text[] := '{}';
    n bigint;
    moved jsonb := '{}';
    account_ids bigint[];
    sub_user_ids bigint[];
    key_ids bigint[];
BEGIN
    -- The new main account's transcript data key, on every node; rows sealed
    -- before keep naming the old main account's key, which every node has too.
    PERFORM tenancy._transcript_key_id(s);
    SELECT array_agg(x.id) INTO account_ids FROM tenancy.accounts x
    WHERE x.main_id = m AND x.path OPERATOR(tenancy.<@) a.path;
    SELECT array_agg(x.id) INTO sub_user_ids FROM tenancy.sub_users x
    WHERE x.main_id = m AND x.account_path OPERATOR(tenancy.<@) a.path;
    SELECT array_agg(x.id) INTO key_ids FROM tenancy.api_keys x
    WHERE x.main_id = m AND x.account_path OPERATOR(tenancy.<@) a.path;
    UPDATE tenancy.api_keys k SET revoked_at = now()
    WHERE k.main_id = m AND k.id = ANY (key_ids) AND k.revoked_at IS NULL;
    INSERT INTO tenancy.account_forwarding (public_id, main_id)
    SELECT x.public_id, s FROM tenancy.accounts x WHERE x.main_id = m AND x.id = ANY (account_ids)
    ON CONFLICT (public_id) DO UPDATE SET main_id = excluded.main_id;
    EXECUTE 'SET LOCAL session_replication_role = replica';
    -- Copies first, in the order of the tables (accounts first), then the
    -- old rows, in reverse order (api_key_secrets finds its keys by api_keys).
    FOREACH t IN ARRAY tables LOOP
        path_col := tenancy._citus_path_column(t);
        SELECT string_agg(quote_ident(x.attname), ', ' ORDER BY x.attnum),
               string_agg(CASE WHEN x.attname = 'main_id' THEN '$1'
                               WHEN x.attname = path_col THEN format('tenancy.subpath(x.%I, $2)', x.attname)
                               ELSE 'x.' || quote_ident(x.attname) END, ', ' ORDER BY x.attnum)
          INTO cols, vals
        FROM pg_attribute x WHERE x.attrelid = t AND x.attnum > 0 AND NOT x.attisdropped AND x.attgenerated = '';
        IF path_col IS NOT NULL THEN
            subtree := format('x.main_id = $3 AND x.%I OPERATOR(tenancy.<@) $4', path_col);
        ELSIF t = 'tenancy.api_key_secrets'::regclass THEN
            subtree := 'x.main_id = $3 AND x.key_id = ANY ($5)';
        ELSE
            RAISE EXCEPTION 'promote_account() on Citus: % has no account path', t USING ERRCODE = '0A000';
        END IF;
        subtrees := subtrees || subtree;
        EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %s x WHERE %s',
                       t, cols, vals, t, subtree)
            USING s, cut, m, a.path, key_ids;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n > 0 THEN
            moved := moved || jsonb_build_object(t::text, n);
        END IF;
    END LOOP;
    FOR i IN REVERSE array_length(tables, 1) .. 1 LOOP
        -- The copy's condition on the old rows ($1 and $2 unused here).
        EXECUTE format('DELETE FROM %s x WHERE %s', tables[i], subtrees[i])
            USING s, cut, m, a.path, key_ids;
    END LOOP;
    EXECUTE 'SET LOCAL session_replication_role = origin';
    -- Tables left on the coordinator name the main account too.
    UPDATE tenancy.api_key_usage u SET main_id = s WHERE u.main_id = m AND u.key_id = ANY (key_ids);
    UPDATE tenancy.sessions x
    SET account_main_id = CASE WHEN x.account_main_id = m AND x.account_id = ANY (account_ids)
                               THEN s ELSE x.account_main_id END,
        sub_user_main_id = CASE WHEN x.sub_user_main_id = m AND x.sub_user_id = ANY (sub_user_ids)
                                THEN s ELSE x.sub_user_main_id END,
        revoked_at = coalesce(x.revoked_at, now())
    WHERE (x.account_main_id = m AND x.account_id = ANY (account_ids))
       OR (x.sub_user_main_id = m AND x.sub_user_id = ANY (sub_user_ids));
    PERFORM tenancy._audit_record(m, a.path, 'account.promote', a.public_id,
                                  jsonb_build_object('new_main_id', s, 'rows', moved));
    PERFORM tenancy._audit_record(s, tenancy.subpath(a.path, cut), 'account.promote', a.public_id,
                                  jsonb_build_object('old_main_id', m, 'rows', moved));
END $$;
REVOKE ALL ON FUNCTION tenancy._citus_promote(tenancy.accounts) FROM PUBLIC;

-- transfer_ownership() and accept_invitation() name main_id on Citus; promote_account()
-- refuses there (22_accounts.sql, 304_identity_invitations.sql).
CREATE OR REPLACE FUNCTION tenancy.transfer_ownership(account text, new_owner_email text,
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

CREATE OR REPLACE FUNCTION tenancy.promote_account(account text) RETURNS void
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

CREATE OR REPLACE FUNCTION tenancy.accept_invitation(token text, name text DEFAULT NULL, password text DEFAULT NULL)
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
