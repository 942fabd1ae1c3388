// SHA-256 and HMAC-SHA-256 with the algorithms looked up once per backend.
//
// OpenSSL 3's one-shot SHA256() and EVP_Digest(EVP_sha256()) fetch the
// algorithm from the provider on every call, under a lock: ~2,700
// instructions a call measured with callgrind in the audit sealer, which
// hashes every entry. Here the algorithm is fetched once and one digest
// context is reused (a backend is single-threaded). The one-shot HMAC()
// fetches its algorithms on every call as well: ~5,000 of the ~25,000
// instructions a call costs under callgrind (whose CPU lacks the SHA
// extensions, so there the hashing itself weighs more than on the real CPU).
// The sealer MACs every chain head it moves, the context check every signed
// context.
#include "sha256.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

namespace tenancy {
namespace {

EVP_MD *sha256_md = nullptr;
EVP_MD_CTX *sha256_ctx = nullptr;
// HMAC set to SHA-256 and holding no key: each call works on a copy, which
// is freed (and so cleansed) before it returns; no key outlives its call.
EVP_MAC_CTX *hmac_template = nullptr;

EVP_MAC_CTX *make_hmac_template() noexcept {
    EVP_MAC *mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (mac == nullptr)
        return nullptr;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    EVP_MAC_free(mac);  // the context keeps its own reference
    if (ctx == nullptr)
        return nullptr;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(ctx, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        return nullptr;
    }
    return ctx;
}

}  // namespace

bool sha256(const void *data, std::size_t len, unsigned char *out) noexcept {
    if (sha256_md == nullptr && (sha256_md = EVP_MD_fetch(nullptr, "SHA256", nullptr)) == nullptr)
        return false;
    if (sha256_ctx == nullptr && (sha256_ctx = EVP_MD_CTX_new()) == nullptr)
        return false;
    unsigned int out_len = 0;
    return EVP_DigestInit_ex2(sha256_ctx, sha256_md, nullptr) == 1 &&
           EVP_DigestUpdate(sha256_ctx, data, len) == 1 &&
           EVP_DigestFinal_ex(sha256_ctx, out, &out_len) == 1 && out_len == kSha256Size;
}

bool hmac_sha256(const void *key, std::size_t key_len, const void *data, std::size_t len,
                 unsigned char *out) noexcept {
    if (hmac_template == nullptr && (hmac_template = make_hmac_template()) == nullptr)
        return false;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(hmac_template);
    if (ctx == nullptr)
        return false;
    // A zero-length key must still be a valid pointer for EVP_MAC_init.
    static const unsigned char no_key = 0;
    std::size_t out_len = 0;
    bool ok = EVP_MAC_init(ctx, key_len > 0 ? static_cast<const unsigned char *>(key) : &no_key,
                           key_len, nullptr) == 1 &&
              EVP_MAC_update(ctx, static_cast<const unsigned char *>(data), len) == 1 &&
              EVP_MAC_final(ctx, out, &out_len, kSha256Size) == 1 && out_len == kSha256Size;
    EVP_MAC_CTX_free(ctx);
    return ok;
}

}  // namespace tenancy
