// Authenticated /v1 requests: who is calling, in which account, and the
// audit entry every such request leaves.
//
// Every /v1 request runs in one database transaction that first drops to the
// role tenancy_app (no BYPASSRLS, owns nothing: whatever the gateway's own
// database user may do, a request sees only what row-level security shows
// its credential), then calls tenancy.authenticate() with the bearer
// credential and, when the Tenancy-Account header names an account,
// tenancy.act_as() for it. The handler runs next, and the request is recorded
// with tenancy.audit_event('api.request', route, {method, route, status,
// request_id}) before COMMIT. When the handler fails, its transaction rolls
// back and the request is recorded in a second transaction, so a refused
// request is on the log too. A request whose credential is refused has no
// account to be recorded in (authenticate() itself counts and logs logins).
// A session whose MFA is pending or whose password must change gets 401
// mfa_required / 403 password_change_required right after authenticate(),
// unless its route is one such a session may use; that refusal is recorded
// like any other.
#pragma once

#include "db_pool.hpp"
#include "db_tx.hpp"
#include "http_server.hpp"

#include <functional>
#include <optional>
#include <string>

namespace tenancy::gateway {

inline constexpr const char *kAccountHeader = "Tenancy-Account";

// The credential of "Authorization: Bearer <credential>" (scheme matched
// case-insensitively); nullopt when the header is missing or malformed.
std::optional<std::string> bearer_credential(const std::string &authorization);

// What a handler answers: a status and a JSON body (none for 204).
struct ApiAnswer {
    int status = 200;
    nlohmann::json body;
};

// A handler's refusal that is not a database error (a bad query parameter).
struct ApiError {
    Problem problem;
};

using ApiHandler = std::function<ApiAnswer(Tx &, const httplib::Request &)>;

// Whether a route serves a restricted context (MFA pending, password to
// change): only verifying the factor, changing the password and logging out.
enum class RestrictedContext { refuse, allow };

// Runs handler as described above and writes the answer or the problem.
// route is the route's pattern as documented ("GET /v1/me"), recorded in the
// audit entry instead of the concrete path.
void run_api_request(DbPool &pool, const std::string &route, const httplib::Request &req,
                     httplib::Response &res, const ApiHandler &handler,
                     RestrictedContext restricted = RestrictedContext::refuse);

void register_me_routes(HttpServer &server, DbPool &pool);
void register_audit_routes(HttpServer &server, DbPool &pool);

}  // namespace tenancy::gateway
