// A bounded pool of libpq connections.
//
// - At most max_size connections exist; they are opened lazily.
// - acquire() waits up to acquire_timeout for a free one, then fails with
//   SQLSTATE 53300 (too_many_connections).
// - A connection that broke (database restarted, network cut) or was handed
//   back inside a transaction is closed on release; a broken one also closes
//   every idle connection (after a restart they are all dead). The next
//   acquire opens a fresh one, so the gateway recovers after the database
//   comes back without failing a request per stale connection.
// - Every statement is bounded: the server enforces statement_timeout, and
//   the client gives up (and drops the connection) shortly after, in case the
//   server or the network hangs.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tenancy::gateway {

// SQLSTATEs the gateway reports for failures that happen on the client side.
inline constexpr const char *kSqlstateConnectionFailure = "08006";
inline constexpr const char *kSqlstateCannotConnect = "08001";
inline constexpr const char *kSqlstateOutcomeUnknown = "08007";
inline constexpr const char *kSqlstatePoolExhausted = "53300";
inline constexpr const char *kSqlstateQueryCanceled = "57014";
inline constexpr const char *kSqlstatePoolClosed = "57P01";

// A failed database operation: the server's SQLSTATE and message, or one of
// the client-side SQLSTATEs above.
class DbError : public std::runtime_error {
  public:
    DbError(std::string sqlstate, const std::string &message, std::string detail = "",
            std::string hint = "")
        : std::runtime_error(message),
          sqlstate_(std::move(sqlstate)),
          detail_(std::move(detail)),
          hint_(std::move(hint)) {}
    const std::string &sqlstate() const { return sqlstate_; }
    const std::string &detail() const { return detail_; }
    const std::string &hint() const { return hint_; }

  private:
    std::string sqlstate_, detail_, hint_;
};

// The rows of one successful statement (text format).
class Result {
  public:
    Result() = default;
    explicit Result(PGresult *res) : res_(res, &PQclear) {}
    int rows() const { return res_ ? PQntuples(res_.get()) : 0; }
    int columns() const { return res_ ? PQnfields(res_.get()) : 0; }
    std::string column_name(int col) const { return PQfname(res_.get(), col); }
    bool is_null(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }
    // NULL reads as nullopt. Out-of-range row/col is a programming error and throws.
    std::optional<std::string> value(int row, int col) const;
    // Rows changed by INSERT/UPDATE/DELETE, 0 otherwise.
    long affected_rows() const;
    // The command tag, e.g. "INSERT 0 1" or "COMMIT".
    std::string command_tag() const { return res_ ? PQcmdStatus(res_.get()) : ""; }

  private:
    std::shared_ptr<PGresult> res_;
};

using Params = std::vector<std::optional<std::string>>;

// One statement with text parameters ($1, $2, ...; nullopt is NULL), bounded
// by timeout. Throws DbError; a connection-level failure leaves conn in a
// state PQstatus reports as bad (or it was already bad), so the pool drops it.
Result exec_params(PGconn *conn, const std::string &sql, const Params &params,
                   std::chrono::milliseconds timeout);

// One statement of a pipeline.
struct Statement {
    std::string sql;
    Params params;
};

// A failure inside a pipeline: which statement (0-based) failed first.
class PipelineError : public DbError {
  public:
    PipelineError(const DbError &cause, size_t index) : DbError(cause), index_(index) {}
    size_t index() const { return index_; }

  private:
    size_t index_;
};

// Sends every statement at once in libpq pipeline mode, followed by one Sync,
// and reads the results: one round trip for all of them. The server runs them
// in order and skips the rest after the first failure. Fills results with one
// Result per statement (those before a failure too); throws PipelineError
// naming the first statement that failed (a failure to send or a lost
// connection names the first statement without a result). Bounded by timeout
// like exec_params.
void exec_pipeline(PGconn *conn, const std::vector<Statement> &statements,
                   std::chrono::milliseconds timeout, std::vector<Result> &results);

// Whether exec_pipeline prepares each distinct statement once per
// connection (default on; off behind a transaction pooler).
void set_prepared_statements(bool on);
// Closes conn and forgets what was prepared on it.
void finish_connection(PGconn *conn);

struct PoolOptions {
    std::string conninfo;
    int max_size = 8;
    std::chrono::milliseconds acquire_timeout{2000};
    std::chrono::milliseconds statement_timeout{5000};
    // libpq's connect_timeout is in whole seconds and at least 2.
    int connect_timeout_s = 2;
    std::string application_name = "tenancy-gateway";
};

class DbPool {
  public:
    explicit DbPool(PoolOptions options);
    ~DbPool();
    DbPool(const DbPool &) = delete;
    DbPool &operator=(const DbPool &) = delete;

    class Lease {
      public:
        Lease() = default;
        Lease(Lease &&other) noexcept;
        Lease &operator=(Lease &&other) noexcept;
        ~Lease();
        PGconn *get() const { return conn_; }
        explicit operator bool() const { return conn_ != nullptr; }
        // Close this connection instead of reusing it.
        void discard() { discard_ = true; }
        // Give the connection back now.
        void release();

      private:
        friend class DbPool;
        Lease(DbPool *pool, PGconn *conn) : pool_(pool), conn_(conn) {}
        DbPool *pool_ = nullptr;
        PGconn *conn_ = nullptr;
        bool discard_ = false;
    };

    // Throws DbError: 53300 when none is free in time, 08001 when a new
    // connection cannot be opened, 57P01 after close().
    Lease acquire();
    Lease acquire(std::chrono::milliseconds timeout);

    // Statement bound the client enforces: the server's statement_timeout
    // plus a grace period for the server's own error to arrive.
    std::chrono::milliseconds client_statement_timeout() const;

    // Closes idle connections now and leased ones when they come back;
    // acquire() fails afterwards. Idempotent.
    void close();

    struct Stats {
        int open = 0;
        int idle = 0;
        int in_use = 0;
        int max = 0;
        int waiting = 0;  // acquire() calls waiting for a connection to come back
    };
    Stats stats() const;
    const PoolOptions &options() const { return options_; }

  private:
    PGconn *connect();
    void give_back(PGconn *conn, bool discard);

    PoolOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable available_;
    std::vector<PGconn *> idle_;
    int open_ = 0;     // idle + leased + being opened
    int waiting_ = 0;  // acquire() calls blocked on available_
    bool closed_ = false;
};

// Readiness: a pooled connection answers SELECT 1 within timeout. A stale
// connection (the database restarted since it was opened) is dropped and the
// check retried once on a fresh one. On failure, error says why.
bool ping(DbPool &pool, std::chrono::milliseconds timeout, std::string &error);

}  // namespace tenancy::gateway
