#include "db_tx.hpp"

namespace tenancy::gateway {

struct TxAccess {
    static Tx make(PGconn *conn, std::chrono::milliseconds timeout) { return Tx(conn, timeout); }
    static Result finish(Tx &tx) { return tx.run(nullptr, nullptr, true); }
};

void Tx::queue(std::string sql, Params params, int stage, Result *sink) {
    queued_.push_back({{std::move(sql), std::move(params)}, stage, sink});
}

size_t Tx::defer(std::string sql, Params params, int stage) {
    deferred_.push_back({{std::move(sql), std::move(params)}, stage, nullptr});
    return deferred_.size() - 1;
}

bool Tx::rebind_deferred(size_t index, Params params) {
    if (finished_ || index >= deferred_.size())
        return false;
    deferred_[index].statement.params = std::move(params);
    return true;
}

Result Tx::exec(const std::string &sql, const Params &params) {
    return run(&sql, &params, false);
}

Result Tx::exec_last(const std::string &sql, const Params &params) {
    return run(&sql, &params, !hold_commit_);
}

// Sends queued + (sql) + (deferred + COMMIT when last) as one pipeline.
Result Tx::run(const std::string *sql, const Params *params, bool last) {
    if (finished_)
        throw std::logic_error("statement after the transaction's last one");
    std::vector<Pending> batch;
    batch.swap(queued_);
    Result own;
    if (sql)
        batch.push_back({{*sql, *params}, kStageStatement, &own});
    Result commit;
    if (last) {
        for (auto &d : deferred_)
            batch.push_back(std::move(d));
        deferred_.clear();
        batch.push_back({{"COMMIT", {}}, kStageCommit, &commit});
        finished_ = true;
    }
    if (batch.empty())
        return own;
    std::vector<Statement> statements;
    statements.reserve(batch.size());
    for (const auto &p : batch)
        statements.push_back(p.statement);
    std::vector<Result> results;
    auto fill_sinks = [&] {
        for (size_t i = 0; i < batch.size() && i < results.size(); ++i)
            if (batch[i].sink)
                *batch[i].sink = results[i];
    };
    try {
        exec_pipeline(conn_, statements, timeout_, results);
    } catch (const PipelineError &e) {
        fill_sinks();  // the statements before the failure did run
        failed_stage_ = batch.empty() ? kStageStatement : batch[e.index()].stage;
        throw;
    }
    fill_sinks();
    // The server rolls back a transaction an error had aborted and answers
    // COMMIT with ROLLBACK; nothing here swallowed one, but say so if it did.
    if (last && commit.command_tag() != "COMMIT") {
        failed_stage_ = kStageCommit;
        throw DbError("25P02", "the transaction was aborted and rolled back");
    }
    return own;
}

namespace {

TxError to_error(const DbError &e, int stage) {
    return TxError{e.sqlstate(), e.what(), e.detail(), e.hint(), stage};
}

void rollback(DbPool::Lease &lease, std::chrono::milliseconds timeout) {
    if (PQstatus(lease.get()) != CONNECTION_OK) {
        lease.discard();
        return;
    }
    if (PQtransactionStatus(lease.get()) == PQTRANS_IDLE)
        return;
    try {
        exec_params(lease.get(), "ROLLBACK", {}, timeout);
    } catch (const DbError &) {
        lease.discard();  // state unknown: never reuse it
    }
}

}  // namespace

TxOutcome run_transaction(DbPool &pool, const std::function<void(Tx &)> &body, TxOptions options) {
    TxOutcome out;
    const auto timeout = pool.client_statement_timeout();
    for (int attempt = 0; attempt < 2; ++attempt) {
        DbPool::Lease lease;
        try {
            lease = pool.acquire();
        } catch (const DbError &e) {
            out.error = to_error(e, kStageBegin);
            return out;
        }
        Tx tx = TxAccess::make(lease.get(), timeout);
        tx.queue(options.read_only ? "BEGIN READ ONLY" : "BEGIN", {}, kStageBegin);
        try {
            body(tx);
            if (!tx.finished())
                TxAccess::finish(tx);
        } catch (const DbError &e) {
            out.error = to_error(e, tx.failed_stage());
            const bool lost = PQstatus(lease.get()) != CONNECTION_OK;
            if (lost && (tx.failed_stage() == kStageCommit || tx.finished()) && !options.read_only)
                out.error.sqlstate = kSqlstateOutcomeUnknown;  // the COMMIT may have landed
            rollback(lease, timeout);
            if (lost && options.read_only && attempt == 0)
                continue;  // wrote nothing: a fresh connection may try again
            return out;
        } catch (...) {
            rollback(lease, timeout);
            throw;
        }
        out.committed = true;
        out.error = TxError{};
        return out;
    }
    return out;
}

}  // namespace tenancy::gateway
