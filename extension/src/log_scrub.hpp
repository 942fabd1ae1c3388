// Credential scrubbing of server log text (messages, contexts, statements).
// Pure C++ with no PostgreSQL headers and no allocation, so the emit_log_hook
// (log_scrub_hook.cpp) can call it inside error reporting and
// tests/fuzz/fuzz_log_scrub.cpp can fuzz it. Rules at the top of log_scrub.cpp.
#pragma once

#include <cstddef>

namespace tenancy {

// What replaces a secret: the secret part of a credential becomes REDACTED, a
// whole string literal or comment 'REDACTED'. A bare word, so that the text
// around a scrubbed credential lexes as before (scrubbing is idempotent).
constexpr char kScrubPlaceholder[] = "REDACTED";

// True when text calls ("name(", any case, quoting ignored: a false match only
// scrubs more) a function whose string arguments carry secrets (login,
// change_password, accept_invitation, ...), or has PASSWORD before a literal.
bool names_secret_function(const char *text, size_t len) noexcept;

// Scrubs text: the secret part of every credential-shaped token, and with
// literals = true also every string literal, dollar-quoted string and comment.
// Writes at most cap bytes of the result to out (no NUL added; out may be null
// with cap 0) and returns the result's full length: call once to measure, once
// to write. Never writes more than cap bytes.
size_t scrub_log_text(const char *text, size_t len, bool literals, char *out, size_t cap) noexcept;

// Offset of the first byte scrub_log_text would change, or len when it would
// return text unchanged. Bytes before it are kept verbatim.
size_t first_scrub_offset(const char *text, size_t len, bool literals) noexcept;

}  // namespace tenancy
