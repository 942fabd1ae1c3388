-- Citus scale-out (docs/operations/scale-out.md): tenancy.distribute() makes
-- the tenant tables distributed by main account id and the global ones reference tables.

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
-- policies and functions on every node) and distributed tables (by main_id,
-- co-located with accounts), decided table by table:
--   reference: roles, role_permissions, plans, context_keys; usage_kinds (the
--     catalog usage_records' kind references); account_forwarding (old public
--     id -> new main account: looked up by an id that names no shard);
--     transcript_keys (a sealed transcript names its data key by id alone, so
--     every node holding a shard must be able to read it, also after a shard
--     move or a promotion; the keys are sealed under the server key. Each main
--     account's key is made on the coordinator: by distribute() for those
--     existing, by create_main_account() and promote_account() later).
--   distributed: every table whose rows belong to one main account.
--   left on the coordinator (plain tables, read and written there only):
--     users, mfa_recovery_codes: global identities (one login across main
--       accounts; email unique across the installation);
--     sessions: a user's session moves between main accounts (switching
--       accounts rewrites account_main_id) and its token names no main id;
--     api_key_usage: written by authenticate() as the DBA in the client's own
--       transaction; Citus then refuses the client any placement of that
--       main account in the transaction (modified by a different user);
--     idempotency_keys: scoped by principal, and a user spans main accounts;
--     login_failures: throttling by login name, before any account is known;
--     outbox: the mailer's global queue, leased across tenants with row locks
--       (SKIP LOCKED), and mails with no account (main_id may be NULL);
--     protected_tables, transcript_tables: the DBA's catalogs of regclass
--       values, which are node-local OIDs (a reference table would copy them
--       to nodes where they name nothing).
CREATE FUNCTION tenancy._citus_reference_tables() RETURNS regclass[]
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
CREATE FUNCTION tenancy._citus_prepare_table(tbl regclass, distributed boolean)
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
CREATE FUNCTION tenancy._citus_prepare()
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
CREATE FUNCTION tenancy.distribute() RETURNS TABLE (object text, action text)
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
-- records the move. Sealed transcripts move as they are: their data key is
-- on every node (transcript_keys is a reference table). As on one node, the
-- subtree's API keys are revoked and its old public ids forward to the new
-- main account; sessions opened in it are revoked too (on one node they stop
-- resolving).
CREATE FUNCTION tenancy._citus_promote(a tenancy.accounts) RETURNS void
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
