// Liveness and readiness.
//   GET /healthz  the process is up and serving: always 200.
//   GET /readyz   a pooled connection answers SELECT 1 within 2 s: 200,
//                 else 503 database_unavailable.
#include "db_pool.hpp"
#include "http_server.hpp"
#include "log.hpp"

namespace tenancy::gateway {

void register_health_routes(HttpServer &server, DbPool &pool) {
    server.route("GET", "/healthz", [](const httplib::Request &, httplib::Response &res) {
        send_json(res, 200, {{"status", "ok"}});
    });

    server.route("GET", "/readyz", [&pool](const httplib::Request &, httplib::Response &res) {
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
    });
}

}  // namespace tenancy::gateway
