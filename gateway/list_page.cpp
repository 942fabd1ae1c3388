#include "list_page.hpp"

#include "digest.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <mutex>

namespace tenancy::gateway {
namespace {

constexpr size_t kMacBytes = 16;  // truncated HMAC-SHA256: 128 bits
constexpr size_t kMaxCursor = 1024;

std::mutex g_key_mutex;
std::vector<uint8_t> g_key;

std::vector<uint8_t> cursor_key() {
    std::lock_guard<std::mutex> lock(g_key_mutex);
    if (g_key.empty()) {
        g_key.resize(32);
        if (RAND_bytes(g_key.data(), static_cast<int>(g_key.size())) != 1)
            throw std::runtime_error("no random bytes for the cursor key");
    }
    return g_key;
}

const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url(const std::string &in) {
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int k = 18; k >= 0; k -= 6)
            out.push_back(kAlphabet[(v >> k) & 63]);
    }
    if (i < in.size()) {
        uint32_t v = uint8_t(in[i]) << 16;
        if (i + 1 < in.size())
            v |= uint8_t(in[i + 1]) << 8;
        out.push_back(kAlphabet[(v >> 18) & 63]);
        out.push_back(kAlphabet[(v >> 12) & 63]);
        if (i + 1 < in.size())
            out.push_back(kAlphabet[(v >> 6) & 63]);
    }
    return out;
}

std::optional<std::string> unbase64url(const std::string &in) {
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        const char *p = std::strchr(kAlphabet, c);
        if (c == '\0' || p == nullptr)
            return std::nullopt;
        acc = (acc << 6) | static_cast<uint32_t>(p - kAlphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    // Canonical only: leftover bits must be zero, or two spellings of one
    // cursor (differing in its last character) would both be accepted.
    if (bits >= 6 || (acc & ((1u << bits) - 1)) != 0)
        return std::nullopt;
    return out;
}

std::string mac(const std::string &scope, const std::string &payload) {
    std::vector<uint8_t> key = cursor_key();
    // Length-prefixed so no scope/payload split can be shifted.
    std::string message = std::to_string(scope.size()) + ":" + scope + payload;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char *>(message.data()), message.size(), digest,
              &len))
        throw std::runtime_error("HMAC failed");
    return std::string(reinterpret_cast<char *>(digest), kMacBytes);
}

Problem invalid_cursor() {
    Problem p;
    p.status = 422;
    p.code = "invalid_cursor";
    p.title = "Invalid cursor";
    p.detail = "cursor must be the next_cursor of an earlier page of this list, for this caller";
    p.field = "cursor";
    return p;
}

}  // namespace

void set_cursor_key(const std::vector<uint8_t> &key) {
    std::lock_guard<std::mutex> lock(g_key_mutex);
    g_key = key;
}

std::string cursor_scope(const Route &route, const ApiCall &call, const std::string &credential) {
    std::string scope = route.method + " " + route.path;
    for (const auto &[name, value] : call.path)
        scope += "\n" + name + "=" + value;
    scope += "\ncredential=" + sha256_hex(credential);
    scope += "\naccount=" + call.req.get_header_value("Tenancy-Account");
    return scope;
}

std::string seal_cursor(const std::string &scope, const nlohmann::json &position) {
    std::string payload = position.dump();
    return base64url(payload) + "." + base64url(mac(scope, payload));
}

std::optional<nlohmann::json> open_cursor(const std::string &scope, const std::string &cursor) {
    if (cursor.size() > kMaxCursor)
        return std::nullopt;
    size_t dot = cursor.find('.');
    if (dot == std::string::npos)
        return std::nullopt;
    auto payload = unbase64url(cursor.substr(0, dot));
    auto tag = unbase64url(cursor.substr(dot + 1));
    if (!payload || !tag || tag->size() != kMacBytes)
        return std::nullopt;
    std::string expected = mac(scope, *payload);
    if (CRYPTO_memcmp(expected.data(), tag->data(), kMacBytes) != 0)
        return std::nullopt;
    nlohmann::json position = nlohmann::json::parse(*payload, nullptr, false);
    if (position.is_discarded())
        return std::nullopt;
    return position;
}

std::vector<Field> page_query_fields() {
    return {Field("limit", FieldType::integer).describe("rows per page, 1 to 500 (default 50)"),
            Field("cursor").max(kMaxCursor).describe("next_cursor of the previous page")};
}

PageRequest page_request(const ApiCall &call) {
    PageRequest page;
    if (auto l = call.query("limit")) {
        long long v = std::stoll(*l);  // validated as an integer of at most 18 digits
        if (v < 1 || v > kMaxPageLimit) {
            Problem p = problem_for_status(
                422, "limit must be an integer from 1 to " + std::to_string(kMaxPageLimit));
            p.code = "invalid_field";
            p.field = "limit";
            throw ApiError{p};
        }
        page.limit = static_cast<int>(v);
    }
    if (auto c = call.query("cursor")) {
        page.after = open_cursor(call.cursor_scope, *c);
        if (!page.after)
            throw ApiError{invalid_cursor()};
    }
    return page;
}

ApiAnswer page_answer(const ApiCall &call, nlohmann::json rows, const PageRequest &page,
                      const std::function<nlohmann::json(const nlohmann::json &row)> &position_of) {
    nlohmann::json next = nullptr;
    if (rows.is_array() && rows.size() > static_cast<size_t>(page.limit)) {
        rows.erase(rows.begin() + page.limit, rows.end());
        next = seal_cursor(call.cursor_scope, position_of(rows.back()));
    }
    if (!rows.is_array())
        rows = nlohmann::json::array();
    return ApiAnswer{200, {{"data", rows}, {"next_cursor", next}}};
}

}  // namespace tenancy::gateway
