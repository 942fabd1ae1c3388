// libFuzzer target for the account_path codec (extension/src/account_path_codec.hpp):
// the text parser and the binary validator, with the properties that must hold
// for every input they accept:
//  * text: parse -> format gives back the input byte for byte (the parser
//    accepts only the canonical form), and the bytes validate;
//  * binary: validate -> format -> parse gives back the same bytes;
//  * two accepted paths: <@, compare, common_prefix and subtree_upper agree.
// Any violation aborts (a crash for libFuzzer).
#include "account_path_codec.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace P = tenancy::path;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            std::fprintf(stderr, "property violated: %s (line %d)\n", #cond, __LINE__); \
            std::abort();                                                               \
        }                                                                               \
    } while (0)

static bool text_case(const char *s, size_t n, uint8_t *out, size_t *out_len) {
    P::Result r = P::parse_text(s, n, out);
    if (r.status != P::Status::Ok) {
        CHECK(r.message != nullptr && r.message[0] != '\0');
        CHECK(r.position <= n || r.status == P::Status::Limit);
        return false;
    }
    CHECK(r.length >= 2 && r.length <= P::kMaxEncoded);
    CHECK(r.depth >= 1 && r.depth <= P::kMaxDepth);
    P::Result v = P::validate(out, r.length);
    CHECK(v.status == P::Status::Ok && v.depth == r.depth);
    CHECK(P::depth(out, r.length) == r.depth);
    static char text[P::kMaxText + 32];
    size_t tn = P::format_text(out, r.length, text);
    CHECK(tn == n && std::memcmp(text, s, n) == 0);
    *out_len = r.length;
    return true;
}

static void binary_case(const uint8_t *data, size_t n) {
    P::Result v = P::validate(data, n);
    // Decoding helpers must stay in bounds on any bytes, valid or not.
    (void)P::depth(data, n);
    (void)P::label_offset(data, n, 3);
    static char text[P::kMaxText + 32];
    size_t tn = P::format_text(data, n, text);
    CHECK(tn <= P::kMaxText + 21);
    if (v.status != P::Status::Ok)
        return;
    static uint8_t again[P::kMaxEncoded];
    P::Result r = P::parse_text(text, tn, again);
    CHECK(r.status == P::Status::Ok && r.length == n && std::memcmp(again, data, n) == 0);
}

static void pair_case(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    bool below = P::is_descendant_or_self(a, na, b, nb);
    int c = P::compare(a, na, b, nb);
    CHECK(c == -P::compare(b, nb, a, na));
    CHECK((c == 0) == (na == nb && std::memcmp(a, b, na) == 0));
    static uint8_t upper[P::kMaxEncoded + 1];
    size_t nu = P::subtree_upper(b, nb, upper);
    // a <@ b  <=>  b <= a < subtree_upper(b)
    bool in_range = P::compare(a, na, b, nb) >= 0 && P::compare(a, na, upper, nu) < 0;
    CHECK(below == in_range);
    size_t cp = P::common_prefix(a, na, b, nb);
    CHECK(cp <= na && cp <= nb && std::memcmp(a, b, cp) == 0);
    CHECK(P::is_descendant_or_self(a, na, a, cp));
    CHECK(below == (cp == nb));
    if (below)
        CHECK(P::depth(a, na) >= P::depth(b, nb));
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t a[P::kMaxEncoded], b[P::kMaxEncoded];
    size_t na = 0, nb = 0;
    text_case(reinterpret_cast<const char *>(data), size, a, &na);
    binary_case(data, size);
    // Split at the first '|' into two text paths and compare them.
    const void *bar = std::memchr(data, '|', size);
    if (bar != nullptr) {
        size_t k = static_cast<size_t>(static_cast<const uint8_t *>(bar) - data);
        if (text_case(reinterpret_cast<const char *>(data), k, a, &na) &&
            text_case(reinterpret_cast<const char *>(data) + k + 1, size - k - 1, b, &nb)) {
            pair_case(a, na, b, nb);
            pair_case(b, nb, a, na);
        }
    }
    return 0;
}
