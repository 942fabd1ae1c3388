// Authenticated encryption of stored secrets (libsodium crypto_secretbox:
// XSalsa20-Poly1305): the gateway's stored Idempotency-Key responses.
//
// Plain C style (no C++ object in these frames), like credentials.cpp: the
// only PostgreSQL calls that can ereport are palloc and the argument fetches.
extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/builtins.h"
}

#include <sodium.h>

namespace {

// The key argument: exactly crypto_secretbox_KEYBYTES.
const unsigned char *key_arg(bytea *key) {
    if (VARSIZE_ANY_EXHDR(key) != crypto_secretbox_KEYBYTES)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("a secretbox key is %d bytes", (int)crypto_secretbox_KEYBYTES)));
    return reinterpret_cast<const unsigned char *>(VARDATA_ANY(key));
}

// Messages up to 64 MB: far above any response the gateway stores, far below
// the 1 GB varlena limit.
constexpr size_t kMaxMessage = size_t(64) << 20;

}  // namespace

extern "C" {

// _secretbox_seal(key, message) -> nonce || MAC || ciphertext, with a fresh
// random nonce per call.
PG_FUNCTION_INFO_V1(tenancy_secretbox_seal);
Datum tenancy_secretbox_seal(PG_FUNCTION_ARGS) {
    const unsigned char *key = key_arg(PG_GETARG_BYTEA_PP(0));
    text *message = PG_GETARG_TEXT_PP(1);
    size_t len = VARSIZE_ANY_EXHDR(message);
    if (len > kMaxMessage)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("a sealed message is at most 64 MB")));
    size_t out_len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + len;
    bytea *out = static_cast<bytea *>(palloc(VARHDRSZ + out_len));
    SET_VARSIZE(out, VARHDRSZ + out_len);
    unsigned char *nonce = reinterpret_cast<unsigned char *>(VARDATA(out));
    randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
    if (crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                              reinterpret_cast<const unsigned char *>(VARDATA_ANY(message)), len,
                              nonce, key) != 0)
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("crypto_secretbox failed")));
    PG_RETURN_BYTEA_P(out);
}

// _secretbox_open(key, sealed) -> the message; 22023 for a box that is not
// one (too short), XX001 when it does not open with this key (altered, or
// sealed under another key).
PG_FUNCTION_INFO_V1(tenancy_secretbox_open);
Datum tenancy_secretbox_open(PG_FUNCTION_ARGS) {
    const unsigned char *key = key_arg(PG_GETARG_BYTEA_PP(0));
    bytea *sealed = PG_GETARG_BYTEA_PP(1);
    size_t len = VARSIZE_ANY_EXHDR(sealed);
    if (len < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("sealed value is too short to be a secretbox")));
    const unsigned char *nonce = reinterpret_cast<const unsigned char *>(VARDATA_ANY(sealed));
    size_t box_len = len - crypto_secretbox_NONCEBYTES;
    size_t msg_len = box_len - crypto_secretbox_MACBYTES;
    text *out = static_cast<text *>(palloc(VARHDRSZ + msg_len));
    SET_VARSIZE(out, VARHDRSZ + msg_len);
    if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char *>(VARDATA(out)),
                                   nonce + crypto_secretbox_NONCEBYTES, box_len, nonce, key) != 0)
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
                        errmsg("sealed value does not open with this key")));
    PG_RETURN_TEXT_P(out);
}
}
