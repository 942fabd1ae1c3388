// Which names may hold a credential (see secret_names.hpp).
#include "secret_names.hpp"

namespace tenancy {
namespace {

char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Does name[at..] start with `word` (lowercase), ignoring ASCII case?
bool matches_at(const char *name, std::size_t len, std::size_t at, const char *word) noexcept {
    for (std::size_t i = 0; word[i] != '\0'; i++)
        if (at + i >= len || lower(name[at + i]) != word[i])
            return false;
    return true;
}

}  // namespace

bool is_secret_name(const char *name, std::size_t len) noexcept {
    if (matches_at(name, len, 0, "password"))
        return true;
    for (std::size_t at = 0; at < len; at++)
        if (matches_at(name, len, at, "hash") || matches_at(name, len, at, "secret") ||
            matches_at(name, len, at, "token"))
            return true;
    return false;
}

}  // namespace tenancy
