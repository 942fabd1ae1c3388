// Errors as application/problem+json (RFC 9457) with a stable "code" that
// clients switch on; "title" is fixed per code, "detail" is per occurrence.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace tenancy::gateway {

inline constexpr const char *kProblemContentType = "application/problem+json";

struct Problem {
    int status = 500;
    std::string code = "internal_error";
    std::string title = "Internal server error";
    std::string detail;
    std::string field;  // the body field or query parameter at fault, if any
};

// {"type","title","status","detail","code"} plus "field" and "request_id"
// when set.
nlohmann::json problem_json(const Problem &p, const std::string &request_id = "");

// The problem for an HTTP status the gateway itself produces (404, 405, ...).
Problem problem_for_status(int status, std::string detail = "");

// 400 invalid_request: the request itself is malformed where the gateway
// reads it (a control character in the path, a query value or a header).
Problem problem_invalid_request(std::string detail);

// The one place that maps a PostgreSQL SQLSTATE to an HTTP answer.
// detail is left empty: the caller decides what of the message is safe to
// show (a 500 must not echo internals).
Problem problem_for_sqlstate(const std::string &sqlstate);

}  // namespace tenancy::gateway
