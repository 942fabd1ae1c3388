// SHA-256 digests as lowercase hex, for keys the gateway derives from request
// data (idempotency fingerprints, cursor scopes). OpenSSL does the hashing.
#pragma once

#include <string>

namespace tenancy::gateway {

// The SHA-256 of `text` as 64 lowercase hex digits.
std::string sha256_hex(const std::string &text);

}  // namespace tenancy::gateway
