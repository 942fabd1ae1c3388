// The audit record of GET requests, written in batches.
//
// A GET runs READ ONLY (possibly on a standby), so it cannot write its own
// api.request entry. It hands the record to this queue instead; one writer
// thread sends the queue to the primary with tenancy.record_api_reads() once
// per flush interval (100 ms) or as soon as 500 records wait, whichever comes
// first. Bounds: a crash loses at most what was queued and not yet written
// (at most one interval's GETs, or the queue's capacity if the database is
// unreachable for longer); a full queue drops new records. Both counts are
// in /metrics (tenancy_gateway_read_log_dropped_total).
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

namespace tenancy::gateway {

class DbPool;

struct ReadLogOptions {
    std::chrono::milliseconds flush_interval{100};
    size_t batch_size = 500;
    size_t capacity = 100000;
};

class ReadLog {
  public:
    ReadLog(DbPool &pool, ReadLogOptions options);
    ~ReadLog();
    ReadLog(const ReadLog &) = delete;
    ReadLog &operator=(const ReadLog &) = delete;

    // One record: {at, account, principal, route, method, status, request_id}.
    // Never blocks; a full queue drops the record (counted).
    void push(nlohmann::json record);
    // Writes what is queued, then stops the writer (on shutdown).
    void stop();

    size_t depth() const;
    uint64_t dropped() const { return dropped_; }
    uint64_t written() const { return written_; }
    uint64_t failed_batches() const { return failed_batches_; }

  private:
    enum class Written { ok, retry, rejected };
    void run();
    Written write(const std::deque<nlohmann::json> &batch);

    DbPool &pool_;
    const ReadLogOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<nlohmann::json> queue_;
    bool stopping_ = false;
    std::atomic<uint64_t> dropped_{0}, written_{0}, failed_batches_{0};
    std::thread writer_;
};

// The process's read log (nullptr until main starts one): GET handlers push
// to it.
ReadLog *read_log();
void set_read_log(ReadLog *log);

}  // namespace tenancy::gateway
