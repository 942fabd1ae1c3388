// GET /v1/me: who the credential is and where it acts.
//   {principal, account, role, scope, expires_at, memberships: [{account, role}]}
// memberships: a user's memberships that row-level security shows in the
// account acted in (an API key or sub-user has none).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

namespace {

ApiAnswer get_me(Tx &tx, const ApiCall &) {
    Result r = tx.exec_last(
        "SELECT (w || jsonb_build_object('memberships', (SELECT coalesce(jsonb_agg("
        "jsonb_build_object('account', a.public_id, 'role', m.role) ORDER BY a.path), '[]') "
        "FROM tenancy.memberships m JOIN tenancy.accounts a ON a.id = m.account_id "
        "WHERE m.user_id = CASE WHEN w->'principal'->>'kind' = 'user' "
        "THEN (w->'principal'->>'id')::bigint END)))::text "
        "FROM tenancy.whoami() w");
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

}  // namespace

std::vector<Route> me_routes() {
    Route me;
    me.method = "GET";
    me.path = "/v1/me";
    me.operation_id = "getMe";
    me.summary = "who the credential is, the account it acts in, its role and memberships";
    me.tag = "me";
    me.response = schema::object(
        {{"principal", schema::object({{"kind", schema::string()}, {"id", schema::string()}}, {})},
         {"account", schema::string()},
         {"role", schema::string()},
         {"scope", schema::nullable(schema::string())},
         {"expires_at", schema::nullable(schema::timestamp())},
         {"memberships", schema::array(schema::object(
                             {{"account", schema::string()}, {"role", schema::string()}}))}},
        {"scope", "expires_at"});
    me.handler = get_me;
    return {me};
}

}  // namespace tenancy::gateway
