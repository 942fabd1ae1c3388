-- Putting tables under tenancy.

CREATE TABLE tenancy.protected_tables (
    tbl regclass PRIMARY KEY,
    resource text NOT NULL,
    protected_at timestamptz NOT NULL DEFAULT now()
);

-- define_resource(resource, writers, readers): an application resource and the
-- product roles that may write (and so read) and read it, for protect(). Adds
-- permissions; never removes one (a role's rights shrink only by a release).
CREATE FUNCTION tenancy.define_resource(resource text,
                                        writers text[] DEFAULT ARRAY['owner', 'admin'],
                                        readers text[] DEFAULT ARRAY['owner', 'admin', 'member', 'support_agent',
                                                                     'viewer', 'sub_user'])
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    unknown text;
BEGIN
    IF resource IS NULL OR resource !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'resource must be a lower-case identifier' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(r, ', ') INTO unknown
    FROM unnest(coalesce(writers, '{}') || coalesce(readers, '{}')) AS r
    WHERE r IS NULL OR NOT EXISTS (SELECT FROM tenancy.roles x WHERE x.name = r);
    IF unknown IS NOT NULL OR cardinality(coalesce(writers, '{}') || coalesce(readers, '{}')) = 0 THEN
        RAISE EXCEPTION 'unknown role(s): %', coalesce(unknown, '(none given)') USING ERRCODE = '22023';
    END IF;
    INSERT INTO tenancy.role_permissions (role, resource, action)
    SELECT DISTINCT r, define_resource.resource, a
    FROM (SELECT r, 'write' AS a FROM unnest(writers) AS r
          UNION ALL SELECT r, 'read' FROM unnest(writers) AS r
          UNION ALL SELECT r, 'read' FROM unnest(readers) AS r) x(r, a)
    ON CONFLICT DO NOTHING;
END $$;

-- protect(tbl, resource): adds (or adopts) the account_path column, defaulting
-- to the active account; a foreign key to the account's path that carries rows
-- along when an account moves; an index for subtree scans; RLS enabled and
-- forced with policies: read = the active account's subtree, write = that and
-- the active role's "write" permission on `resource`.
-- Policies call tenancy.current_path() directly, not as an InitPlan: the planner
-- then evaluates it while planning, estimates the subtree's size and picks a
-- sequential scan for a large subtree and the index for a small one; per row
-- the call is a few integer compares (context.cpp caches the path).
CREATE FUNCTION tenancy.protect(tbl regclass, resource text) RETURNS void
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
