#include "read_log.hpp"

#include "db_pool.hpp"
#include "log.hpp"

namespace tenancy::gateway {
namespace {
std::atomic<ReadLog *> g_read_log{nullptr};
}  // namespace

ReadLog *read_log() {
    return g_read_log.load();
}
void set_read_log(ReadLog *log) {
    g_read_log.store(log);
}

ReadLog::ReadLog(DbPool &pool, ReadLogOptions options)
    : pool_(pool), options_(options), writer_([this] { run(); }) {}

ReadLog::~ReadLog() {
    stop();
}

void ReadLog::push(nlohmann::json record) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || queue_.size() >= options_.capacity) {
        ++dropped_;
        return;
    }
    queue_.push_back(std::move(record));
    if (queue_.size() >= options_.batch_size)
        wake_.notify_one();
}

size_t ReadLog::depth() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return queue_.size();
}

void ReadLog::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (stopping_ && !writer_.joinable())
            return;
        stopping_ = true;
    }
    wake_.notify_one();
    if (writer_.joinable())
        writer_.join();
}

// ok, or whether the batch is worth retrying (the database is away) or not
// (it refused the records: retrying would refuse them again).
ReadLog::Written ReadLog::write(const std::deque<nlohmann::json> &batch) {
    nlohmann::json records = nlohmann::json::array();
    for (const auto &r : batch)
        records.push_back(r);
    try {
        DbPool::Lease lease = pool_.acquire();
        exec_params(lease.get(), "SELECT tenancy.record_api_reads($1::jsonb)",
                    {records.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)},
                    pool_.client_statement_timeout());
        return Written::ok;
    } catch (const DbError &e) {
        const std::string &s = e.sqlstate();
        const bool transient = s.rfind("08", 0) == 0 || s.rfind("53", 0) == 0 ||
                               s.rfind("57", 0) == 0 || s == "40001" || s == "40P01";
        log_event(transient ? "warn" : "error",
                  transient ? "GET records not written to the audit log yet"
                            : "the database refused GET records; they are dropped",
                  {{"records", batch.size()}, {"sqlstate", s}, {"error", e.what()}});
        return transient ? Written::retry : Written::rejected;
    }
}

void ReadLog::run() {
    std::unique_lock<std::mutex> lock(mutex_);
    auto backoff = options_.flush_interval;
    for (;;) {
        wake_.wait_for(lock, backoff,
                       [this] { return stopping_ || queue_.size() >= options_.batch_size; });
        if (queue_.empty()) {
            if (stopping_)
                return;
            continue;
        }
        std::deque<nlohmann::json> batch;
        while (!queue_.empty() && batch.size() < options_.batch_size) {
            batch.push_back(std::move(queue_.front()));
            queue_.pop_front();
        }
        lock.unlock();
        Written outcome = write(batch);
        lock.lock();
        if (outcome == Written::ok) {
            written_ += batch.size();
            backoff = options_.flush_interval;
            continue;
        }
        ++failed_batches_;
        if (stopping_ || outcome == Written::rejected) {
            dropped_ += batch.size();
            if (outcome == Written::rejected)
                continue;
            dropped_ += queue_.size();  // the database is gone at shutdown
            queue_.clear();
            return;
        }
        // Put the batch back (oldest first) unless that overflows, and retry
        // later: the database may be restarting.
        while (!batch.empty() && queue_.size() < options_.capacity) {
            queue_.push_front(std::move(batch.back()));
            batch.pop_back();
        }
        dropped_ += batch.size();
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
}

}  // namespace tenancy::gateway
