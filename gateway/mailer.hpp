// The gateway's mailer: a thread that delivers tenancy.outbox over SMTP
// (37_outbox_delivery.sql). Each round it claims a batch of due rows under a
// lease (FOR UPDATE SKIP LOCKED, so several gateways share one outbox),
// sends each message, and marks it sent, to retry (4xx, refused, timeout:
// exponential backoff with jitter, computed in SQL) or failed (5xx). On
// only when --smtp-url is set.
//
// Its counters (MailerStats) are for /metrics. When gateway/metrics.hpp is
// there, register them in main.cpp, e.g.
//   Metrics::global().sampled_counter("tenancy_mail_sent_total", "...", [m] { return
//   m->stats().sent.load(); });
// (retried, failed likewise) and .gauge("tenancy_mail_queue_depth", ...),
// .gauge("tenancy_mail_oldest_unsent_age_seconds", ...).
#pragma once

#include "db_pool.hpp"
#include "mail_message.hpp"
#include "smtp_client.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tenancy::gateway {

struct MailerOptions {
    SmtpOptions smtp;
    std::string public_base_url;
    // Names this mailer in the outbox's leases: host:port, unique while the
    // gateway holds its port, the same after a restart (which then takes
    // back at once the rows it had claimed).
    std::string claimer;
    int batch = 10;
    std::chrono::milliseconds poll{1000};
    std::chrono::milliseconds retry_base{30000};
    std::chrono::milliseconds retry_cap{3600000};
};

struct MailerStats {
    std::atomic<long long> sent{0};              // accepted by the server and marked
    std::atomic<long long> retried{0};           // temporary failures (each schedules a retry)
    std::atomic<long long> failed{0};            // permanent failures
    std::atomic<long long> queue_depth{0};       // rows waiting, as of the last round
    std::atomic<double> oldest_unsent_age_s{0};  // age of the oldest of them
};

class Mailer {
  public:
    Mailer(DbPool &pool, MailerOptions options);
    ~Mailer();  // stops and joins
    Mailer(const Mailer &) = delete;
    Mailer &operator=(const Mailer &) = delete;

    // Ends the loop after the message in progress; idempotent. Rows claimed
    // but not sent stay leased to this claimer (a restart takes them back;
    // another gateway does when the lease ends).
    void stop();

    const MailerStats &stats() const { return stats_; }

    // The lease a claim takes: long enough for a whole batch at the SMTP
    // timeout, plus a margin.
    std::chrono::seconds lease() const;

  private:
    struct Mark {
        long long id;
        SmtpOutcome outcome;
    };
    void loop();
    // One round; true when the batch was full (more may be due at once).
    bool round();
    void sample_queue(PGconn *conn);
    // Records an outcome in the database; false when the database failed
    // (the mark is kept and tried again before the next claim).
    bool mark(const Mark &m);
    bool stopping();

    DbPool &pool_;
    MailerOptions options_;
    MailerStats stats_;
    std::vector<Mark> pending_;  // outcomes not yet recorded (database trouble)
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace tenancy::gateway
