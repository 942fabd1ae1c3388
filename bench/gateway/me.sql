-- GET /v1/me as the gateway sends it (gateway/api_request.cpp enter_context,
-- kAuthenticateSql; gateway/routes_me.cpp), one pipeline = one round trip.
\startpipeline
BEGIN READ ONLY;
SELECT set_config('role', 'tenancy_app', true);
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, tenancy.current_main_id()::text, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT (tenancy.whoami() || jsonb_build_object('memberships', (SELECT coalesce(jsonb_agg(jsonb_build_object('account', a.public_id, 'role', m.role) ORDER BY a.path), '[]') FROM tenancy.memberships m JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = m.account_id WHERE m.user_id = CASE WHEN tenancy.whoami()->'principal'->>'kind' = 'user' THEN (tenancy.whoami()->'principal'->>'id')::bigint END AND m.main_id = coalesce(:main::bigint, m.main_id))))::text;
COMMIT;
\endpipeline
