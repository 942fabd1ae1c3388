// See audit_sealer.hpp.
#include "audit_sealer.hpp"

#include "log.hpp"

namespace tenancy::gateway {
namespace {

// A failing database is reported once a minute, not every round.
constexpr auto kErrorLogEvery = std::chrono::seconds(60);

}  // namespace

AuditSealer::AuditSealer(DbPool &pool, std::chrono::milliseconds interval)
    : pool_(pool), interval_(interval), thread_([this] { loop(); }) {}

AuditSealer::~AuditSealer() {
    stop();
}

void AuditSealer::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id())
        thread_.join();
}

void AuditSealer::loop() {
    auto next = std::chrono::steady_clock::now();
    auto last_error_log = std::chrono::steady_clock::time_point{};
    long long sealed_total = 0;
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(mutex_);
            if (wake_.wait_until(lock, next, [this] { return stopping_; }))
                break;
        }
        // Rounds start one interval apart, the round's own time included.
        next = std::chrono::steady_clock::now() + interval_;
        try {
            DbPool::Lease lease = pool_.acquire();
            Result r = exec_params(lease.get(), "SELECT tenancy.audit_seal()", {},
                                   pool_.client_statement_timeout());
            long long sealed = std::stoll(r.value(0, 0).value_or("0"));
            sealed_total += sealed;
        } catch (const DbError &e) {
            auto now = std::chrono::steady_clock::now();
            if (now - last_error_log >= kErrorLogEvery) {
                last_error_log = now;
                log_event("warn", "audit sealer round failed",
                          {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
            }
        } catch (const std::exception &e) {
            log_event("error", "audit sealer round failed", {{"error", e.what()}});
        }
    }
    log_event("info", "audit sealer stopped", {{"sealed", sealed_total}});
}

}  // namespace tenancy::gateway
