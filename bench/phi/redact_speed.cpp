// redact_phi throughput of the pure C++ core (extension/src/phi_redaction.cpp),
// without PostgreSQL: MB of transcript text per second, on a corpus of
// realistic lines (a quarter of them with identifiers) and on plain prose.
#include "phi_redaction.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    const std::vector<std::string> with_phi = {
        "Sure, you can reach me at +1 (415) 555-0132 after five, or email jane.doe@example.com.",
        "The card is 4111 1111 1111 1111, expiry 12/27; my callback number is 020 7946 0958.",
    };
    const std::vector<std::string> plain = {
        "Thank you for calling the clinic, how can I help you today with your appointment?",
        "I would like to move my appointment from Tuesday morning to Thursday afternoon please.",
        "Of course, let me check the calendar for the doctor's availability this week for you.",
        "Thursday at three thirty works, and please remind me to bring my insurance papers.",
        "Great, you are booked; we will send a reminder the day before your visit to the clinic.",
        "Is there anything else I can help you with today, such as a prescription refill?",
    };
    size_t target = (argc > 1 ? std::stoul(argv[1]) : 64) << 20;  // MB of text per corpus
    for (int mixed = 1; mixed >= 0; mixed--) {
        std::vector<std::string> corpus;
        size_t bytes = 0;
        for (size_t i = 0; bytes < target; i++) {
            const std::string &s =
                (mixed && i % 4 == 0) ? with_phi[i / 4 % with_phi.size()] : plain[i % plain.size()];
            corpus.push_back(s);
            bytes += s.size();
        }
        double best = 1e9;
        size_t out = 0;
        for (int round = 0; round < 5; round++) {
            auto t0 = std::chrono::steady_clock::now();
            for (const auto &s : corpus)
                out += tenancy::redact_phi(s).size();
            double secs =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (secs < best)
                best = secs;
        }
        std::printf("%s: %.1f MB in %zu lines, best of 5: %.3f s = %.1f MB/s (%zu)\n",
                    mixed ? "mixed (1 line in 4 with identifiers)" : "plain prose",
                    bytes / 1048576.0, corpus.size(), best, bytes / 1048576.0 / best, out % 7);
    }
}
