// Credential secrets (API keys, session tokens; made by
// tenancy.random_token(32)) are stored as SHA-256 (fast on purpose: the secret has full entropy,
// so a memory-hard hash would only cost throughput), compared in constant time.
#include "boundary.hpp"
#include "id_format.hpp"
#include "sha256.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
}

#include <openssl/crypto.h>
#include <sodium.h>

#include <string>

namespace {

// Plain C caller (no C++ object in this frame): may ereport.
void sha256_or_error(const char *data, size_t len, unsigned char *digest) {
    if (!tenancy::sha256(data, len, digest))
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("SHA-256 failed")));
}

}  // namespace

extern "C" {

// _secret_hash(secret): SHA-256 of the secret's bytes.
PG_FUNCTION_INFO_V1(tenancy_secret_hash);
Datum tenancy_secret_hash(PG_FUNCTION_ARGS) {
    text *secret = PG_GETARG_TEXT_PP(0);
    bytea *out = (bytea *)palloc(VARHDRSZ + tenancy::kSha256Size);
    SET_VARSIZE(out, VARHDRSZ + tenancy::kSha256Size);
    sha256_or_error(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret),
                    reinterpret_cast<unsigned char *>(VARDATA(out)));
    PG_RETURN_BYTEA_P(out);
}

// _secret_equal(secret, stored_hash): constant-time comparison of
// SHA-256(secret) with the stored hash; a malformed hash never matches.
PG_FUNCTION_INFO_V1(tenancy_secret_equal);
Datum tenancy_secret_equal(PG_FUNCTION_ARGS) {
    text *secret = PG_GETARG_TEXT_PP(0);
    bytea *stored = PG_GETARG_BYTEA_PP(1);
    unsigned char digest[tenancy::kSha256Size];
    sha256_or_error(VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret), digest);
    bool equal = VARSIZE_ANY_EXHDR(stored) == tenancy::kSha256Size &&
                 CRYPTO_memcmp(digest, VARDATA_ANY(stored), tenancy::kSha256Size) == 0;
    sodium_memzero(digest, sizeof digest);
    PG_RETURN_BOOL(equal);
}
}

namespace {

using tenancy::IdPiece;

// Plain C: builds the text[] (may ereport: called through pg_call).
Datum pieces_array(const IdPiece *pieces, int n) {
    Datum elems[8];
    for (int i = 0; i < n; i++)
        elems[i] = PointerGetDatum(cstring_to_text_with_len(pieces[i].data, pieces[i].len));
    return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

}  // namespace

extern "C" {

// _id_parts(value, prefix, ids, secret_len) → text[] of the ids (and the
// secret), or NULL when value is not of that form. The hot path of every
// credential and public id lookup, so it is a hand-written scanner.
PG_FUNCTION_INFO_V1(tenancy_id_parts);
Datum tenancy_id_parts(PG_FUNCTION_ARGS) {
    text *value = PG_GETARG_TEXT_PP(0);
    text *prefix = PG_GETARG_TEXT_PP(1);
    int32 ids = PG_GETARG_INT32(2);
    int32 secret_len = PG_GETARG_INT32(3);
    if (ids < 1 || ids > 4 || secret_len < 0 || secret_len > 256)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("_id_parts: ids 1..4, secret_len 0..256")));
    IdPiece pieces[5];
    int n = tenancy::split_id(VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), VARDATA_ANY(prefix),
                              VARSIZE_ANY_EXHDR(prefix), ids, secret_len, pieces);
    if (n == 0)
        PG_RETURN_NULL();
    return pieces_array(pieces, n);
}
}
