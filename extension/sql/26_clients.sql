-- Client login roles (DBA): every application, SQL client and gateway logs in
-- as its own role, a member of the NOLOGIN group tenancy_app (20_roles.sql).
-- PostgreSQL shows a backend's query text to, and lets it be terminated by,
-- only roles with the privileges of the backend's login role, and only a
-- role's admins may change its settings: one shared login role gave every
-- client all three over every other client.

-- create_client(name, password, gateway): a LOGIN role in tenancy_app (or, for
-- a gateway, in tenancy_gateway, which is a member of tenancy_app). password
-- may be NULL (set it later with psql's \password, which sends only a SCRAM
-- verifier) or a SCRAM-SHA-256 verifier, stored as given; a clear password is
-- hashed by the server.
CREATE FUNCTION tenancy.create_client(name text, password text DEFAULT NULL, gateway boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' OR name LIKE 'pg\_%' OR name LIKE 'tenancy\_%' THEN
        RAISE EXCEPTION 'invalid client role name "%"', name
            USING ERRCODE = '22023',
                  HINT = 'Use 1 to 63 lower-case letters, digits and underscores, not starting with pg_ or tenancy_.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = name) THEN
        RAISE EXCEPTION 'role "%" already exists', name USING ERRCODE = '42710';
    END IF;
    EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                   name);
    IF password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', name, password);
    END IF;
    EXECUTE format('GRANT %I TO %I', CASE WHEN gateway THEN 'tenancy_gateway' ELSE 'tenancy_app' END, name);
    EXECUTE format('COMMENT ON ROLE %I IS %L', name,
                   CASE WHEN gateway THEN 'tenancy gateway client' ELSE 'tenancy client' END);
END $$;

-- drop_client(name): drops a role made by create_client, never another one.
CREATE FUNCTION tenancy.drop_client(name text) RETURNS void
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM tenancy.clients c WHERE c.name = drop_client.name) THEN
        RAISE EXCEPTION 'client role "%" not found', name USING ERRCODE = 'P0002';
    END IF;
    EXECUTE format('DROP ROLE %I', name);
END $$;

-- The client roles: name, gateway or not, and how many backends each has open.
CREATE VIEW tenancy.clients AS
SELECT r.rolname::text AS name, g.rolname = 'tenancy_gateway' AS gateway, r.rolcanlogin AS can_login,
       (SELECT count(*) FROM pg_catalog.pg_stat_activity s WHERE s.usesysid = r.oid) AS connections
FROM pg_catalog.pg_roles r
JOIN pg_catalog.pg_auth_members m ON m.member = r.oid
JOIN pg_catalog.pg_roles g ON g.oid = m.roleid AND g.rolname IN ('tenancy_app', 'tenancy_gateway')
WHERE NOT r.rolsuper AND NOT r.rolbypassrls AND NOT r.rolcreaterole
  AND r.rolname NOT IN ('tenancy_app', 'tenancy_gateway', 'tenancy_admin', 'tenancy_owner', 'tenancy_mailer')
  AND pg_catalog.shobj_description(r.oid, 'pg_authid') IN ('tenancy client', 'tenancy gateway client');

REVOKE ALL ON FUNCTION tenancy.create_client(text, text, boolean), tenancy.drop_client(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_client(text, text, boolean), tenancy.drop_client(text) TO tenancy_admin;
REVOKE ALL ON tenancy.clients FROM PUBLIC;
GRANT SELECT ON tenancy.clients TO tenancy_admin;
