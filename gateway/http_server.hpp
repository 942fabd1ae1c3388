// The HTTP layer: cpp-httplib plus what every response needs: a Request-Id
// header, problem+json for every error (404, 405, 408, 500, ...), no-store and
// nosniff headers, the control-character check, and one JSON log line per
// request.
#pragma once

#include "config.hpp"
#include "http_connection.hpp"
#include "problem.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <regex>
#include <string>
#include <vector>

namespace tenancy::gateway {

inline constexpr const char *kRequestIdHeader = "Request-Id";

// A client-supplied X-Request-Id is echoed only if it is 1..128 characters of
// [A-Za-z0-9._:-]; otherwise "" (and a fresh one is generated).
std::string sanitize_request_id(const std::string &client_value);
// 32 random hex characters.
std::string new_request_id();

// The request id assigned to this response (set before any handler runs).
std::string request_id_of(const httplib::Response &res);

void send_json(httplib::Response &res, int status, const nlohmann::json &body);
void send_problem(httplib::Response &res, const Problem &problem);

class HttpServer {
  public:
    using Handler = httplib::Server::Handler;

    explicit HttpServer(const Config &config);

    // pattern is a regex over the path (cpp-httplib convention), e.g.
    // R"(/v1/accounts/([^/]+))". Methods: GET, POST, PUT, PATCH, DELETE.
    // label is the route's documented path template ("/v1/accounts/{id}"),
    // its name in /metrics; empty: the pattern itself.
    void route(const std::string &method, const std::string &pattern, Handler handler,
               const std::string &label = "");

    // Loads the TLS certificate and key when the configuration names them;
    // false (with error) if they cannot be used. Call before bind().
    bool configure_tls(std::string &error);
    bool tls() const { return server_.tls(); }

    // Binds the listening socket; false (with error) if that fails, also when
    // another process listens on the port (no SO_REUSEPORT sharing).
    bool bind(std::string &error);
    // Serves until stop(); in-flight requests finish before it returns.
    bool run();
    // Thread-safe; stops accepting, closes idle keep-alive connections and
    // makes run() return once in-flight requests are answered.
    void stop() {
        server_.stop();
        server_.wake_idle();
    }
    bool is_running() const { return server_.is_running(); }

  private:
    // The methods registered for a path; empty when no route matches.
    std::vector<std::string> methods_for(const std::string &path) const;
    // The label of the route for this method and path; "unmatched" if none.
    std::string label_for(const std::string &method, const std::string &path) const;
    void install_hooks();

    const Config &config_;
    LimitedServer server_;
    struct RouteEntry {
        std::string method;
        std::regex pattern;
        std::string label;
    };
    std::vector<RouteEntry> routes_;
};

class DbPool;
// GET /healthz, /readyz and /metrics; registers pool's gauges with
// Metrics::global(), so pool must outlive every rendering of it.
void register_health_routes(HttpServer &server, DbPool &pool);

}  // namespace tenancy::gateway
