// TOTP (RFC 6238) over HOTP (RFC 4226) with HMAC-SHA-1, a 30 s step and the
// Unix epoch as T0: the parameters every authenticator app uses by default.
#include "boundary.hpp"
#include "base32.hpp"

extern "C" {
#include "datatype/timestamp.h"
#include "utils/timestamp.h"
}

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include <cstring>
#include <string>
#include <vector>

namespace tenancy {
namespace {

constexpr int64 kStepSeconds = 30;
constexpr int kMaxWindow = 10;    // +-5 minutes; more would make guessing easy
constexpr int kSecretBytes = 20;  // RFC 4226 recommends 160 bits

// The decoded secret; wiped when it goes out of scope.
struct Secret {
    std::vector<uint8_t> bytes;
    ~Secret() {
        if (!bytes.empty())
            sodium_memzero(bytes.data(), bytes.size());
    }
};

void decode_secret(text *secret_text, Secret &secret) {
    std::string error;
    std::string_view in(VARDATA_ANY(secret_text), VARSIZE_ANY_EXHDR(secret_text));
    if (!base32_decode(in, secret.bytes, error)) {
        if (!secret.bytes.empty())
            sodium_memzero(secret.bytes.data(), secret.bytes.size());
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "invalid TOTP secret: " + error);
    }
}

void check_digits(int32 digits) {
    if (digits < 6 || digits > 8)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "TOTP digits must be 6, 7 or 8",
                       "got " + std::to_string(digits));
}

// RFC 4226 section 5.3: HMAC-SHA-1 of the big-endian counter, dynamic
// truncation, modulo 10^digits.
uint32_t hotp(const std::vector<uint8_t> &key, uint64_t counter, int digits) {
    uint8_t message[8];
    for (int i = 7; i >= 0; --i) {
        message[i] = static_cast<uint8_t>(counter & 0xFF);
        counter >>= 8;
    }
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()), message, sizeof message, mac,
             &mac_len) == nullptr ||
        mac_len != 20)
        throw SqlError(ERRCODE_INTERNAL_ERROR, "HMAC-SHA-1 failed");
    int offset = mac[19] & 0x0F;
    uint32_t binary = (static_cast<uint32_t>(mac[offset] & 0x7F) << 24) |
                      (static_cast<uint32_t>(mac[offset + 1]) << 16) |
                      (static_cast<uint32_t>(mac[offset + 2]) << 8) |
                      static_cast<uint32_t>(mac[offset + 3]);
    sodium_memzero(mac, sizeof mac);
    uint32_t modulus = 1;
    for (int i = 0; i < digits; ++i)
        modulus *= 10;
    return binary % modulus;
}

std::string format_code(uint32_t code, int digits) {
    std::string s = std::to_string(code);
    if (static_cast<int>(s.size()) < digits)
        s.insert(0, digits - s.size(), '0');
    return s;
}

// The RFC 6238 time step of a timestamptz: floor((unix seconds) / 30).
int64 time_step(TimestampTz at) {
    if (TIMESTAMP_NOT_FINITE(at))
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "TOTP time must be finite");
    // TimestampTz counts microseconds from 2000-01-01; TOTP counts from 1970.
    int64 micros = at + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
    if (micros < 0)
        throw SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "TOTP time is before 1970");
    return micros / USECS_PER_SEC / kStepSeconds;
}

}  // namespace
}  // namespace tenancy

extern "C" {

PG_FUNCTION_INFO_V1(tenancy_totp);
Datum tenancy_totp(PG_FUNCTION_ARGS) {
    text *secret_text = PG_GETARG_TEXT_PP(0);
    TimestampTz at = PG_GETARG_TIMESTAMPTZ(1);
    int32 digits = PG_GETARG_INT32(2);
    return tenancy::guard([&]() -> Datum {
        tenancy::check_digits(digits);
        int64 step = tenancy::time_step(at);
        tenancy::Secret secret;
        tenancy::decode_secret(secret_text, secret);
        uint32_t code = tenancy::hotp(secret.bytes, static_cast<uint64_t>(step), digits);
        return tenancy::text_datum(tenancy::format_code(code, digits));
    });
}

// Returns the matching time step within +-window of at, or NULL. Every step of
// the window is computed and compared with CRYPTO_memcmp, so the time taken
// does not tell which step (or how many digits) matched.
PG_FUNCTION_INFO_V1(tenancy_totp_verify);
Datum tenancy_totp_verify(PG_FUNCTION_ARGS) {
    text *secret_text = PG_GETARG_TEXT_PP(0);
    text *code_text = PG_GETARG_TEXT_PP(1);
    TimestampTz at = PG_GETARG_TIMESTAMPTZ(2);
    int32 window = PG_GETARG_INT32(3);
    int32 digits = PG_GETARG_INT32(4);
    bool matched = false;
    int64 matched_step = 0;
    Datum result = tenancy::guard([&]() -> Datum {
        tenancy::check_digits(digits);
        if (window < 0 || window > tenancy::kMaxWindow)
            throw tenancy::SqlError(
                ERRCODE_INVALID_PARAMETER_VALUE,
                "TOTP window must be between 0 and " + std::to_string(tenancy::kMaxWindow));
        int64 now_step = tenancy::time_step(at);
        tenancy::Secret secret;
        tenancy::decode_secret(secret_text, secret);

        // A code that is not exactly `digits` ASCII digits cannot match: NULL.
        size_t code_len = VARSIZE_ANY_EXHDR(code_text);
        const char *code = VARDATA_ANY(code_text);
        bool well_formed = code_len == static_cast<size_t>(digits);
        for (size_t i = 0; well_formed && i < code_len; ++i)
            well_formed = code[i] >= '0' && code[i] <= '9';
        if (!well_formed)
            return (Datum)0;

        // Try the current step first, then -1, +1, -2, +2...: on the (rare)
        // collision of two steps' codes the nearest one is reported.
        for (int distance = 0; distance <= window; ++distance) {
            for (int sign = 0; sign < (distance == 0 ? 1 : 2); ++sign) {
                int64 step = now_step + (sign == 0 ? -distance : distance);
                if (step < 0)
                    continue;
                std::string expected = tenancy::format_code(
                    tenancy::hotp(secret.bytes, static_cast<uint64_t>(step), digits), digits);
                bool equal = CRYPTO_memcmp(expected.data(), code, code_len) == 0;
                sodium_memzero(&expected[0], expected.size());
                if (equal && !matched) {
                    matched = true;
                    matched_step = step;
                }
            }
        }
        return (Datum)0;
    });
    if (!matched)
        PG_RETURN_NULL();
    (void)result;
    PG_RETURN_INT64(matched_step);
}

PG_FUNCTION_INFO_V1(tenancy_new_totp_secret);
Datum tenancy_new_totp_secret(PG_FUNCTION_ARGS) {
    return tenancy::guard([&]() -> Datum {
        if (sodium_init() < 0)
            throw tenancy::SqlError(ERRCODE_INTERNAL_ERROR, "libsodium could not be initialised");
        uint8_t bytes[tenancy::kSecretBytes];
        randombytes_buf(bytes, sizeof bytes);
        std::string encoded = tenancy::base32_encode(bytes, sizeof bytes, false);
        sodium_memzero(bytes, sizeof bytes);
        Datum d = tenancy::text_datum(encoded);
        sodium_memzero(&encoded[0], encoded.size());
        return d;
    });
}

}  // extern "C"

namespace tenancy {
namespace {
// RFC 3986 percent-encoding of everything but the unreserved characters, as
// the Key Uri Format asks for the label and the issuer parameter.
std::string percent_encode(std::string_view in) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : in) {
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}
}  // namespace
}  // namespace tenancy

extern "C" {

// otpauth://totp/<issuer>:<label>?secret=...&issuer=...: what authenticator
// apps read from a QR code. The secret is validated and normalised (upper
// case, no spaces, no padding).
PG_FUNCTION_INFO_V1(tenancy_otpauth_uri);
Datum tenancy_otpauth_uri(PG_FUNCTION_ARGS) {
    text *secret_text = PG_GETARG_TEXT_PP(0);
    text *label_text = PG_GETARG_TEXT_PP(1);
    text *issuer_text = PG_GETARG_TEXT_PP(2);
    return tenancy::guard([&]() -> Datum {
        std::string_view label(VARDATA_ANY(label_text), VARSIZE_ANY_EXHDR(label_text));
        std::string_view issuer(VARDATA_ANY(issuer_text), VARSIZE_ANY_EXHDR(issuer_text));
        if (label.empty())
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "account label is empty");
        if (issuer.empty())
            throw tenancy::SqlError(ERRCODE_INVALID_PARAMETER_VALUE, "issuer is empty");
        tenancy::Secret secret;
        tenancy::decode_secret(secret_text, secret);
        std::string encoded_secret =
            tenancy::base32_encode(secret.bytes.data(), secret.bytes.size(), false);
        std::string enc_issuer = tenancy::percent_encode(issuer);
        std::string uri = "otpauth://totp/" + enc_issuer + ":" + tenancy::percent_encode(label) +
                          "?secret=" + encoded_secret + "&issuer=" + enc_issuer +
                          "&algorithm=SHA1&digits=6&period=30";
        sodium_memzero(&encoded_secret[0], encoded_secret.size());
        Datum d = tenancy::text_datum(uri);
        sodium_memzero(&uri[0], uri.size());
        return d;
    });
}

}  // extern "C"
