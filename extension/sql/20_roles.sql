-- Database roles, and the product roles with their permission sets.
--
--   tenancy_owner  NOLOGIN: owns every tenancy table (RLS is FORCEd, so even
--                  the owner is confined).
--   tenancy_admin  NOLOGIN, BYPASSRLS: granted to DBAs; runs the DBA functions.
--   tenancy_app    NOLOGIN group of every client: holds the client grants; no
--                  BYPASSRLS, owns nothing, sees only what its request
--                  context allows. Each application, SQL client and gateway
--                  logs in as its own member role (tenancy.create_client()),
--                  so no client sees another's query text, ends its backend or
--                  changes the shared role's settings or password.
--   tenancy_gateway NOLOGIN, a member of tenancy_app: granted to the gateway's
--                  login role; the gateway's own calls (system audit events)
--                  check that the session user holds it.
-- Roles are cluster-wide, so they survive DROP EXTENSION and are reused by a
-- second database.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner') THEN
        CREATE ROLE tenancy_owner NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_admin') THEN
        CREATE ROLE tenancy_admin NOLOGIN BYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app') THEN
        CREATE ROLE tenancy_app NOLOGIN NOBYPASSRLS;
    ELSE
        -- A cluster from before per-client roles: the shared login goes away.
        ALTER ROLE tenancy_app NOLOGIN NOBYPASSRLS PASSWORD NULL;
        ALTER ROLE tenancy_app RESET ALL;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_gateway') THEN
        CREATE ROLE tenancy_gateway NOLOGIN NOBYPASSRLS;
    END IF;
END
$roles$;
GRANT tenancy_app TO tenancy_gateway;

GRANT USAGE ON SCHEMA tenancy TO tenancy_app, tenancy_admin, tenancy_owner;

-- The gateway's own calls (system audit events, Idempotency-Key storage, the
-- batched record of GETs, the list-cursor key) are for the gateway only: its
-- login role is a member of tenancy_gateway (a superuser is a member of every
-- role). session_user, not current_user: the gateway does SET LOCAL ROLE
-- tenancy_app inside each request, which leaves session_user alone, and only
-- a superuser session can change its session_user.
CREATE FUNCTION tenancy._session_is_gateway() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_has_role(session_user, 'tenancy_gateway', 'MEMBER') $$;
-- Raise 42501 unless the session is the gateway's; `what` names the call.
CREATE FUNCTION tenancy._require_gateway(what text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT tenancy._session_is_gateway() THEN
        RAISE EXCEPTION '% is for the gateway only', what
            USING ERRCODE = '42501',
                  HINT = 'The gateway logs in as a role made by tenancy.create_client(..., gateway => true).';
    END IF;
END $$;
REVOKE ALL ON FUNCTION tenancy._session_is_gateway(), tenancy._require_gateway(text) FROM PUBLIC;

-- Product roles. A role held in an account applies to its whole subtree.
CREATE TABLE tenancy.roles (
    name text PRIMARY KEY,
    description text NOT NULL
);
CREATE TABLE tenancy.role_permissions (
    role text NOT NULL REFERENCES tenancy.roles (name),
    resource text NOT NULL,
    action text NOT NULL CHECK (action IN ('read', 'write')),
    PRIMARY KEY (role, resource, action)
);

INSERT INTO tenancy.roles VALUES
    ('owner', 'Everything, including billing, API keys and members; several owners allowed'),
    ('admin', 'Manage agents, flows, channels, knowledge bases, campaigns, integrations and members except owners; no billing'),
    ('member', 'Playground, call history, live monitoring; no configuration changes'),
    ('support_agent', 'Escalation queue: view and claim calls, whisper and barge'),
    ('viewer', 'Read-only analytics, call history and agent configuration'),
    ('sub_user', 'Assistants, tools, knowledge bases and statistics; no sub-users, full logs, billing or settings');

INSERT INTO tenancy.role_permissions (role, resource, action)
SELECT 'owner', r, a
FROM unnest(ARRAY['accounts', 'settings', 'billing', 'members', 'api_keys', 'sub_users', 'audit',
                  'agents', 'flows', 'channels', 'knowledge_bases', 'campaigns', 'integrations', 'tools',
                  'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r,
     unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'admin', r, a
FROM unnest(ARRAY['accounts', 'settings', 'members', 'sub_users', 'agents', 'flows', 'channels',
                  'knowledge_bases', 'campaigns', 'integrations', 'tools', 'contacts', 'conversations',
                  'calls']) AS r,
     unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'admin', r, 'read' FROM unnest(ARRAY['api_keys', 'audit', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'member', r, 'read'
FROM unnest(ARRAY['agents', 'flows', 'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'member', 'conversations', 'write'
UNION ALL
SELECT 'support_agent', r, 'read' FROM unnest(ARRAY['agents', 'contacts', 'conversations', 'calls']) AS r
UNION ALL
SELECT 'support_agent', r, 'write' FROM unnest(ARRAY['conversations', 'calls']) AS r
UNION ALL
SELECT 'viewer', r, 'read'
FROM unnest(ARRAY['agents', 'flows', 'contacts', 'conversations', 'calls', 'analytics', 'usage']) AS r
UNION ALL
SELECT 'sub_user', r, a
FROM unnest(ARRAY['agents', 'tools', 'knowledge_bases']) AS r, unnest(ARRAY['read', 'write']) AS a
UNION ALL
SELECT 'sub_user', r, 'read' FROM unnest(ARRAY['analytics', 'usage', 'conversations', 'calls', 'contacts']) AS r;

ALTER TABLE tenancy.roles OWNER TO tenancy_owner;
ALTER TABLE tenancy.role_permissions OWNER TO tenancy_owner;
-- Not tenant data, but every table has RLS on and forced; everyone may read.
ALTER TABLE tenancy.roles ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy.role_permissions ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY readable ON tenancy.roles FOR SELECT USING (true);
CREATE POLICY readable ON tenancy.role_permissions FOR SELECT USING (true);
GRANT SELECT ON tenancy.roles, tenancy.role_permissions TO tenancy_app, tenancy_admin;
