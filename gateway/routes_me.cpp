// GET /v1/me: who the credential is and where it acts.
//   {principal, account, role, scope, expires_at, memberships: [{account, role}]}
// memberships: a user's memberships that row-level security shows in the
// account acted in (an API key or sub-user has none).
#include "api_request.hpp"

namespace tenancy::gateway {

void register_me_routes(HttpServer &server, DbPool &pool) {
    server.route("GET", "/v1/me", [&pool](const httplib::Request &req, httplib::Response &res) {
        run_api_request(pool, "GET /v1/me", req, res, [](Tx &tx, const httplib::Request &) {
            Result r = tx.exec(
                "SELECT w::text, (SELECT coalesce(jsonb_agg(jsonb_build_object("
                "'account', a.public_id, 'role', m.role) ORDER BY a.path), '[]') "
                "FROM tenancy.memberships m JOIN tenancy.accounts a ON a.id = m.account_id "
                "WHERE m.user_id = CASE WHEN w->'principal'->>'kind' = 'user' "
                "THEN (w->'principal'->>'id')::bigint END)::text "
                "FROM tenancy.whoami() w");
            nlohmann::json me = nlohmann::json::parse(r.value(0, 0).value_or("{}"));
            me["memberships"] = nlohmann::json::parse(r.value(0, 1).value_or("[]"));
            return ApiAnswer{200, me};
        });
    });
}

}  // namespace tenancy::gateway
