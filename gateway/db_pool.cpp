#include "db_pool.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <unordered_map>
#include <cstdlib>

namespace tenancy::gateway {

namespace {

using Clock = std::chrono::steady_clock;

// libpq messages span lines ("...failed: ...\n\tIs the server running...");
// log lines and stderr messages want one.
std::string trimmed(const char *s) {
    std::string out;
    for (const char *p = s ? s : ""; *p; ++p) {
        if (*p == '\n' || *p == '\t' || *p == '\r') {
            if (!out.empty() && out.back() != ' ')
                out.push_back(' ');
        } else {
            out.push_back(*p);
        }
    }
    while (!out.empty() && out.back() == ' ')
        out.pop_back();
    return out;
}

std::string field(const PGresult *res, int code) {
    const char *v = PQresultErrorField(res, code);
    return v ? v : "";
}

DbError connection_error(PGconn *conn, const char *what) {
    return DbError(kSqlstateConnectionFailure,
                   std::string(what) + ": " + trimmed(PQerrorMessage(conn)));
}

// Waits until the socket is readable or the deadline passes.
// Returns false on timeout.
bool wait_readable(PGconn *conn, Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            return false;
        pollfd pfd{PQsocket(conn), POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
        if (rc > 0)
            return true;
        if (rc == 0)
            return false;
        if (errno != EINTR)
            return true;  // let PQconsumeInput report the error
    }
}

// An idle connection has nothing to read unless the server ended it (a
// restart or pg_terminate_backend sends a FATAL message and closes; the
// gateway LISTENs to nothing). Checked before a connection is handed out, so
// a request never sends its statements into a dead connection, where it could
// not know their outcome.
bool still_open(PGconn *conn) {
    pollfd pfd{PQsocket(conn), POLLIN, 0};
    return ::poll(&pfd, 1, 0) == 0;
}

}  // namespace

std::optional<std::string> Result::value(int row, int col) const {
    if (!res_ || row < 0 || row >= rows() || col < 0 || col >= columns())
        throw std::out_of_range("result row/column out of range");
    if (PQgetisnull(res_.get(), row, col))
        return std::nullopt;
    return std::string(PQgetvalue(res_.get(), row, col),
                       static_cast<size_t>(PQgetlength(res_.get(), row, col)));
}

long Result::affected_rows() const {
    if (!res_)
        return 0;
    const char *n = PQcmdTuples(res_.get());
    return (n && *n) ? std::strtol(n, nullptr, 10) : 0;
}

Result exec_params(PGconn *conn, const std::string &sql, const Params &params,
                   std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    if (PQstatus(conn) != CONNECTION_OK)
        throw connection_error(conn, "connection lost");

    std::vector<const char *> values;
    values.reserve(params.size());
    for (const auto &p : params)
        values.push_back(p ? p->c_str() : nullptr);
    if (!PQsendQueryParams(conn, sql.c_str(), static_cast<int>(values.size()), nullptr,
                           values.data(), nullptr, nullptr, 0))
        throw connection_error(conn, "could not send statement");

    // Blocking mode: the send above flushed the whole query. Each result is
    // waited for with the deadline, so a hung server cannot block us.
    auto wait_not_busy = [&] {
        while (PQisBusy(conn)) {
            if (!wait_readable(conn, deadline)) {
                // The server's own statement_timeout should have fired by
                // now: the server or the network hangs. Break the connection
                // so the pool drops it, rather than wait on it.
                ::shutdown(PQsocket(conn), SHUT_RDWR);
                PQconsumeInput(conn);
                throw DbError(kSqlstateQueryCanceled, "database did not answer within " +
                                                          std::to_string(timeout.count()) + " ms");
            }
            if (!PQconsumeInput(conn))
                throw connection_error(conn, "connection lost");
        }
    };

    PGresult *last = nullptr;
    std::optional<DbError> error;
    for (;;) {
        try {
            wait_not_busy();
        } catch (...) {
            if (last)
                PQclear(last);
            throw;
        }
        PGresult *res = PQgetResult(conn);
        if (res == nullptr)
            break;
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
            if (!error) {
                std::string state = field(res, PG_DIAG_SQLSTATE);
                std::string msg = field(res, PG_DIAG_MESSAGE_PRIMARY);
                if (state.empty()) {
                    // libpq's own failure (the connection broke mid-statement).
                    state = kSqlstateConnectionFailure;
                    msg = trimmed(PQresultErrorMessage(res));
                }
                error.emplace(state, msg, field(res, PG_DIAG_MESSAGE_DETAIL),
                              field(res, PG_DIAG_MESSAGE_HINT));
            }
            PQclear(res);
        } else {
            if (last)
                PQclear(last);
            last = res;
        }
        if (PQstatus(conn) != CONNECTION_OK)
            break;
    }
    if (error) {
        if (last)
            PQclear(last);
        throw *error;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        if (last)
            PQclear(last);
        throw connection_error(conn, "connection lost");
    }
    return Result(last);
}

namespace {

DbError error_of(PGconn *conn, const PGresult *res) {
    std::string state = field(res, PG_DIAG_SQLSTATE);
    std::string msg = field(res, PG_DIAG_MESSAGE_PRIMARY);
    if (state.empty()) {
        // libpq's own failure (the connection broke mid-statement).
        state = kSqlstateConnectionFailure;
        msg = trimmed(PQresultErrorMessage(res));
        if (msg.empty())
            msg = trimmed(PQerrorMessage(conn));
    }
    return DbError(state, msg, field(res, PG_DIAG_MESSAGE_DETAIL),
                   field(res, PG_DIAG_MESSAGE_HINT));
}

// The next result, waiting at most until deadline; nullptr between
// statements (libpq's convention).
PGresult *next_result(PGconn *conn, Clock::time_point deadline, std::chrono::milliseconds timeout) {
    while (PQisBusy(conn)) {
        if (!wait_readable(conn, deadline)) {
            ::shutdown(PQsocket(conn), SHUT_RDWR);
            PQconsumeInput(conn);
            throw DbError(kSqlstateQueryCanceled, "database did not answer within " +
                                                      std::to_string(timeout.count()) + " ms");
        }
        if (!PQconsumeInput(conn))
            throw connection_error(conn, "connection lost");
    }
    return PQgetResult(conn);
}

}  // namespace

namespace {

// Statements prepared on each connection (SQL text -> statement name), so a
// request's statements are parsed and planned once per connection, not per
// request: the server's work per GET roughly halves (bench/RESULTS.md,
// Gateway). A connection is used by one thread at a time; the map of
// connections is shared. Off behind a transaction pooler (pgbouncer before
// 1.21 does not carry prepared statements across transactions).
constexpr size_t kMaxPreparedPerConnection = 256;
std::atomic<bool> g_prepare{true};
std::mutex g_prepared_mutex;
struct Prepared {
    std::unordered_map<std::string, std::string> names;  // confirmed by the server
    unsigned next = 0;
};
std::unordered_map<PGconn *, Prepared> g_prepared;

// The name to run sql under on conn: known (prepared), or a new one to
// prepare now (fresh = true), or "" to send it unnamed.
std::string prepared_name(PGconn *conn, const std::string &sql, bool &fresh) {
    fresh = false;
    if (!g_prepare.load())
        return "";
    std::lock_guard<std::mutex> lock(g_prepared_mutex);
    Prepared &p = g_prepared[conn];
    auto it = p.names.find(sql);
    if (it != p.names.end())
        return it->second;
    if (p.names.size() >= kMaxPreparedPerConnection)
        return "";
    fresh = true;
    return "tenancy_gw_" + std::to_string(p.next++);
}

void remember_prepared(PGconn *conn, const std::string &sql, const std::string &name) {
    std::lock_guard<std::mutex> lock(g_prepared_mutex);
    g_prepared[conn].names.emplace(sql, name);
}

}  // namespace

void set_prepared_statements(bool on) {
    g_prepare.store(on);
}

void finish_connection(PGconn *conn) {
    {
        std::lock_guard<std::mutex> lock(g_prepared_mutex);
        g_prepared.erase(conn);
    }
    PQfinish(conn);
}

void exec_pipeline(PGconn *conn, const std::vector<Statement> &statements,
                   std::chrono::milliseconds timeout, std::vector<Result> &results) {
    results.assign(statements.size(), Result());
    const auto deadline = Clock::now() + timeout;
    if (PQstatus(conn) != CONNECTION_OK)
        throw PipelineError(connection_error(conn, "connection lost"), 0);
    if (!PQenterPipelineMode(conn))
        throw PipelineError(connection_error(conn, "could not enter pipeline mode"), 0);
    // Statements prepared in this pipeline: their Prepare's result comes
    // just before their own.
    std::vector<std::string> preparing(statements.size());
    for (size_t i = 0; i < statements.size(); ++i) {
        const Statement &s = statements[i];
        std::vector<const char *> values;
        values.reserve(s.params.size());
        for (const auto &p : s.params)
            values.push_back(p ? p->c_str() : nullptr);
        bool fresh = false;
        const std::string name = prepared_name(conn, s.sql, fresh);
        bool sent = true;
        if (fresh) {
            sent = PQsendPrepare(conn, name.c_str(), s.sql.c_str(),
                                 static_cast<int>(values.size()), nullptr) != 0;
            preparing[i] = name;
        }
        if (sent)
            sent = name.empty()
                       ? PQsendQueryParams(conn, s.sql.c_str(), static_cast<int>(values.size()),
                                           nullptr, values.data(), nullptr, nullptr, 0) != 0
                       : PQsendQueryPrepared(conn, name.c_str(), static_cast<int>(values.size()),
                                             values.data(), nullptr, nullptr, 0) != 0;
        if (!sent) {
            DbError e = connection_error(conn, "could not send statement");
            ::shutdown(PQsocket(conn), SHUT_RDWR);  // leave no half-sent pipeline behind
            PQconsumeInput(conn);
            throw PipelineError(e, 0);
        }
    }
    if (!PQpipelineSync(conn)) {
        DbError e = connection_error(conn, "could not send statements");
        ::shutdown(PQsocket(conn), SHUT_RDWR);
        PQconsumeInput(conn);
        throw PipelineError(e, 0);
    }

    std::optional<PipelineError> failure;
    size_t index = 0;
    try {
        for (; index < statements.size(); ++index) {
            if (!preparing[index].empty()) {
                // The Prepare's own result: a failure there (a syntax error)
                // is the statement's failure; the execution is then aborted.
                bool prepared = false;
                while (PGresult *res = next_result(conn, deadline, timeout)) {
                    ExecStatusType st = PQresultStatus(res);
                    if (st == PGRES_COMMAND_OK)
                        prepared = true;
                    else if ((st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) && !failure)
                        failure.emplace(error_of(conn, res), index);
                    PQclear(res);
                }
                if (prepared)
                    remember_prepared(conn, statements[index].sql, preparing[index]);
            }
            // Each statement's results end with a nullptr.
            while (PGresult *res = next_result(conn, deadline, timeout)) {
                ExecStatusType st = PQresultStatus(res);
                if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE) {
                    if (!failure)
                        failure.emplace(error_of(conn, res), index);
                    PQclear(res);
                } else if (st == PGRES_PIPELINE_ABORTED) {
                    PQclear(res);
                } else {
                    results[index] = Result(res);
                }
            }
        }
        PGresult *sync = next_result(conn, deadline, timeout);
        const bool synced = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        if (sync)
            PQclear(sync);
        if (!synced)
            throw connection_error(conn, "pipeline out of step");
    } catch (const DbError &e) {
        // Timeout or lost connection: the connection is unusable now.
        if (PQstatus(conn) == CONNECTION_OK) {
            ::shutdown(PQsocket(conn), SHUT_RDWR);
            PQconsumeInput(conn);
        }
        if (failure)
            throw *failure;
        throw PipelineError(e, std::min(index, statements.empty() ? 0 : statements.size() - 1));
    }
    PQexitPipelineMode(conn);
    if (failure)
        throw *failure;
}

DbPool::DbPool(PoolOptions options) : options_(std::move(options)) {
    if (options_.max_size < 1)
        options_.max_size = 1;
}

DbPool::~DbPool() {
    close();
}

std::chrono::milliseconds DbPool::client_statement_timeout() const {
    return options_.statement_timeout + std::chrono::milliseconds(1000);
}

PGconn *DbPool::connect() {
    // The caller's conninfo comes last so its own settings win.
    std::string timeout = std::to_string(options_.connect_timeout_s);
    const char *keywords[] = {"connect_timeout", "application_name", "dbname", nullptr};
    const char *values[] = {timeout.c_str(), options_.application_name.c_str(),
                            options_.conninfo.c_str(), nullptr};
    PGconn *conn = PQconnectdbParams(keywords, values, 1);
    if (conn == nullptr)
        throw DbError(kSqlstateCannotConnect, "out of memory");
    if (PQstatus(conn) != CONNECTION_OK) {
        DbError e(kSqlstateCannotConnect,
                  "cannot connect to the database: " + trimmed(PQerrorMessage(conn)));
        finish_connection(conn);
        throw e;
    }
    // Server notices (e.g. "table does not exist, skipping") are not errors;
    // keep them off stderr.
    PQsetNoticeProcessor(
        conn, [](void *, const char *) {}, nullptr);
    try {
        exec_params(conn, "SELECT pg_catalog.set_config('statement_timeout', $1, false)",
                    {std::to_string(options_.statement_timeout.count())},
                    client_statement_timeout());
    } catch (const DbError &e) {
        finish_connection(conn);
        throw DbError(kSqlstateCannotConnect,
                      std::string("cannot set up the connection: ") + e.what());
    }
    return conn;
}

DbPool::Lease DbPool::acquire() {
    return acquire(options_.acquire_timeout);
}

DbPool::Lease DbPool::acquire(std::chrono::milliseconds timeout) {
    auto deadline = Clock::now() + timeout;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
        if (closed_)
            throw DbError(kSqlstatePoolClosed, "the connection pool is closed");
        while (!idle_.empty()) {
            PGconn *conn = idle_.back();
            idle_.pop_back();
            if (PQstatus(conn) == CONNECTION_OK && still_open(conn))
                return Lease(this, conn);
            --open_;
            lock.unlock();
            finish_connection(conn);
            lock.lock();
            if (closed_)
                throw DbError(kSqlstatePoolClosed, "the connection pool is closed");
        }
        if (open_ < options_.max_size) {
            ++open_;  // reserve the slot, connect without holding the lock
            lock.unlock();
            try {
                return Lease(this, connect());
            } catch (...) {
                lock.lock();
                --open_;
                available_.notify_one();
                throw;
            }
        }
        ++waiting_;
        const bool timed_out = available_.wait_until(lock, deadline) == std::cv_status::timeout;
        --waiting_;
        if (timed_out && idle_.empty() && (open_ >= options_.max_size || closed_)) {
            if (closed_)
                throw DbError(kSqlstatePoolClosed, "the connection pool is closed");
            throw DbError(kSqlstatePoolExhausted, "no database connection became free within " +
                                                      std::to_string(timeout.count()) + " ms");
        }
    }
}

void DbPool::give_back(PGconn *conn, bool discard) {
    // A connection is reusable only when healthy and outside any transaction.
    const bool broken = PQstatus(conn) != CONNECTION_OK;
    bool reusable = !discard && !broken && PQtransactionStatus(conn) == PQTRANS_IDLE;
    std::vector<PGconn *> to_close;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (reusable && !closed_) {
            idle_.push_back(conn);
            conn = nullptr;
        } else {
            --open_;
        }
        if (broken) {
            // A broken connection usually means the server restarted: the
            // idle ones are dead too, and handing them out one by one would
            // fail one request each. Reopen lazily instead.
            to_close.swap(idle_);
            open_ -= static_cast<int>(to_close.size());
        }
    }
    if (to_close.empty())
        available_.notify_one();
    else
        available_.notify_all();
    if (conn)
        finish_connection(conn);
    for (PGconn *c : to_close)
        finish_connection(c);
}

void DbPool::close() {
    std::vector<PGconn *> to_close;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        closed_ = true;
        to_close.swap(idle_);
        open_ -= static_cast<int>(to_close.size());
    }
    available_.notify_all();
    for (PGconn *c : to_close)
        finish_connection(c);
}

DbPool::Stats DbPool::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    Stats s;
    s.open = open_;
    s.idle = static_cast<int>(idle_.size());
    s.in_use = open_ - s.idle;
    s.max = options_.max_size;
    s.waiting = waiting_;
    return s;
}

DbPool::Lease::Lease(Lease &&other) noexcept
    : pool_(other.pool_), conn_(other.conn_), discard_(other.discard_) {
    other.pool_ = nullptr;
    other.conn_ = nullptr;
}

DbPool::Lease &DbPool::Lease::operator=(Lease &&other) noexcept {
    if (this != &other) {
        release();
        pool_ = other.pool_;
        conn_ = other.conn_;
        discard_ = other.discard_;
        other.pool_ = nullptr;
        other.conn_ = nullptr;
    }
    return *this;
}

DbPool::Lease::~Lease() {
    release();
}

void DbPool::Lease::release() {
    if (pool_ && conn_)
        pool_->give_back(conn_, discard_);
    pool_ = nullptr;
    conn_ = nullptr;
    discard_ = false;
}

bool ping(DbPool &pool, std::chrono::milliseconds timeout, std::string &error) {
    auto deadline = Clock::now() + timeout;
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0)
            break;
        try {
            DbPool::Lease lease = pool.acquire(left);
            left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0)
                left = std::chrono::milliseconds(1);
            try {
                Result r = exec_params(lease.get(), "SELECT 1", {}, left);
                if (r.rows() == 1 && r.value(0, 0) == std::optional<std::string>("1"))
                    return true;
                error = "SELECT 1 returned an unexpected answer";
                return false;
            } catch (const DbError &e) {
                error = e.what();
                if (PQstatus(lease.get()) == CONNECTION_OK &&
                    e.sqlstate() != kSqlstateQueryCanceled)
                    return false;  // the server answered, with an error
                lease.discard();   // stale or hung connection: retry on a fresh one
            }
        } catch (const DbError &e) {
            error = e.what();
            return false;  // could not get or open a connection
        }
    }
    if (error.empty())
        error = "database did not answer in time";
    return false;
}

}  // namespace tenancy::gateway
