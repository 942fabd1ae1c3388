// Base32 (RFC 4648) encoding and the lenient decoding TOTP secrets need.
#include "base32.hpp"

namespace tenancy {

namespace {
const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int base32_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a';
    if (c >= '2' && c <= '7')
        return c - '2' + 26;
    return -1;
}
}  // namespace

std::string base32_encode(const uint8_t *data, size_t len, bool pad) {
    std::string out;
    out.reserve((len + 4) / 5 * 8);
    uint32_t buffer = 0;
    int bits = 0;
    for (size_t i = 0; i < len; ++i) {
        buffer = (buffer << 8) | data[i];
        bits += 8;
        while (bits >= 5) {
            out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
            bits -= 5;
        }
    }
    if (bits > 0)
        out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
    if (pad)
        while (out.size() % 8 != 0)
            out.push_back('=');
    return out;
}

bool base32_decode(std::string_view text, std::vector<uint8_t> &out, std::string &error) {
    out.clear();
    uint32_t buffer = 0;
    int bits = 0;
    size_t symbols = 0;  // data characters seen
    size_t padding = 0;  // '=' seen; after the first, only '=' and spaces may follow
    for (size_t i = 0; i < text.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (c == ' ')
            continue;
        if (c == '=') {
            ++padding;
            continue;
        }
        int v = base32_value(c);
        if (v < 0) {
            error = "invalid character in base32 secret at position " + std::to_string(i + 1);
            return false;
        }
        if (padding > 0) {
            error = "base32 padding '=' is allowed only at the end";
            return false;
        }
        ++symbols;
        buffer = ((buffer << 5) | static_cast<uint32_t>(v)) & 0xFFFFu;
        bits += 5;
        if (bits >= 8) {
            out.push_back(static_cast<uint8_t>(buffer >> (bits - 8)));
            bits -= 8;
        }
    }
    if (symbols == 0) {
        error = "base32 secret is empty";
        return false;
    }
    // A last group of 1, 3 or 6 characters cannot come from whole bytes.
    size_t tail = symbols % 8;
    if (tail == 1 || tail == 3 || tail == 6) {
        error = "base32 secret has an impossible length";
        return false;
    }
    if (padding > 0 && (symbols + padding) % 8 != 0) {
        error = "base32 padding does not complete the last group";
        return false;
    }
    return true;
}

}  // namespace tenancy
