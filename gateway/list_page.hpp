// Lists: {"data": [...], "next_cursor": "..." | null} with keyset cursors.
//
// A cursor carries the position after which the next page starts (a JSON
// value the route chooses: {"path": "1.5.9"}, {"id": 123}), sealed with
// HMAC-SHA256 over the position and the list's scope: the route, its path
// parameters, the credential (hashed) and the Tenancy-Account header. A
// cursor that was altered, forged, or made for another list or another
// caller is refused with 422 invalid_cursor; it never reaches SQL. The rows
// themselves are confined by row-level security whatever the position says.
#pragma once

#include "route_table.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tenancy::gateway {

inline constexpr int kDefaultPageLimit = 50;
inline constexpr int kMaxPageLimit = 500;

// The key cursors are sealed with. Gateways of one database share it
// (tenancy.gateway_cursor_key()); until set, a random per-process key.
void set_cursor_key(const std::vector<uint8_t> &key);

struct PageRequest {
    int limit = kDefaultPageLimit;
    std::optional<nlohmann::json> after;  // the position of the previous page's last row
};

// The scope a list's cursors are bound to (set by the framework).
std::string cursor_scope(const Route &route, const ApiCall &call, const std::string &credential);

std::string seal_cursor(const std::string &scope, const nlohmann::json &position);
// nullopt when the cursor is not one sealed for this scope.
std::optional<nlohmann::json> open_cursor(const std::string &scope, const std::string &cursor);

// limit (1..500, default 50) and cursor from the query; 422 invalid_field /
// invalid_cursor when they are wrong. Routes that use it declare the
// `limit` and `cursor` query parameters (page_query_fields()).
PageRequest page_request(const ApiCall &call);
std::vector<Field> page_query_fields();

// rows: a JSON array of up to page.limit + 1 rows. Answers the first
// page.limit of them, with a cursor after the last one when there was more.
ApiAnswer page_answer(const ApiCall &call, nlohmann::json rows, const PageRequest &page,
                      const std::function<nlohmann::json(const nlohmann::json &row)> &position_of);

}  // namespace tenancy::gateway
