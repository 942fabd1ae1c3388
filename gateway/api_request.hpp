// Authenticated /v1 requests: who is calling, in which account, and the
// audit entry every such request leaves.
//
// Every /v1 request runs in one database transaction that first drops to the
// role tenancy_app (no BYPASSRLS, owns nothing: whatever the gateway's own
// database user may do, a request sees only what row-level security shows
// its credential), then calls tenancy.authenticate() with the bearer
// credential and, when the Tenancy-Account header names an account,
// tenancy.act_as() for it. These statements go out together with the
// handler's first statement (db_tx.hpp), so a route with one statement is one
// round trip: BEGIN, the role, authenticate, act_as, the statement,
// the audit record and COMMIT.
//
// Recording: a mutating request records itself with tenancy.audit_event(
// 'api.request', route, {method, route, status, request_id}) before COMMIT;
// when it fails, its transaction rolls back and the refusal is recorded in a
// second transaction. A GET runs READ ONLY and writes nothing: its record
// goes to the read log (read_log.hpp), written in batches on the primary. A
// request whose credential is refused has no account to be recorded in
// (authenticate() itself counts and logs logins).
//
// A session whose MFA is pending or whose password must change gets 401
// mfa_required / 403 password_change_required from the authenticate
// statement itself, unless its route is one such a session may use.
//
// POST requests with an Idempotency-Key header: the first answer is stored
// with the effect, in the same transaction (tenancy.idempotency_begin /
// idempotency_finish); the same key and body again within 24 h gets it back
// (header Idempotency-Replayed: true), another body with the key is 422.
#pragma once

#include "db_pool.hpp"
#include "db_tx.hpp"
#include "http_server.hpp"
#include "route_table.hpp"

#include <optional>
#include <string>

namespace tenancy::gateway {

inline constexpr const char *kAccountHeader = "Tenancy-Account";
inline constexpr const char *kIdempotencyHeader = "Idempotency-Key";

// The credential of "Authorization: Bearer <credential>" (scheme matched
// case-insensitively); nullopt when the header is missing or malformed.
std::optional<std::string> bearer_credential(const std::string &authorization);

// The main account id an API key names ("tnc_<main>_<key>_<secret>"), as
// decimal digits; nullopt for anything else (a session token, a malformed
// key). Not verified: the request's statements use it only to narrow what
// they read (ApiCall::main_hint), and row security decides.
std::optional<std::string> api_key_main_id(const std::string &credential);

// Runs route's handler for req as described above and writes the answer or
// the problem.
void run_route(DbPool &pool, const Route &route, const httplib::Request &req,
               httplib::Response &res);

}  // namespace tenancy::gateway
