// libFuzzer target for the log scrubber (extension/src/log_scrub.cpp). Checks,
// in both modes: no crash, UB or out-of-bounds access on any bytes; measuring
// and writing agree, and a short buffer is never overrun; bytes before
// first_scrub_offset() are kept and nothing changes when it says so; the
// output holds no credential secret (scrubbing it again for tokens changes
// nothing) and, with literals on and no credential in the input, scrubbing it
// again changes nothing at all (every literal left is a placeholder).
#include "log_scrub.cpp"

#include <cstdlib>
#include <memory>
#include <string>

namespace {

std::string scrub(const std::string &in, bool literals) {
    size_t n = tenancy::scrub_log_text(in.data(), in.size(), literals, nullptr, 0);
    std::string out(n, '\0');
    if (tenancy::scrub_log_text(in.data(), in.size(), literals, out.data(), n) != n)
        std::abort();
    return out;
}

void check(const std::string &in, bool literals) {
    std::string out = scrub(in, literals);
    // A buffer of half the size, heap-allocated exactly so ASan sees an overrun.
    size_t half = out.size() / 2;
    std::unique_ptr<char[]> part(new char[half ? half : 1]);
    if (tenancy::scrub_log_text(in.data(), in.size(), literals, part.get(), half) != out.size() ||
        std::memcmp(part.get(), out.data(), half) != 0)
        std::abort();
    size_t first = tenancy::first_scrub_offset(in.data(), in.size(), literals);
    if (first > in.size() || out.compare(0, first, in, 0, first) != 0)
        std::abort();
    if (first == in.size() && out != in)
        std::abort();
    if (scrub(out, false) != out)
        std::abort();
    // A scrubbed credential may lex differently ("$tns_-$" has no dollar quote,
    // "$tns_REDACTED$" opens one), so literal idempotence is checked on inputs
    // without credentials; those are checked just above.
    if (literals && scrub(in, false) == in && scrub(out, true) != out)
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::string in(reinterpret_cast<const char *>(data), size);
    tenancy::names_secret_function(in.data(), in.size());
    check(in, false);
    check(in, true);
    return 0;
}
