// Base32 (RFC 4648, section 6) for TOTP secrets. Pure C++, no PostgreSQL
// headers, so tests/fuzz/fuzz_base32.cpp can fuzz it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tenancy {

// Encodes bytes with the RFC 4648 alphabet (A-Z, 2-7); '=' padding when pad.
std::string base32_encode(const uint8_t *data, size_t len, bool pad);

// Decodes a secret as authenticator apps show them: letters in either case,
// spaces ignored, '=' padding optional but only at the end. Returns false and
// sets error for any other character, a length no encoder produces (1, 3 or
// 6 characters in the last group), too much padding, or no data at all.
bool base32_decode(std::string_view text, std::vector<uint8_t> &out, std::string &error);

}  // namespace tenancy
