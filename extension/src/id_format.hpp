// The shape of credentials and public ids: "<prefix>_<id>_..._<id>[_<secret>]".
// Pure C++ (no PostgreSQL headers) so it can be fuzzed on its own.
#pragma once

#include <cstring>

namespace tenancy {

// A span of the input.
struct IdPiece {
    const char *data;
    int len;
};

inline bool is_base64url(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

// Splits s into `ids` ids of 1 to 18 digits and, when secret_len > 0, a
// trailing secret of exactly secret_len base64url characters. out must hold
// ids + 1 pieces. Returns the number of pieces, or 0 when s is malformed.
inline int split_id(const char *s, int len, const char *prefix, int prefix_len, int ids,
                    int secret_len, IdPiece *out) {
    if (ids < 1 || len < prefix_len + 1 || std::memcmp(s, prefix, prefix_len) != 0 ||
        s[prefix_len] != '_')
        return 0;
    int pos = prefix_len + 1;
    for (int i = 0; i < ids; i++) {
        int start = pos;
        while (pos < len && s[pos] >= '0' && s[pos] <= '9')
            pos++;
        int n = pos - start;
        if (n < 1 || n > 18)
            return 0;
        out[i] = {s + start, n};
        if (i == ids - 1 && secret_len == 0)
            return pos == len ? ids : 0;
        if (pos >= len || s[pos] != '_')
            return 0;
        pos++;
    }
    if (len - pos != secret_len)
        return 0;
    for (int i = pos; i < len; i++)
        if (!is_base64url(s[i]))
            return 0;
    out[ids] = {s + pos, secret_len};
    return ids + 1;
}

}  // namespace tenancy
