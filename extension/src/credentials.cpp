// Credential secrets (API keys, session tokens): 256-bit random secrets from
// libsodium, stored as SHA-256 (fast on purpose: the secret has full entropy,
// so a memory-hard hash would only cost throughput), compared in constant time.
#include "boundary.hpp"

extern "C" {
#include "utils/builtins.h"
}

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sodium.h>

#include <string>

namespace {

constexpr size_t kSecretBytes = 32;

std::string new_secret() {
    unsigned char raw[kSecretBytes];
    randombytes_buf(raw, sizeof raw);
    char out[sodium_base64_ENCODED_LEN(kSecretBytes, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    sodium_bin2base64(out, sizeof out, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    std::string s(out);
    sodium_memzero(out, sizeof out);
    return s;
}

void sha256(const char *data, size_t len, unsigned char digest[SHA256_DIGEST_LENGTH]) {
    SHA256(reinterpret_cast<const unsigned char *>(data), len, digest);
}

}  // namespace

extern "C" {

// _new_secret(): 32 random bytes, URL-safe base64 without padding (43 chars).
PG_FUNCTION_INFO_V1(tenancy_new_secret);
Datum tenancy_new_secret(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum { return tenancy::text_datum(new_secret()); });
}

// _secret_hash(secret): SHA-256 of the secret's bytes.
PG_FUNCTION_INFO_V1(tenancy_secret_hash);
Datum tenancy_secret_hash(PG_FUNCTION_ARGS) {
    text *secret = PG_GETARG_TEXT_PP(0);
    bytea *out = (bytea *)palloc(VARHDRSZ + SHA256_DIGEST_LENGTH);
    SET_VARSIZE(out, VARHDRSZ + SHA256_DIGEST_LENGTH);
    sha256(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), reinterpret_cast<unsigned char *>(VARDATA(out)));
    PG_RETURN_BYTEA_P(out);
}

// _secret_equal(secret, stored_hash): constant-time comparison of
// SHA-256(secret) with the stored hash; a malformed hash never matches.
PG_FUNCTION_INFO_V1(tenancy_secret_equal);
Datum tenancy_secret_equal(PG_FUNCTION_ARGS) {
    text *secret = PG_GETARG_TEXT_PP(0);
    bytea *stored = PG_GETARG_BYTEA_PP(1);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    sha256(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), digest);
    bool equal = VARSIZE_ANY_EXHDR(stored) == SHA256_DIGEST_LENGTH &&
                 CRYPTO_memcmp(digest, VARDATA_ANY(stored), SHA256_DIGEST_LENGTH) == 0;
    sodium_memzero(digest, sizeof digest);
    PG_RETURN_BOOL(equal);
}
}
