-- POST /v1/accounts {parent, name} as the gateway sends it without an
-- Idempotency-Key (gateway/api_request.cpp: context, the route's statement
-- from gateway/routes_accounts.cpp create_account, the api.request audit
-- record kRecordSql, COMMIT), one pipeline = one round trip.
\startpipeline
BEGIN;
SELECT set_config('role', 'tenancy_app', true);
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, tenancy.current_main_id()::text, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT tenancy.get_account(tenancy.create_account(:parent, :name))::text;
SELECT tenancy.audit_event('api.request', :label, :detail::jsonb);
COMMIT;
\endpipeline
