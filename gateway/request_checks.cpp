// Request checks (see request_checks.hpp).
#include "request_checks.hpp"

namespace tenancy::gateway {

bool has_control_character(const std::string &text) {
    for (unsigned char c : text)
        if (c < 0x20 || c == 0x7f)
            return true;
    return false;
}

std::optional<std::string> control_character_in(const httplib::Request &req) {
    if (has_control_character(req.path))
        return std::string("the path");
    for (const auto &[name, value] : req.params)
        if (has_control_character(name) || has_control_character(value))
            return "query parameter \"" + (has_control_character(name) ? std::string("?") : name) +
                   "\"";
    for (const char *header : kCheckedHeaders) {
        auto range = req.headers.equal_range(header);
        for (auto it = range.first; it != range.second; ++it)
            if (has_control_character(it->second))
                return "header " + std::string(header);
    }
    return std::nullopt;
}

}  // namespace tenancy::gateway
