// tenancy-gateway: wiring, startup checks and graceful shutdown.
//
// Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 when the database
// stays unreachable at start or the port cannot be bound, 2 on bad
// configuration (including a TLS certificate or key that cannot be used).
#include "api_request.hpp"
#include "audit_sealer.hpp"
#include "config.hpp"
#include "db_pool.hpp"
#include "http_server.hpp"
#include "list_page.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "mailer.hpp"
#include "read_log.hpp"
#include "replica_router.hpp"
#include "routes_catalog.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>

using namespace tenancy::gateway;

namespace {

constexpr auto kStartupWait = std::chrono::seconds(5);

std::atomic<bool> g_stop_requested{false};
std::atomic<bool> g_main_done{false};

// Signals are blocked in every thread and taken here with sigwait, so no
// work happens in an asynchronous signal handler. SIGUSR1 is main's "done".
void signal_loop(HttpServer *server, sigset_t set) {
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGUSR1)
            return;
        if (g_stop_requested.exchange(true)) {
            log_event("warn", "second signal, exiting at once", {{"signal", sig}});
            std::_Exit(1);
        }
        log_event("info", "shutdown requested", {{"signal", sig}});
        // stop() only acts on a running server: wait until main either
        // starts serving or gives up (it checks g_stop_requested first).
        while (!g_main_done && !server->is_running())
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (server->is_running())
            server->stop();
    }
}

// Waits (bounded) for the database at start, so a wrong host or a missing
// database fails loudly instead of leaving a gateway that is never ready.
bool wait_for_database(DbPool &pool, std::string &error) {
    const auto deadline = std::chrono::steady_clock::now() + kStartupWait;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (ping(pool, std::max(left, std::chrono::milliseconds(500)), error))
            return true;
        if (g_stop_requested ||
            std::chrono::steady_clock::now() + std::chrono::milliseconds(250) >= deadline)
            return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
}

// The GET records' queue (read_log.hpp) in /metrics.
void register_read_log_metrics(Metrics &m, ReadLog &log) {
    m.gauge("tenancy_gateway_read_log_queue_depth", "GET records waiting to be written",
            [&log] { return static_cast<double>(log.depth()); });
    m.sampled_counter("tenancy_gateway_read_log_written_total",
                      "GET records written to the audit log",
                      [&log] { return static_cast<double>(log.written()); });
    m.sampled_counter("tenancy_gateway_read_log_dropped_total",
                      "GET records dropped (queue full, refused, or unwritten at shutdown)",
                      [&log] { return static_cast<double>(log.dropped()); });
    m.sampled_counter("tenancy_gateway_read_log_failed_batches_total",
                      "batches of GET records the database did not take",
                      [&log] { return static_cast<double>(log.failed_batches()); });
}

// The standby's state (replica_router.hpp) in /metrics.
void register_replica_metrics(Metrics &m, ReplicaRouter &r) {
    m.gauge("tenancy_gateway_replica_usable", "1 while GETs go to the standby",
            [&r] { return r.usable() ? 1.0 : 0.0; });
    m.gauge("tenancy_gateway_replica_reachable", "1 while the standby answers",
            [&r] { return r.reachable() ? 1.0 : 0.0; });
    m.gauge("tenancy_gateway_replica_lag_seconds", "the standby's lag (-1: unknown)",
            [&r] { return r.lag_seconds(); });
    m.sampled_counter("tenancy_gateway_replica_served_total", "GETs the standby answered",
                      [&r] { return static_cast<double>(r.served()); });
    m.sampled_counter("tenancy_gateway_replica_fallbacks_total",
                      "GETs retried on the primary after the standby failed",
                      [&r] { return static_cast<double>(r.fell_back()); });
}

// The mailer's counters (mailer.hpp) in /metrics.
void register_mailer_metrics(Metrics &m, Mailer &mailer) {
    const MailerStats &st = mailer.stats();
    m.sampled_counter("tenancy_gateway_mail_sent_total", "mails the SMTP server accepted",
                      [&st] { return static_cast<double>(st.sent.load()); });
    m.sampled_counter("tenancy_gateway_mail_retried_total",
                      "temporary delivery failures, each retried later",
                      [&st] { return static_cast<double>(st.retried.load()); });
    m.sampled_counter("tenancy_gateway_mail_failed_total", "mails refused for good (5xx)",
                      [&st] { return static_cast<double>(st.failed.load()); });
    m.gauge("tenancy_gateway_mail_queue_depth", "mails waiting to be sent (last round)",
            [&st] { return static_cast<double>(st.queue_depth.load()); });
    m.gauge("tenancy_gateway_mail_oldest_unsent_age_seconds",
            "age of the oldest unsent mail (last round)",
            [&st] { return st.oldest_unsent_age_s.load(); });
}

// List cursors are sealed with a key every gateway of the database shares,
// so a cursor from one gateway works on another. Without the function (an
// older extension) or the right to call it, each gateway uses its own
// random key: cursors then work only on the gateway that made them.
void load_cursor_key(DbPool &pool) {
    try {
        DbPool::Lease lease = pool.acquire();
        Result r = exec_params(lease.get(), "SELECT encode(tenancy.gateway_cursor_key(), 'hex')",
                               {}, pool.client_statement_timeout());
        std::string hex = r.value(0, 0).value_or("");
        std::vector<uint8_t> key;
        for (size_t i = 0; i + 1 < hex.size(); i += 2)
            key.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
        if (key.size() >= 32) {
            set_cursor_key(key);
            return;
        }
        log_event("warn", "tenancy.gateway_cursor_key() gave a short key; using a random one");
    } catch (const DbError &e) {
        log_event("warn", "list cursors use this gateway's own random key",
                  {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
    }
}

MailerOptions mailer_options(const Config &config) {
    MailerOptions o;
    o.smtp.url = config.smtp_url;
    o.smtp.from = config.smtp_from;
    o.smtp.user = config.smtp_user;
    o.smtp.password = config.smtp_password;
    o.smtp.timeout = std::chrono::milliseconds(config.smtp_timeout_ms);
    o.public_base_url = config.public_base_url;
    char host[256] = "gateway";
    gethostname(host, sizeof host - 1);
    o.claimer = std::string(host) + ":" + std::to_string(config.port);
    o.batch = config.smtp_batch;
    o.poll = std::chrono::milliseconds(config.smtp_poll_ms);
    o.retry_base = std::chrono::milliseconds(config.smtp_retry_base_ms);
    o.retry_cap = std::chrono::milliseconds(config.smtp_retry_max_ms);
    return o;
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    ConfigResult parsed = parse_config(args, [](const char *name) { return std::getenv(name); });
    if (parsed.kind == ConfigResult::Kind::help) {
        std::fputs(parsed.message.c_str(), stdout);
        return 0;
    }
    if (parsed.kind == ConfigResult::Kind::error) {
        std::fprintf(stderr, "tenancy-gateway: %s\n(try --help)\n", parsed.message.c_str());
        return 2;
    }
    const Config config = parsed.config;

    // Block before any thread exists so every thread inherits the mask.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);

    set_prepared_statements(config.prepared_statements);
    PoolOptions pool_options;
    pool_options.conninfo = config.database_url;
    pool_options.max_size = config.pool_size;
    pool_options.acquire_timeout = std::chrono::milliseconds(config.pool_timeout_ms);
    pool_options.statement_timeout = std::chrono::milliseconds(config.statement_timeout_ms);
    DbPool pool(pool_options);
    // The standby's pool, when GETs may go to one (replica_router.hpp).
    std::unique_ptr<DbPool> replica_pool;
    if (!config.replica_url.empty()) {
        PoolOptions replica_options = pool_options;
        replica_options.conninfo = config.replica_url;
        replica_pool = std::make_unique<DbPool>(replica_options);
    }

    HttpServer server(config);
    register_health_routes(server, pool);
    register_routes(server, pool, all_routes());
    std::thread signals(signal_loop, &server, set);
    std::unique_ptr<AuditSealer> sealer;
    std::unique_ptr<ReadLog> reads;
    std::unique_ptr<ReplicaRouter> router;
    std::unique_ptr<Mailer> mailer;
    auto finish = [&](int code) {
        g_main_done = true;
        pthread_kill(signals.native_handle(), SIGUSR1);
        signals.join();
        if (sealer)
            sealer->stop();
        if (mailer)
            mailer->stop();
        if (router) {
            set_replica_router(nullptr);
            router->stop();
        }
        if (replica_pool)
            replica_pool->close();
        if (reads) {
            set_read_log(nullptr);
            reads->stop();  // writes what is queued while the pool still serves
        }
        pool.close();
        return code;
    };

    std::string error;
    if (!server.configure_tls(error)) {
        std::fprintf(stderr, "tenancy-gateway: %s\n", error.c_str());
        return finish(2);
    }
    if (!wait_for_database(pool, error)) {
        if (g_stop_requested)
            return finish(0);
        std::fprintf(stderr,
                     "tenancy-gateway: the database is unreachable (gave up after %lld s): %s\n",
                     static_cast<long long>(kStartupWait.count()), error.c_str());
        return finish(1);
    }
    load_cursor_key(pool);
    if (!server.bind(error)) {
        std::fprintf(stderr, "tenancy-gateway: %s\n", error.c_str());
        return finish(1);
    }
    reads = std::make_unique<ReadLog>(pool, ReadLogOptions{});
    register_read_log_metrics(Metrics::global(), *reads);
    if (replica_pool) {
        router = std::make_unique<ReplicaRouter>(
            pool, *replica_pool, std::chrono::milliseconds(config.replica_max_lag_ms));
        set_replica_router(router.get());
        register_replica_metrics(Metrics::global(), *router);
    }
    set_read_log(reads.get());
    if (config.audit_seal_interval_ms > 0)
        sealer = std::make_unique<AuditSealer>(
            pool, std::chrono::milliseconds(config.audit_seal_interval_ms));
    // After bind: the port is this process's alone, so host:port names the
    // mailer's leases uniquely.
    if (!config.smtp_url.empty()) {
        mailer = std::make_unique<Mailer>(pool, mailer_options(config));
        register_mailer_metrics(Metrics::global(), *mailer);
    }
    log_event("info", "listening",
              {{"listen", config.listen},
               {"port", config.port},
               {"pool_size", config.pool_size},
               {"threads", config.threads},
               {"max_connections", config.max_connections},
               {"tls", server.tls()},
               {"audit_seal_interval_ms", config.audit_seal_interval_ms}});
    if (!g_stop_requested)
        server.run();  // returns after stop(), in-flight requests done
    int code = finish(0);
    log_event("info", "stopped");
    return code;
}
