// Which database serves a GET: a hot standby when one is configured,
// reachable and close enough behind the primary; the primary otherwise.
//
// A monitor thread samples the primary's WAL position (pg_current_wal_lsn)
// and the standby's replay position (pg_last_wal_replay_lsn) every 200 ms.
// The standby's lag is the age of the oldest primary sample it has not yet
// replayed (0 when it has replayed the newest): a bound on how stale its
// answers are, in time, that holds whether the primary is busy or idle. While
// the lag exceeds --replica-max-lag-ms, or the standby cannot be reached or is
// not in recovery, GETs go to the primary. A GET that fails on the standby
// for a connection-level reason (or a recovery conflict) is retried once on
// the primary and the standby is set aside until the monitor sees it well.
//
// What a client sees: a GET may miss a change committed up to the bound
// before it (revocations included: a revoked key still reads for at most
// that long); writes always go to the primary.
#pragma once

#include "db_pool.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace tenancy::gateway {

class ReplicaRouter {
  public:
    ReplicaRouter(DbPool &primary, DbPool &replica, std::chrono::milliseconds max_lag);
    ~ReplicaRouter();
    ReplicaRouter(const ReplicaRouter &) = delete;
    ReplicaRouter &operator=(const ReplicaRouter &) = delete;

    // Whether GETs may go to the standby now.
    bool usable() const { return usable_.load(); }
    DbPool &replica() { return replica_; }
    // A GET failed on the standby for a reason the primary may not have:
    // send GETs to the primary until the monitor finds the standby well.
    void set_aside();
    void stop();

    // For /metrics and logs.
    double lag_seconds() const {
        int64_t ms = lag_ms_.load();
        return ms < 0 ? -1.0 : ms / 1000.0;
    }
    bool reachable() const { return reachable_.load(); }
    uint64_t served() const { return served_.load(); }
    uint64_t fell_back() const { return fell_back_.load(); }
    void count_served() { ++served_; }
    void count_fallback() { ++fell_back_; }

  private:
    void run();
    void sample();

    DbPool &primary_;
    DbPool &replica_;
    const std::chrono::milliseconds max_lag_;
    std::atomic<bool> usable_{false}, reachable_{false};
    std::atomic<int64_t> lag_ms_{-1};
    std::atomic<uint64_t> served_{0}, fell_back_{0};
    std::deque<std::pair<uint64_t, std::chrono::steady_clock::time_point>> samples_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool was_usable_ = false;
    std::thread monitor_;
};

// The process's router (nullptr without --replica-url).
ReplicaRouter *replica_router();
void set_replica_router(ReplicaRouter *router);

// "16/B374D848" -> 0x16B374D848; nullopt for anything else.
std::optional<uint64_t> parse_lsn(const std::string &text);

}  // namespace tenancy::gateway
