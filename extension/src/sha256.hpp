// SHA-256 and HMAC-SHA-256 for every caller in the extension (sha256.cpp).
#pragma once

#include <cstddef>

namespace tenancy {

constexpr std::size_t kSha256Size = 32;

// out = SHA-256(data). Returns false if OpenSSL fails; never throws and never
// ereports, so any frame may call it.
[[nodiscard]] bool sha256(const void *data, std::size_t len, unsigned char *out) noexcept;

// out (kSha256Size bytes) = HMAC-SHA-256(key, data). Same contract as sha256.
[[nodiscard]] bool hmac_sha256(const void *key, std::size_t key_len, const void *data,
                               std::size_t len, unsigned char *out) noexcept;

}  // namespace tenancy
