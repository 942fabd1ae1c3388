// Password hashing (argon2id via libsodium), random tokens and SHA-256.
//
// Parameters: argon2id, t=2, m=19 MiB, p=1: OWASP's minimum recommendation.
// libsodium's INTERACTIVE preset (t=2, 64 MiB) costs about 4x the time and
// 64 MiB per concurrent login in a backend; see README "Crypto primitives".
#include "boundary.hpp"
#include "sha256.hpp"
#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace tenancy {
namespace {

constexpr unsigned long long kOpsLimit = 2;
constexpr size_t kMemLimit = size_t(19) << 20;  // bytes; argon2's m=19456 KiB
constexpr size_t kMaxPasswordBytes = 1024;

// Hashes with absurd cost parameters are refused rather than verified: a
// corrupt or hostile row must not make one login take minutes or gigabytes.
constexpr unsigned long kMaxVerifyMemKiB = 256 * 1024;
constexpr unsigned long kMaxVerifyPasses = 10;

// argon2id (these parameters) of 32 random bytes nobody kept: verifying
// against it costs what a real verify costs and never succeeds in practice.
const char kDummyHash[] =
    "$argon2id$v=19$m=19456,t=2,p=1$k49UwJ9e9PIYt77Bm57lgg$"
    "w8GbJvWHQLwiSqUGJO7495ytDkuJko0FF9sczjipQ9o";

void ensure_sodium() {
    if (sodium_init() < 0)
        throw SqlError(ERRCODE_INTERNAL_ERROR, "libsodium could not be initialised");
}

// A password argument. When PostgreSQL had to detoast it into a copy of its
// own, that copy is wiped when this goes out of scope.
struct PasswordArg {
    text *value;
    bool is_copy;
    // Build it inside guard() (so its destructor also runs on errors), from
    // the detoasted value and the original Datum fetched before.
    PasswordArg(text *detoasted, Datum original)
        : value(detoasted), is_copy(detoasted != (text *)DatumGetPointer(original)) {}
    ~PasswordArg() {
        if (is_copy)
            sodium_memzero(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
    }
    const char *data() const { return VARDATA_ANY(value); }
    size_t size() const { return VARSIZE_ANY_EXHDR(value); }
    bool acceptable() const { return size() > 0 && size() <= kMaxPasswordBytes; }
};

// Copies a stored hash into a NUL-terminated buffer of crypto_pwhash_STRBYTES;
// false when it cannot be one of ours (too long or with a NUL byte).
bool copy_hash(text *hash, char (&buf)[crypto_pwhash_STRBYTES]) {
    size_t len = VARSIZE_ANY_EXHDR(hash);
    if (len == 0 || len >= sizeof buf)
        return false;
    std::memcpy(buf, VARDATA_ANY(hash), len);
    buf[len] = '\0';
    return std::strlen(buf) == len;
}

// Reads m and t of "$argon2id$v=19$m=..,t=..,p=..$" (or $argon2i$); false if
// the string does not have that shape.
bool argon2_params(const char *hash, bool &is_id, unsigned long &mem_kib, unsigned long &passes) {
    const char *rest;
    if (std::strncmp(hash, "$argon2id$", 10) == 0) {
        is_id = true;
        rest = hash + 10;
    } else if (std::strncmp(hash, "$argon2i$", 9) == 0) {
        is_id = false;
        rest = hash + 9;
    } else {
        return false;
    }
    unsigned long version = 0, lanes = 0;
    int consumed = 0;
    if (std::sscanf(rest, "v=%lu$m=%lu,t=%lu,p=%lu$%n", &version, &mem_kib, &passes, &lanes,
                    &consumed) != 4 ||
        consumed == 0)
        return false;
    return true;
}

bool verify_against(const char *hash, const char *password, size_t len) {
    return crypto_pwhash_str_verify(hash, password, len) == 0;
}

}  // namespace
}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_hash_password);
Datum tenancy_hash_password(PG_FUNCTION_ARGS) {
    text *password_text = PG_GETARG_TEXT_PP(0);
    return tenancy::guard([&]() -> Datum {
        tenancy::PasswordArg password(password_text, PG_GETARG_DATUM(0));
        if (password.size() == 0)
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "password is empty");
        if (password.size() > tenancy::kMaxPasswordBytes)
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "password is too long",
                                    "at most 1024 bytes are accepted");
        tenancy::ensure_sodium();
        char out[crypto_pwhash_STRBYTES];
        if (crypto_pwhash_str_alg(out, password.data(), password.size(), tenancy::kOpsLimit,
                                  tenancy::kMemLimit, crypto_pwhash_ALG_ARGON2ID13) != 0)
            throw tenancy::SqlError(ERRCODE_OUT_OF_MEMORY, "argon2id hashing failed",
                                    "libsodium could not allocate the hashing memory");
        return tenancy::text_datum(out, std::strlen(out));
    });
}

// True when password matches hash. Malformed hashes, hashes with absurd cost
// parameters, and passwords hash_password would refuse give false, not an
// error; the latter still spend the time of a real verify.
PG_FUNCTION_INFO_V1(tenancy_verify_password);
Datum tenancy_verify_password(PG_FUNCTION_ARGS) {
    text *password_text = PG_GETARG_TEXT_PP(0);
    text *hash_text = PG_GETARG_TEXT_PP(1);
    bool ok = false;
    tenancy::guard([&]() -> Datum {
        tenancy::PasswordArg password(password_text, PG_GETARG_DATUM(0));
        tenancy::ensure_sodium();
        char hash[crypto_pwhash_STRBYTES];
        bool is_id = false;
        unsigned long mem_kib = 0, passes = 0;
        if (!tenancy::copy_hash(hash_text, hash) ||
            !tenancy::argon2_params(hash, is_id, mem_kib, passes) ||
            mem_kib > tenancy::kMaxVerifyMemKiB || passes > tenancy::kMaxVerifyPasses)
            return (Datum)0;
        if (!password.acceptable()) {
            tenancy::verify_against(tenancy::kDummyHash, password.data(),
                                    std::min(password.size(), tenancy::kMaxPasswordBytes));
            return (Datum)0;
        }
        ok = tenancy::verify_against(hash, password.data(), password.size());
        return (Datum)0;
    });
    PG_RETURN_BOOL(ok);
}

// True when hash is not argon2id with the current parameters (or is not a
// hash at all): the caller should store hash_password(password) after the
// next successful login.
PG_FUNCTION_INFO_V1(tenancy_password_needs_rehash);
Datum tenancy_password_needs_rehash(PG_FUNCTION_ARGS) {
    text *hash_text = PG_GETARG_TEXT_PP(0);
    bool needs = true;
    tenancy::guard([&]() -> Datum {
        tenancy::ensure_sodium();
        char hash[crypto_pwhash_STRBYTES];
        bool is_id = false;
        unsigned long mem_kib = 0, passes = 0;
        if (!tenancy::copy_hash(hash_text, hash) ||
            !tenancy::argon2_params(hash, is_id, mem_kib, passes) || !is_id)
            return (Datum)0;
        needs = crypto_pwhash_str_needs_rehash(hash, tenancy::kOpsLimit, tenancy::kMemLimit) != 0;
        return (Datum)0;
    });
    PG_RETURN_BOOL(needs);
}

// Spends the time of one verify_password and returns false: a login for an
// unknown account then costs as much as a wrong password for a known one.
PG_FUNCTION_INFO_V1(tenancy_dummy_password_check);
Datum tenancy_dummy_password_check(PG_FUNCTION_ARGS) {
    text *password_text = PG_GETARG_TEXT_PP(0);
    tenancy::guard([&]() -> Datum {
        tenancy::PasswordArg password(password_text, PG_GETARG_DATUM(0));
        tenancy::ensure_sodium();
        tenancy::verify_against(tenancy::kDummyHash, password.data(),
                                std::min(password.size(), tenancy::kMaxPasswordBytes));
        return (Datum)0;
    });
    PG_RETURN_BOOL(false);
}

// nbytes random bytes as URL-safe base64 without padding (API keys, session
// tokens, invitation tokens).
PG_FUNCTION_INFO_V1(tenancy_random_token);
Datum tenancy_random_token(PG_FUNCTION_ARGS) {
    int32 nbytes = PG_GETARG_INT32(0);
    return tenancy::guard([&]() -> Datum {
        if (nbytes < 16 || nbytes > 64)
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE,
                                    "random_token size must be between 16 and 64 bytes",
                                    "got " + std::to_string(nbytes));
        tenancy::ensure_sodium();
        unsigned char bytes[64];
        char encoded[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
        randombytes_buf(bytes, (size_t)nbytes);
        sodium_bin2base64(encoded, sizeof encoded, bytes, (size_t)nbytes,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sodium_memzero(bytes, sizeof bytes);
        Datum d = tenancy::text_datum(encoded, std::strlen(encoded));
        sodium_memzero(encoded, sizeof encoded);
        return d;
    });
}

}  // extern "C"

namespace tenancy {
namespace {
void sha256_of(const char *data, size_t len, unsigned char (&digest)[kSha256Size]) {
    if (!sha256(data, len, digest))
        throw SqlError(ERRCODE_INTERNAL_ERROR, "SHA-256 failed");
}
}  // namespace
}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_sha256_hex);
Datum tenancy_sha256_hex(PG_FUNCTION_ARGS) {
    text *data = PG_GETARG_TEXT_PP(0);
    return tenancy::guard([&]() -> Datum {
        unsigned char digest[32];
        tenancy::sha256_of(VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), digest);
        static const char hex[] = "0123456789abcdef";
        char out[64];
        for (int i = 0; i < 32; ++i) {
            out[2 * i] = hex[digest[i] >> 4];
            out[2 * i + 1] = hex[digest[i] & 15];
        }
        return tenancy::text_datum(out, sizeof out);
    });
}

PG_FUNCTION_INFO_V1(tenancy_sha256);
Datum tenancy_sha256(PG_FUNCTION_ARGS) {
    bytea *data = PG_GETARG_BYTEA_PP(0);
    return tenancy::guard([&]() -> Datum {
        unsigned char digest[32];
        tenancy::sha256_of(VARDATA_ANY(data), VARSIZE_ANY_EXHDR(data), digest);
        bytea *result = (bytea *)tenancy::pg_call([&] { return palloc(VARHDRSZ + 32); });
        SET_VARSIZE(result, VARHDRSZ + 32);
        std::memcpy(VARDATA(result), digest, 32);
        return PointerGetDatum(result);
    });
}

}  // extern "C"
