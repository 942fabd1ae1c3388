-- GET /v1/accounts?limit=50 (first page: no cursor, status or parent, so those
-- parameters are NULL; the gateway fetches limit + 1 rows) as the gateway sends
-- it (gateway/api_request.cpp; gateway/routes_accounts.cpp list_accounts), one
-- pipeline = one round trip.
\startpipeline
BEGIN READ ONLY;
SET LOCAL ROLE tenancy_app;
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.public_id, 'parent', p.public_id, 'name', a.name, 'status', a.status, 'plan', a.plan, 'created_at', a.created_at, 'updated_at', a.updated_at, 'path', a.path::text) ORDER BY a.path), '[]')::text FROM (SELECT x.* FROM tenancy.accounts x WHERE x.path OPERATOR(tenancy.<@) tenancy.current_path() AND (NULL::text IS NULL OR x.path OPERATOR(tenancy.>) NULL::text::tenancy.account_path) AND (NULL::text IS NULL OR x.status = NULL::text) AND (NULL::text IS NULL OR x.parent_id = (SELECT y.id FROM tenancy.accounts y WHERE y.main_id = tenancy.current_main_id() AND y.public_id = NULL::text)) ORDER BY x.path LIMIT :rows::integer) a LEFT JOIN tenancy.accounts p ON p.main_id = a.main_id AND p.id = a.parent_id;
COMMIT;
\endpipeline
