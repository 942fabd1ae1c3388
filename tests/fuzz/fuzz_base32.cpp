// libFuzzer target for the base32 decoder and encoder (TOTP secrets).
// Checks: no crash or UB on any input; a failure has a message; a success
// has at least one byte and re-encodes (padded or not) to the same bytes.
#include "base32.cpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    std::vector<uint8_t> decoded;
    std::string error;
    if (!tenancy::base32_decode(in, decoded, error)) {
        if (error.empty())
            std::abort();
        return 0;
    }
    if (decoded.empty())
        std::abort();  // success means at least one whole byte
    for (bool pad : {false, true}) {
        std::string encoded = tenancy::base32_encode(decoded.data(), decoded.size(), pad);
        std::vector<uint8_t> again;
        if (!tenancy::base32_decode(encoded, again, error) || again != decoded)
            std::abort();
    }
    return 0;
}
