-- Ownership, row-level security and privileges of the tenancy tables.
-- Tables belong to tenancy_owner (NOLOGIN) with RLS enabled and FORCEd; the
-- SECURITY DEFINER functions above run as the installing superuser and check
-- the context explicitly. tenancy_app reads through the policies below.

-- Is user_id the context's own user (a user session, not a key or sub-user)?
CREATE FUNCTION tenancy._is_own_user(user_id bigint) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT tenancy._context_field('principal_kind') = 'user'
           AND tenancy._context_field('role') NOT IN ('mfa_pending', 'password_change')
           AND user_id = tenancy._context_field('principal_id')::bigint
$$;

-- Policy helpers that stand for a subquery (Citus refuses subqueries in the
-- policies of distributed tables, and runs a policy on the node holding the
-- shard). Each reads as the DBA and repeats the row security the subquery
-- would have met as the client; naming the main account makes it one shard's
-- query on Citus (95_citus.sql lets it run inside a query on a shard). PL/pgSQL:
-- Citus does not plan a SQL function's parameters.

-- May the context read members, and is user_id a member somewhere in the
-- active account's subtree? (tenancy.users' policy)
CREATE FUNCTION tenancy._subtree_member(user_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
DECLARE
    -- A value, not a function call in the query: on Citus the lookup then
    -- goes to the main account's shard alone.
    main bigint := tenancy.root_id(tenancy.current_path());
BEGIN
    RETURN tenancy.may('members', 'read')
           AND EXISTS (SELECT 1 FROM tenancy.memberships m
                       WHERE m.main_id = main
                         AND m.user_id = _subtree_member.user_id
                         AND m.account_path OPERATOR(tenancy.<@) tenancy.current_path());
END $$;

-- Is the API key (main_id, key_id) one the context may read, as api_keys'
-- own policy says? (tenancy.api_key_usage's policy)
CREATE FUNCTION tenancy._api_key_visible(main_id bigint, key_id bigint) RETURNS boolean
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, tenancy, pg_temp
    AS $$
BEGIN
    RETURN tenancy.may('api_keys', 'read')
           AND EXISTS (SELECT 1 FROM tenancy.api_keys k
                       WHERE k.main_id = _api_key_visible.main_id AND k.id = _api_key_visible.key_id
                         AND k.account_path OPERATOR(tenancy.<@) tenancy.current_path());
END $$;

DO $own$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plans', 'accounts', 'account_forwarding', 'users', 'memberships',
                             'api_keys', 'api_key_secrets', 'api_key_usage', 'protected_tables']
    LOOP
        EXECUTE format('ALTER TABLE tenancy.%I OWNER TO tenancy_owner', t);
        EXECUTE format('ALTER TABLE tenancy.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('REVOKE ALL ON tenancy.%I FROM PUBLIC', t);
        EXECUTE format('GRANT SELECT ON tenancy.%I TO tenancy_admin', t);
    END LOOP;
END
$own$;
ALTER SEQUENCE tenancy.account_id_seq OWNER TO tenancy_owner;
ALTER SEQUENCE tenancy.api_key_id_seq OWNER TO tenancy_owner;

CREATE POLICY readable ON tenancy.plans FOR SELECT USING (true);
GRANT SELECT ON tenancy.plans TO tenancy_app;

-- Accounts: the active account's subtree; never a parent or a sibling.
CREATE POLICY subtree_read ON tenancy.accounts FOR SELECT
    USING (path <@ tenancy.current_path());
GRANT SELECT ON tenancy.accounts TO tenancy_app;
-- No UPDATE grant: name, branding and settings change only through
-- tenancy.update_account() (34_api_accounts.sql), which validates them.

-- Members and their emails: roles that may read members (owner, admin) see
-- the subtree's; every other role sees only its own user's memberships.
CREATE POLICY subtree_read ON tenancy.memberships FOR SELECT
    USING (account_path <@ tenancy.current_path()
           AND (tenancy.may('members', 'read') OR tenancy._is_own_user(user_id)));
GRANT SELECT ON tenancy.memberships TO tenancy_app;

-- Users: those who are members somewhere in the subtree (members readers), or
-- oneself. Hashes are never granted.
CREATE POLICY member_in_subtree ON tenancy.users FOR SELECT
    USING (tenancy._is_own_user(id) OR tenancy._subtree_member(id));
GRANT SELECT (id, email, name, created_at) ON tenancy.users TO tenancy_app;

CREATE POLICY subtree_read ON tenancy.api_keys FOR SELECT
    USING (account_path <@ tenancy.current_path() AND tenancy.may('api_keys', 'read'));
GRANT SELECT ON tenancy.api_keys TO tenancy_app;
CREATE POLICY key_visible ON tenancy.api_key_usage FOR SELECT
    USING (tenancy._api_key_visible(main_id, key_id));
GRANT SELECT ON tenancy.api_key_usage TO tenancy_app;
-- api_key_secrets, account_forwarding, protected_tables, context_keys: no
-- policy and no grant: unreadable to every client role.

-- Functions: PUBLIC may call the public API (each checks the context); the
-- internal ones are revoked above; DBA functions go to tenancy_admin only.
REVOKE ALL ON FUNCTION tenancy.create_main_account(text, text, text, text),
    tenancy.transfer_ownership(text, text, boolean), tenancy.promote_account(text),
    tenancy.admin_create_api_key(text, text, text), tenancy.protect(regclass, text),
    tenancy.define_resource(text, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.create_main_account(text, text, text, text),
    tenancy.transfer_ownership(text, text, boolean), tenancy.promote_account(text),
    tenancy.admin_create_api_key(text, text, text), tenancy.protect(regclass, text),
    tenancy.define_resource(text, text[], text[]) TO tenancy_admin;
REVOKE ALL ON FUNCTION tenancy._id_parts(text, text, integer, integer), tenancy._find_account(text), tenancy._visible_account(text),
    tenancy._new_account_public_id(bigint), tenancy._check_name(text),
    tenancy._require(text, text), tenancy._refuse_restricted() FROM PUBLIC;
GRANT USAGE ON SCHEMA tenancy TO PUBLIC;
