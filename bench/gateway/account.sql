-- GET /v1/accounts/{id} as the gateway sends it (gateway/api_request.cpp
-- enter_context, kAuthenticateSql; gateway/routes_accounts.cpp get_account),
-- one pipeline = one round trip.
\startpipeline
BEGIN READ ONLY;
SELECT set_config('role', 'tenancy_app', true);
SELECT tenancy.current_role_name(), tenancy.current_account(), CASE WHEN :principal::boolean THEN (tenancy.whoami()->'principal')::text END, tenancy.current_main_id()::text, CASE WHEN :restricted::boolean THEN tenancy._refuse_restricted() END IS NULL FROM (SELECT tenancy.authenticate(:key) OFFSET 0) a;
SELECT tenancy.get_account(:account)::text;
COMMIT;
\endpipeline
