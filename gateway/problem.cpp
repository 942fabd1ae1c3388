#include "problem.hpp"

namespace tenancy::gateway {

namespace {
Problem make(int status, const char *code, const char *title) {
    Problem p;
    p.status = status;
    p.code = code;
    p.title = title;
    return p;
}

bool starts_with(const std::string &s, const char *prefix) {
    return s.rfind(prefix, 0) == 0;
}
}  // namespace

nlohmann::json problem_json(const Problem &p, const std::string &request_id) {
    nlohmann::json j = {
        {"type", "urn:tenancy:problem:" + p.code},         {"title", p.title}, {"status", p.status},
        {"detail", p.detail.empty() ? p.title : p.detail}, {"code", p.code},
    };
    if (!p.field.empty())
        j["field"] = p.field;
    if (!request_id.empty())
        j["request_id"] = request_id;
    return j;
}

Problem problem_for_status(int status, std::string detail) {
    Problem p;
    switch (status) {
        case 400:
            p = make(400, "bad_request", "Bad request");
            break;
        case 401:
            p = make(401, "unauthenticated", "Authentication required");
            break;
        case 403:
            p = make(403, "forbidden", "Forbidden");
            break;
        case 404:
            p = make(404, "not_found", "Not found");
            break;
        case 405:
            p = make(405, "method_not_allowed", "Method not allowed");
            break;
        case 408:
            p = make(408, "request_timeout", "Request timeout");
            break;
        case 409:
            p = make(409, "conflict", "Conflict");
            break;
        case 413:
            p = make(413, "payload_too_large", "Payload too large");
            break;
        case 414:
            p = make(414, "uri_too_long", "URI too long");
            break;
        case 415:
            p = make(415, "unsupported_media_type", "Unsupported media type");
            break;
        case 416:
            p = make(416, "range_not_satisfiable", "Range not satisfiable");
            break;
        case 422:
            p = make(422, "unprocessable", "Unprocessable request");
            break;
        case 429:
            p = make(429, "too_many_connections", "Too many connections");
            break;
        case 503:
            p = make(503, "service_unavailable", "Service unavailable");
            break;
        default:
            if (status >= 400 && status < 500)
                p = make(status, "bad_request", "Bad request");
            else
                p = make(status >= 500 && status < 600 ? status : 500, "internal_error",
                         "Internal server error");
    }
    p.detail = std::move(detail);
    return p;
}

Problem problem_invalid_request(std::string detail) {
    Problem p = make(400, "invalid_request", "Invalid request");
    p.detail = std::move(detail);
    return p;
}

Problem problem_for_sqlstate(const std::string &s) {
    // Exact codes first, then classes.
    if (s == "28000" || s == "28P01")
        return make(401, "unauthenticated", "Authentication required");
    // A session whose second factor is still pending, or whose password must
    // change first, may do nothing else.
    if (s == "28T01")
        return make(401, "mfa_required", "Multi-factor authentication required");
    if (s == "28T02")
        return make(403, "password_change_required", "Password change required");
    if (s == "42501")
        return make(403, "forbidden", "Forbidden");
    if (s == "P0002")
        return make(404, "not_found", "Not found");
    // The same Idempotency-Key with another request (idempotency_begin).
    if (s == "22T01")
        return make(422, "idempotency_key_reused", "Idempotency key reused");
    if (s == "23505")
        return make(409, "conflict", "Conflict");
    // object_not_in_prerequisite_state: the state forbids it now (MFA already
    // on, an inactive account, the last owner of a main account).
    if (s == "55000")
        return make(409, "conflict", "Conflict");
    // configuration_limit_exceeded: a plan's limit (subaccounts, depth,
    // sub-users, API keys): well formed, but the account's plan refuses it.
    if (s == "53400")
        return make(409, "plan_limit_reached", "Plan limit reached");
    if (s == "40001" || s == "40P01")
        return make(409, "concurrent_update", "Concurrent update, retry the request");
    if (s == "57014")
        return make(503, "database_timeout", "Database did not answer in time");
    if (s == "53300" || s == "57P01" || s == "57P02" || s == "57P03")
        return make(503, "database_unavailable", "Database unavailable");
    if (s.size() != 5)
        return make(500, "internal_error", "Internal server error");
    if (starts_with(s, "22") || starts_with(s, "23"))
        return make(422, "unprocessable", "Unprocessable request");
    if (starts_with(s, "08"))
        return make(503, "database_unavailable", "Database unavailable");
    return make(500, "internal_error", "Internal server error");
}

}  // namespace tenancy::gateway
