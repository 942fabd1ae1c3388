// ASCII character classes for the byte scanners (phi_redaction, log_scrub):
// locale-free, no PostgreSQL headers, so the fuzz targets can include them.
#pragma once

namespace tenancy::ascii {

inline bool is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}
inline bool is_alpha(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
inline bool is_alnum(unsigned char c) {
    return is_digit(c) || is_alpha(c);
}
inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

}  // namespace tenancy::ascii
