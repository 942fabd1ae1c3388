#include "replica_router.hpp"

#include "log.hpp"

#include <cstdlib>

namespace tenancy::gateway {
namespace {
constexpr auto kSampleInterval = std::chrono::milliseconds(200);
constexpr auto kProbeTimeout = std::chrono::milliseconds(1000);
std::atomic<ReplicaRouter *> g_router{nullptr};
}  // namespace

ReplicaRouter *replica_router() {
    return g_router.load();
}
void set_replica_router(ReplicaRouter *router) {
    g_router.store(router);
}

std::optional<uint64_t> parse_lsn(const std::string &text) {
    size_t slash = text.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size() || slash > 8 ||
        text.size() - slash - 1 > 8)
        return std::nullopt;
    for (size_t i = 0; i < text.size(); ++i)
        if (i != slash && !std::isxdigit(static_cast<unsigned char>(text[i])))
            return std::nullopt;
    uint64_t hi = std::strtoull(text.substr(0, slash).c_str(), nullptr, 16);
    uint64_t lo = std::strtoull(text.substr(slash + 1).c_str(), nullptr, 16);
    return (hi << 32) | lo;
}

ReplicaRouter::ReplicaRouter(DbPool &primary, DbPool &replica, std::chrono::milliseconds max_lag)
    : primary_(primary), replica_(replica), max_lag_(max_lag), monitor_([this] { run(); }) {}

ReplicaRouter::~ReplicaRouter() {
    stop();
}

void ReplicaRouter::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (monitor_.joinable())
        monitor_.join();
}

void ReplicaRouter::set_aside() {
    usable_ = false;  // until the next sample finds it well
}

void ReplicaRouter::sample() {
    const auto now = std::chrono::steady_clock::now();
    try {
        DbPool::Lease lease = primary_.acquire(kProbeTimeout);
        Result r = exec_params(lease.get(), "SELECT pg_catalog.pg_current_wal_lsn()::text", {},
                               kProbeTimeout);
        if (auto lsn = parse_lsn(r.value(0, 0).value_or("")))
            if (samples_.empty() || samples_.back().first != *lsn)
                samples_.emplace_back(*lsn, now);
    } catch (const DbError &) {
        // Primary away: the standby's staleness cannot be judged from here;
        // keep the samples we have (they only make the lag look larger).
    }
    std::optional<uint64_t> replayed;
    bool in_recovery = false;
    try {
        DbPool::Lease lease = replica_.acquire(kProbeTimeout);
        Result r = exec_params(
            lease.get(),
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text", {},
            kProbeTimeout);
        in_recovery = r.value(0, 0) == std::optional<std::string>("t");
        replayed = parse_lsn(r.value(0, 1).value_or(""));
        reachable_ = true;
    } catch (const DbError &) {
        reachable_ = false;
    }
    // The oldest primary position the standby has not replayed: its age is
    // the lag (within one sample interval); none left means caught up.
    int64_t lag = -1;
    if (replayed) {
        while (!samples_.empty() && samples_.front().first <= *replayed)
            samples_.pop_front();
        lag = samples_.empty() ? 0
                               : std::chrono::duration_cast<std::chrono::milliseconds>(
                                     now - samples_.front().second)
                                     .count();
    }
    while (samples_.size() > 10000)  // a standby that never catches up
        samples_.pop_front();
    lag_ms_ = lag;
    const bool ok = reachable_ && in_recovery && lag >= 0 && lag <= max_lag_.count();
    usable_ = ok;
    if (ok != was_usable_)
        log_event(ok ? "info" : "warn",
                  ok ? "GETs go to the standby" : "GETs go to the primary: standby set aside",
                  {{"reachable", reachable_.load()},
                   {"in_recovery", in_recovery},
                   {"lag_ms", lag},
                   {"max_lag_ms", max_lag_.count()}});
    was_usable_ = ok;
}

void ReplicaRouter::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
        lock.unlock();
        sample();
        lock.lock();
        wake_.wait_for(lock, kSampleInterval, [this] { return stopping_; });
    }
}

}  // namespace tenancy::gateway
