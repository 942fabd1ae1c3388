-- GET /v1/me as the gateway sends it (gateway/api_request.cpp enter_context,
-- kAuthenticateSql; gateway/routes_me.cpp), one pipeline = one round trip.
\startpipeline
BEGIN READ ONLY;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT (w || jsonb_build_object('memberships', (SELECT coalesce(jsonb_agg(jsonb_build_object('account', a.public_id, 'role', m.role) ORDER BY a.path), '[]') FROM tenancy.memberships m JOIN tenancy.accounts a ON a.id = m.account_id WHERE m.user_id = CASE WHEN w->'principal'->>'kind' = 'user' THEN (w->'principal'->>'id')::bigint END)))::text FROM tenancy.whoami() w;
COMMIT;
\endpipeline
