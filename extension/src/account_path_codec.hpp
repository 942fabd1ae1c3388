// tenancy.account_path: the pure C++ codec (no PostgreSQL headers, so it can be
// fuzzed and property-tested on its own).
//
// A path is the sequence of account ids (labels) from a main account down to
// an account: text form "17.4031.90211". Every label is a positive bigint.
//
// Binary layout (the varlena payload; no other header):
//
//     label := n  b[0] .. b[n-1]     n = 1..8, b = the value, big-endian,
//                                    without leading zero bytes (b[0] != 0)
//     path  := label label ...       1..kMaxDepth labels
//
// Why this layout:
//  * memcmp order = tree order. A smaller value has fewer bytes, so a smaller
//    length byte; equal lengths compare as big-endian numbers. The encoding is
//    prefix-free per label, so the first differing byte of two paths lies in
//    their first differing label and decides by that label's value; a path
//    that is a byte prefix of another is its ancestor and sorts first. Hence a
//    node sorts before its descendants and a subtree is one contiguous range
//    [P, subtree_upper(P)) where subtree_upper(P) is P with its last label
//    incremented (the next sibling).
//  * `a <@ b` (a is b or below b) is "b's bytes are a prefix of a's bytes":
//    one length check and one memcmp. Self-delimiting labels guarantee a byte
//    prefix ends on a label boundary.
//  * Equality is byte equality (the encoding is canonical), so hashing and
//    btree deduplication work on the raw bytes.
//  * Small: account id 90211 takes 4 bytes; "17.4031.90211" is 9 bytes of
//    payload plus PostgreSQL's 1-byte short varlena header.
//
// Limits: at most kMaxDepth labels; labels 1..kMaxLabel. The largest bigint is
// reserved so that subtree_upper(P) (next sibling of P's last label, used as
// an exclusive index bound) always exists.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace tenancy {
namespace path {

constexpr int kMaxDepth = 64;
constexpr uint64_t kMaxLabel = 9223372036854775806ULL;  // INT64_MAX - 1
constexpr uint64_t kBoundLabel = kMaxLabel + 1;         // only in subtree_upper()
constexpr size_t kMaxLabelBytes = 9;                    // length byte + 8
constexpr size_t kMaxEncoded = kMaxDepth * kMaxLabelBytes;
constexpr size_t kMaxLabelDigits = 19;
// The longest valid text form: kMaxDepth labels of 19 digits and the dots.
constexpr size_t kMaxText = kMaxDepth * kMaxLabelDigits + (kMaxDepth - 1);

enum class Status {
    Ok,
    Syntax,  // malformed text or bytes (SQLSTATE 22P02)
    Limit,   // well-formed but over a limit: depth, length (SQLSTATE 22023)
};

struct Result {
    Status status = Status::Ok;
    size_t length = 0;         // encoded bytes written (Ok only)
    int depth = 0;             // labels (Ok only)
    size_t position = 0;       // byte offset of the problem in the input
    const char *message = "";  // static string, never owned
};

// Bytes the encoding of `value` (1..UINT64) takes, length byte included.
inline size_t label_size(uint64_t value) {
    size_t n = 1;
    while (n < 8 && (value >> (8 * n)) != 0)
        ++n;
    return n + 1;
}

// Writes the encoding of value (> 0) at out; returns bytes written.
inline size_t encode_label(uint64_t value, uint8_t *out) {
    size_t n = label_size(value) - 1;
    out[0] = static_cast<uint8_t>(n);
    for (size_t i = 0; i < n; ++i)
        out[1 + i] = static_cast<uint8_t>(value >> (8 * (n - 1 - i)));
    return n + 1;
}

// Reads the label at data[pos]; returns its size (0 if it does not fit: only
// possible for corrupt data, which callers treat as the end).
inline size_t decode_label(const uint8_t *data, size_t len, size_t pos, uint64_t *value) {
    if (pos >= len)
        return 0;
    size_t n = data[pos];
    if (n < 1 || n > 8 || pos + 1 + n > len)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i)
        v = (v << 8) | data[pos + 1 + i];
    *value = v;
    return n + 1;
}

// Number of labels (walks the length bytes).
inline int depth(const uint8_t *data, size_t len) {
    int d = 0;
    size_t pos = 0;
    while (pos < len) {
        size_t n = data[pos];
        if (n < 1 || n > 8 || pos + 1 + n > len)
            break;
        pos += n + 1;
        ++d;
    }
    return d;
}

// Byte offset where label `index` (0-based) starts; len if index >= depth.
inline size_t label_offset(const uint8_t *data, size_t len, int index) {
    size_t pos = 0;
    for (int i = 0; i < index && pos < len; ++i) {
        size_t n = data[pos];
        if (n < 1 || n > 8 || pos + 1 + n > len)
            return len;
        pos += n + 1;
    }
    return pos < len ? pos : len;
}

// Word-at-a-time byte comparison: paths are short (typically 4-20 bytes), so
// this beats a memcmp call in the per-row <@ and in btree comparisons.
inline uint64_t load_be64(const uint8_t *p) {
    uint64_t x;
    std::memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

inline bool bytes_equal(const uint8_t *a, const uint8_t *b, size_t n) {
    for (; n >= 8; a += 8, b += 8, n -= 8) {
        uint64_t x, y;
        std::memcpy(&x, a, 8);
        std::memcpy(&y, b, 8);
        if (x != y)
            return false;
    }
    if (n >= 4) {
        uint32_t x, y;
        std::memcpy(&x, a, 4);
        std::memcpy(&y, b, 4);
        if (x != y)
            return false;
        a += 4, b += 4, n -= 4;
    }
    for (; n > 0; ++a, ++b, --n)
        if (*a != *b)
            return false;
    return true;
}

// Tree order: memcmp order, a prefix (ancestor) first.
inline int compare(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    size_t n = na < nb ? na : nb, i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x = load_be64(a + i), y = load_be64(b + i);
        if (x != y)
            return x < y ? -1 : 1;
    }
    for (; i < n; ++i)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return na < nb ? -1 : (na > nb ? 1 : 0);
}

// a <@ b: a is b or a descendant of b.
inline bool is_descendant_or_self(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    return nb <= na && bytes_equal(a, b, nb);
}

// Bytes of the longest common label prefix of a and b.
inline size_t common_prefix(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    size_t pos = 0;
    while (pos < na && pos < nb) {
        size_t n = a[pos];
        if (n < 1 || n > 8 || pos + 1 + n > na || pos + 1 + n > nb)
            break;
        if (std::memcmp(a + pos, b + pos, n + 1) != 0)
            break;
        pos += n + 1;
    }
    return pos;
}

// Parses the text form s[0..n) into out (room for kMaxEncoded bytes).
// Strict: labels are decimal digits without sign, spaces or leading zeros,
// 1..kMaxLabel, separated by single dots; 1..kMaxDepth labels.
inline Result parse_text(const char *s, size_t n, uint8_t *out) {
    Result r;
    auto fail = [&](Status st, size_t pos, const char *msg) {
        r.status = st;
        r.position = pos;
        r.message = msg;
        r.length = 0;
        r.depth = 0;
        return r;
    };
    if (n == 0)
        return fail(Status::Syntax, 0, "empty path");
    if (n > kMaxText)
        return fail(Status::Limit, kMaxText, "path text too long");
    size_t pos = 0, written = 0;
    int d = 0;
    for (;;) {
        size_t start = pos;
        uint64_t v = 0;
        while (pos < n && s[pos] >= '0' && s[pos] <= '9') {
            if (pos - start >= kMaxLabelDigits)
                return fail(Status::Syntax, start, "label out of range");
            v = v * 10 + static_cast<uint64_t>(s[pos] - '0');
            ++pos;
        }
        if (pos == start) {
            if (pos < n && s[pos] != '.')
                return fail(Status::Syntax, pos, "unexpected character");
            return fail(Status::Syntax, pos, "empty label");
        }
        if (s[start] == '0') {
            if (pos - start == 1)
                return fail(Status::Syntax, start, "label must be positive");
            return fail(Status::Syntax, start, "label has a leading zero");
        }
        if (v > kMaxLabel)
            return fail(Status::Syntax, start, "label out of range");
        if (d == kMaxDepth)
            return fail(Status::Limit, start, "path too deep");
        written += encode_label(v, out + written);
        ++d;
        if (pos == n)
            break;
        if (s[pos] != '.')
            return fail(Status::Syntax, pos, "unexpected character");
        ++pos;
        if (pos == n)
            return fail(Status::Syntax, pos, "empty label");
    }
    r.length = written;
    r.depth = d;
    return r;
}

// Checks that data[0..n) is a canonical encoding of a valid path (binary
// input, and the fuzzer's oracle).
inline Result validate(const uint8_t *data, size_t n) {
    Result r;
    auto fail = [&](Status st, size_t pos, const char *msg) {
        r.status = st;
        r.position = pos;
        r.message = msg;
        return r;
    };
    if (n == 0)
        return fail(Status::Syntax, 0, "empty path");
    if (n > kMaxEncoded)
        return fail(Status::Limit, kMaxEncoded, "path too long");
    size_t pos = 0;
    int d = 0;
    while (pos < n) {
        size_t len = data[pos];
        if (len < 1 || len > 8)
            return fail(Status::Syntax, pos, "bad label length");
        if (pos + 1 + len > n)
            return fail(Status::Syntax, pos, "truncated label");
        if (data[pos + 1] == 0)
            return fail(Status::Syntax, pos, "non-canonical label");
        if (len == 8) {
            uint64_t v;
            decode_label(data, n, pos, &v);
            if (v > kMaxLabel)
                return fail(Status::Syntax, pos, "label out of range");
        }
        if (d == kMaxDepth)
            return fail(Status::Limit, pos, "path too deep");
        ++d;
        pos += len + 1;
    }
    r.length = n;
    r.depth = d;
    return r;
}

// Writes the decimal of v (> 0) at out; returns characters written.
inline size_t format_label(uint64_t v, char *out) {
    char tmp[20];
    size_t k = 0;
    do {
        tmp[k++] = static_cast<char>('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < k; ++i)
        out[i] = tmp[k - 1 - i];
    return k;
}

// Text form of an encoded path into out (room for kMaxText + 1 + 20 bytes,
// NUL-terminated); returns its length.
inline size_t format_text(const uint8_t *data, size_t len, char *out) {
    size_t pos = 0, w = 0;
    uint64_t v;
    while (size_t n = decode_label(data, len, pos, &v)) {
        if (w != 0)
            out[w++] = '.';
        w += format_label(v, out + w);
        pos += n;
        if (w > kMaxText)
            break;  // corrupt data only; never overrun
    }
    out[w] = '\0';
    return w;
}

// The exclusive upper bound of P's subtree: P with its last label incremented
// (the next sibling). Writes it to out (room for len + 1 bytes); returns its
// length. P's labels are <= kMaxLabel, so the increment always fits a bigint.
inline size_t subtree_upper(const uint8_t *data, size_t len, uint8_t *out) {
    size_t last = 0, pos = 0;
    uint64_t v = 0;
    while (size_t n = decode_label(data, len, pos, &v)) {
        last = pos;
        pos += n;
    }
    if (pos == 0)
        return 0;
    std::memcpy(out, data, last);
    return last + encode_label(v + 1, out + last);
}

}  // namespace path
}  // namespace tenancy
