// One request = one transaction: BEGIN, the caller's statements, COMMIT.
// On any database error the transaction is rolled back and the error's
// SQLSTATE and message come back to the caller (see problem_for_sqlstate for
// the HTTP mapping).
#pragma once

#include "db_pool.hpp"

#include <functional>
#include <string>

namespace tenancy::gateway {

// Handed to the transaction body; statements run on the transaction's
// connection. exec throws DbError, which run_transaction catches.
class Tx {
  public:
    Result exec(const std::string &sql, const Params &params = {});

  private:
    friend struct TxAccess;
    Tx(PGconn *conn, std::chrono::milliseconds timeout) : conn_(conn), timeout_(timeout) {}
    PGconn *conn_;
    std::chrono::milliseconds timeout_;
};

struct TxError {
    std::string sqlstate;
    std::string message;
    std::string detail;
    std::string hint;
};

struct TxOutcome {
    bool committed = false;
    TxError error;  // set when !committed
    explicit operator bool() const { return committed; }
};

// Runs body inside BEGIN ... COMMIT on a pooled connection. A DbError from
// body (or from BEGIN/COMMIT, or from acquiring a connection) rolls back and
// is returned; any other exception rolls back and propagates. When the pooled
// connection turns out to be stale at BEGIN (nothing has run yet), the
// transaction is retried once on a fresh connection.
TxOutcome run_transaction(DbPool &pool, const std::function<void(Tx &)> &body);

}  // namespace tenancy::gateway
