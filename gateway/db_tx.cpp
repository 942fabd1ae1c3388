#include "db_tx.hpp"

namespace tenancy::gateway {

struct TxAccess {
    static Tx make(PGconn *conn, std::chrono::milliseconds timeout) { return Tx(conn, timeout); }
};

Result Tx::exec(const std::string &sql, const Params &params) {
    return exec_params(conn_, sql, params, timeout_);
}

namespace {

TxError to_error(const DbError &e) {
    return TxError{e.sqlstate(), e.what(), e.detail(), e.hint()};
}

void rollback(DbPool::Lease &lease, std::chrono::milliseconds timeout) {
    if (PQstatus(lease.get()) != CONNECTION_OK) {
        lease.discard();
        return;
    }
    try {
        exec_params(lease.get(), "ROLLBACK", {}, timeout);
    } catch (const DbError &) {
        lease.discard();  // state unknown: never reuse it
    }
}

}  // namespace

TxOutcome run_transaction(DbPool &pool, const std::function<void(Tx &)> &body) {
    TxOutcome out;
    const auto timeout = pool.client_statement_timeout();
    for (int attempt = 0; attempt < 2; ++attempt) {
        DbPool::Lease lease;
        try {
            lease = pool.acquire();
        } catch (const DbError &e) {
            out.error = to_error(e);
            return out;
        }
        try {
            exec_params(lease.get(), "BEGIN", {}, timeout);
        } catch (const DbError &e) {
            out.error = to_error(e);
            if (PQstatus(lease.get()) != CONNECTION_OK) {
                // Stale connection (e.g. the database restarted): nothing ran
                // yet, so a fresh connection may safely try again.
                lease.discard();
                continue;
            }
            rollback(lease, timeout);
            return out;
        }
        Tx tx = TxAccess::make(lease.get(), timeout);
        try {
            body(tx);
        } catch (const DbError &e) {
            out.error = to_error(e);
            rollback(lease, timeout);
            return out;
        } catch (...) {
            rollback(lease, timeout);
            throw;
        }
        try {
            Result commit = exec_params(lease.get(), "COMMIT", {}, timeout);
            if (commit.command_tag() != "COMMIT") {
                // The body swallowed an error: the server rolled back.
                out.error = TxError{"25P02", "the transaction was aborted and rolled back", "", ""};
                return out;
            }
        } catch (const DbError &e) {
            out.error = to_error(e);
            if (PQstatus(lease.get()) != CONNECTION_OK) {
                // The COMMIT may or may not have reached the server.
                out.error.sqlstate = kSqlstateOutcomeUnknown;
                lease.discard();
            } else {
                rollback(lease, timeout);
            }
            return out;
        }
        out.committed = true;
        out.error = TxError{};
        return out;
    }
    return out;
}

}  // namespace tenancy::gateway
