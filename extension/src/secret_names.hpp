// Which names may hold a credential (secret_names.cpp): the one rule for
// audited column names (audit_change.cpp) and event detail keys
// (audit_detail.cpp), so the log never shows such a value in clear.
#pragma once

#include <cstddef>

namespace tenancy {

// True if `name` (len bytes, not necessarily NUL-terminated) contains
// "hash", "secret" or "token", or starts with "password", ignoring ASCII
// case. Any length: a long key is matched whole. Never throws.
[[nodiscard]] bool is_secret_name(const char *name, std::size_t len) noexcept;

}  // namespace tenancy
