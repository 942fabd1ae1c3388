// libFuzzer target for PHI redaction. Checks: no crash, UB or out-of-bounds
// read on any bytes; valid UTF-8 in gives valid UTF-8 out; text without
// digits or '@' comes back unchanged.
#include "phi_redaction.cpp"

#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string_view in(reinterpret_cast<const char *>(data), size);
    std::string out = tenancy::redact_phi(in);
    if (tenancy::is_valid_utf8(in) && !tenancy::is_valid_utf8(out))
        std::abort();
    bool has_trigger = false;
    for (char c : in)
        has_trigger = has_trigger || c == '@' || (c >= '0' && c <= '9');
    if (!has_trigger && out != in)
        std::abort();
    return 0;
}
