// PHI redaction of transcripts: phone numbers, email addresses and Luhn-valid
// card numbers become [PHONE], [EMAIL] and [CARD]. Pure C++ (no PostgreSQL
// headers) so tests/fuzz/fuzz_redact_phi.cpp can fuzz it. The rules are in
// README "Crypto primitives" and at the top of phi_redaction.cpp.
#pragma once

#include <string>
#include <string_view>

namespace tenancy {

// Every match consists of whole UTF-8 characters, so valid UTF-8 in gives
// valid UTF-8 out. Invalid input is handled without reading out of bounds.
std::string redact_phi(std::string_view text);

// True when bytes are well-formed UTF-8 (no overlongs, surrogates or values
// above U+10FFFF).
bool is_valid_utf8(std::string_view bytes);

// Luhn checksum over the ASCII digits of s (other characters skipped).
bool luhn_valid(std::string_view s);

}  // namespace tenancy
