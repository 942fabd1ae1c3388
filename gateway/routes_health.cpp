// Liveness, readiness and metrics (all unauthenticated).
//   GET /healthz  the process is up and serving: always 200.
//   GET /readyz   a pooled connection answers SELECT 1 within 2 s: 200,
//                 else 503 database_unavailable.
//   GET /metrics  Prometheus text format (metrics.hpp), with the database
//                 pool's gauges registered here.
#include "db_pool.hpp"
#include "http_server.hpp"
#include "log.hpp"
#include "metrics.hpp"

namespace tenancy::gateway {

namespace {

void register_pool_gauges(Metrics &m, DbPool &pool) {
    m.gauge("tenancy_db_pool_size", "Most database connections the pool may open.",
            [&pool] { return pool.stats().max; });
    m.gauge("tenancy_db_pool_open", "Database connections open (idle, in use or being opened).",
            [&pool] { return pool.stats().open; });
    m.gauge("tenancy_db_pool_in_use", "Database connections leased to a request.",
            [&pool] { return pool.stats().in_use; });
    m.gauge("tenancy_db_pool_idle", "Database connections open and free.",
            [&pool] { return pool.stats().idle; });
    m.gauge("tenancy_db_pool_waiting", "Requests waiting for a database connection.",
            [&pool] { return pool.stats().waiting; });
}

}  // namespace

void register_health_routes(HttpServer &server, DbPool &pool) {
    server.route(
        "GET", "/healthz",
        [](const httplib::Request &, httplib::Response &res) {
            send_json(res, 200, {{"status", "ok"}});
        },
        "/healthz");

    server.route(
        "GET", "/readyz",
        [&pool](const httplib::Request &, httplib::Response &res) {
            std::string error;
            if (ping(pool, std::chrono::milliseconds(2000), error)) {
                send_json(res, 200, {{"status", "ok"}, {"database", "ok"}});
                return;
            }
            // The reason goes to the log, not to the (unauthenticated) caller.
            log_event("warn", "readiness check failed",
                      {{"request_id", request_id_of(res)}, {"error", error}});
            Problem p;
            p.status = 503;
            p.code = "database_unavailable";
            p.title = "Database unavailable";
            p.detail = "the database did not answer the readiness check";
            send_problem(res, p);
        },
        "/readyz");

    register_pool_gauges(Metrics::global(), pool);
    server.route(
        "GET", "/metrics",
        [](const httplib::Request &, httplib::Response &res) {
            res.status = 200;
            res.set_content(Metrics::global().render(), kMetricsContentType);
        },
        "/metrics");
}

}  // namespace tenancy::gateway
