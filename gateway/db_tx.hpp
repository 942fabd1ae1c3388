// One request = one transaction, sent in as few round trips as possible.
//
// Statements are queued and go out together in libpq pipeline mode: BEGIN
// and the context statements wait for the handler's first statement, and the
// handler's last statement (exec_last) carries the deferred ones and COMMIT
// with it. A request whose handler runs one statement is one round trip.
// On any database error the transaction is rolled back and the error's
// SQLSTATE, message and stage come back to the caller (problem_for_sqlstate
// maps them to HTTP).
#pragma once

#include "db_pool.hpp"

#include <functional>
#include <string>

namespace tenancy::gateway {

// Stage numbers are the caller's; a statement's stage names it when it fails.
inline constexpr int kStageBegin = -1;
inline constexpr int kStageCommit = -2;
inline constexpr int kStageStatement = 0;

// Handed to the transaction body; statements run on the transaction's
// connection. exec and exec_last throw DbError, which run_transaction catches.
class Tx {
  public:
    // Queues a statement to go out with the next exec/exec_last; when sink is
    // given, its result is stored there once it ran.
    void queue(std::string sql, Params params, int stage, Result *sink = nullptr);
    // Queues a statement to run after the handler's last one, before COMMIT;
    // returns its index for rebind_deferred.
    size_t defer(std::string sql, Params params, int stage);
    // Changes a deferred statement's parameters while it has not been sent
    // (false once it has: exec_last sent it).
    bool rebind_deferred(size_t index, Params params);

    // Runs everything queued now (their sinks are filled).
    void flush() { run(nullptr, nullptr, false); }
    // Runs everything queued, then this statement; returns its result.
    Result exec(const std::string &sql, const Params &params = {});
    // Like exec, and sends the deferred statements and COMMIT in the same
    // round trip: the body's last statement. Nothing may run after it.
    Result exec_last(const std::string &sql, const Params &params = {});

    // The stage of the statement that failed (kStageStatement for exec's own).
    int failed_stage() const { return failed_stage_; }
    // exec_last then leaves the transaction open (the caller has more to
    // run after the handler: an idempotent request stores its answer).
    void hold_commit() { hold_commit_ = true; }
    bool finished() const { return finished_; }

  private:
    friend struct TxAccess;
    Tx(PGconn *conn, std::chrono::milliseconds timeout) : conn_(conn), timeout_(timeout) {}
    struct Pending {
        Statement statement;
        int stage;
        Result *sink;
    };
    Result run(const std::string *sql, const Params *params, bool last);

    PGconn *conn_;
    std::chrono::milliseconds timeout_;
    std::vector<Pending> queued_;
    std::vector<Pending> deferred_;
    int failed_stage_ = kStageStatement;
    bool finished_ = false;
    bool hold_commit_ = false;
};

struct TxError {
    std::string sqlstate;
    std::string message;
    std::string detail;
    std::string hint;
    int stage = kStageStatement;  // which statement failed (Tx stages)
};

struct TxOutcome {
    bool committed = false;
    TxError error;  // set when !committed
    explicit operator bool() const { return committed; }
};

struct TxOptions {
    // BEGIN READ ONLY: the transaction can write nothing (a GET).
    bool read_only = false;
};

// Runs body inside BEGIN ... COMMIT on a pooled connection. A DbError from
// body (or from BEGIN/COMMIT, or from acquiring a connection) rolls back and
// is returned; any other exception rolls back and propagates. A read-only
// transaction that fails for a lost connection is retried once on a fresh one
// (it wrote nothing); a writing one is not, since its COMMIT may have landed.
TxOutcome run_transaction(DbPool &pool, const std::function<void(Tx &)> &body,
                          TxOptions options = {});

}  // namespace tenancy::gateway
