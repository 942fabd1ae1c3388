// The gateway's audit sealer: a thread that calls tenancy.audit_seal() every
// interval, for databases where the extension's background sealer does not
// run (tenancy not in shared_preload_libraries, or the database not in
// tenancy.audit_databases). Off unless --audit-seal-interval-ms is set.
// Concurrent sealers take turns in the database (audit_seal holds a lock), so
// several gateways, or a gateway and the background worker, may all run one.
#pragma once

#include "db_pool.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace tenancy::gateway {

class AuditSealer {
  public:
    AuditSealer(DbPool &pool, std::chrono::milliseconds interval);
    ~AuditSealer();  // stops and joins
    AuditSealer(const AuditSealer &) = delete;
    AuditSealer &operator=(const AuditSealer &) = delete;

    // Ends the loop after the round in progress; idempotent.
    void stop();

  private:
    void loop();

    DbPool &pool_;
    std::chrono::milliseconds interval_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace tenancy::gateway
