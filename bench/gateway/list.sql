-- GET /v1/accounts?limit=50 (first page: no cursor, status or parent, so those
-- parameters are NULL; the gateway fetches limit + 1 rows) as the gateway sends
-- it (gateway/api_request.cpp; gateway/routes_accounts.cpp list_accounts), one
-- pipeline = one round trip.
\startpipeline
BEGIN READ ONLY;
SELECT set_config('role', 'tenancy_app', true);
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, tenancy.current_main_id()::text, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.public_id, 'parent', a.parent, 'name', a.name, 'status', a.status, 'plan', a.plan, 'created_at', a.created_at, 'updated_at', a.updated_at, 'path', a.path::text) ORDER BY a.path), '[]')::text FROM (SELECT x.*, p.public_id AS parent FROM tenancy.accounts x LEFT JOIN tenancy.accounts p ON p.main_id = x.main_id AND p.id = x.parent_id WHERE x.main_id = coalesce(:main::bigint, tenancy.current_main_id()) AND x.path OPERATOR(tenancy.<@) tenancy.current_path() AND (NULL::text IS NULL OR x.path OPERATOR(tenancy.>) NULL::tenancy.account_path) AND (NULL::text IS NULL OR x.status = NULL) AND (NULL::text IS NULL OR x.parent_id = (SELECT y.id FROM tenancy.accounts y WHERE y.main_id = coalesce(:main::bigint, tenancy.current_main_id()) AND y.public_id = NULL)) ORDER BY x.path LIMIT :rows::integer) a;
COMMIT;
\endpipeline
