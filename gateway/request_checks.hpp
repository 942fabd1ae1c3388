// Checks every routed request passes before its handler: no control
// character in the text the gateway reads. cpp-httplib percent-decodes the
// path, query values and (0.11) header values, so "%00" becomes a NUL that
// libpq would silently cut a parameter at ("acc_x%00..." read as "acc_x").
#pragma once

#include <httplib.h>

#include <optional>
#include <string>

namespace tenancy::gateway {

// The request headers the gateway reads; a new one a route reads goes here.
inline constexpr const char *kCheckedHeaders[] = {"Authorization", "Tenancy-Account",
                                                  "X-Request-Id"};

// Any byte below 0x20 or 0x7f (DEL).
bool has_control_character(const std::string &text);

// Where the first control character is ("the path", "query parameter
// \"limit\"", "header Tenancy-Account"); nullopt when there is none.
std::optional<std::string> control_character_in(const httplib::Request &req);

}  // namespace tenancy::gateway
