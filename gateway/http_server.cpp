#include "http_server.hpp"

#include "log.hpp"
#include "metrics.hpp"
#include "request_checks.hpp"

#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <random>

namespace tenancy::gateway {

namespace {

using SteadyClock = std::chrono::steady_clock;

// Each request is served start to finish on one worker thread, so its start
// time can live in a thread_local between the pre-routing hook and the logger.
thread_local SteadyClock::time_point t_request_start{};
thread_local std::chrono::system_clock::time_point t_request_wall{};
// The label of the route whose handler runs (nullptr: none ran).
thread_local const std::string *t_route_label = nullptr;

// What a client is told to wait before retrying a 503, in seconds.
constexpr const char *kRetryAfter = "1";

void ensure_request_id(const httplib::Request &req, httplib::Response &res) {
    if (res.has_header(kRequestIdHeader))
        return;
    std::string id = sanitize_request_id(req.get_header_value("X-Request-Id"));
    if (id.empty())
        id = new_request_id();
    res.set_header(kRequestIdHeader, id);
}

std::string join(const std::vector<std::string> &items, const char *sep) {
    std::string out;
    for (const auto &s : items) {
        if (!out.empty())
            out += sep;
        out += s;
    }
    return out;
}

}  // namespace

std::string sanitize_request_id(const std::string &v) {
    if (v.empty() || v.size() > 128)
        return "";
    for (unsigned char c : v) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return "";
    }
    return v;
}

std::string new_request_id() {
    thread_local std::mt19937_64 rng([] {
        std::random_device rd;
        std::seed_seq seq{rd(), rd(), rd(), rd()};
        return std::mt19937_64(seq);
    }());
    static const char hex[] = "0123456789abcdef";
    std::string id(32, '0');
    for (int half = 0; half < 2; ++half) {
        uint64_t v = rng();
        for (int i = 0; i < 16; ++i)
            id[half * 16 + i] = hex[(v >> (i * 4)) & 0xf];
    }
    return id;
}

std::string request_id_of(const httplib::Response &res) {
    return res.get_header_value(kRequestIdHeader);
}

void send_json(httplib::Response &res, int status, const nlohmann::json &body) {
    res.status = status;
    res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
                    "application/json");
}

void send_problem(httplib::Response &res, const Problem &problem) {
    res.status = problem.status;
    // Every 503 is temporary (database down or busy, too many connections).
    if (problem.status == 503 && !res.has_header("Retry-After"))
        res.set_header("Retry-After", kRetryAfter);
    res.set_content(problem_json(problem, request_id_of(res))
                            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                        "\n",
                    kProblemContentType);
}

HttpServer::HttpServer(const Config &config)
    : config_(config),
      server_(ConnectionLimits{std::chrono::milliseconds(config.request_read_timeout_ms),
                               config.max_connections_per_peer, config.max_connections,
                               std::chrono::milliseconds(config.keep_alive_timeout_ms),
                               config.threads}) {
    register_connection_metrics(Metrics::global());
    // The Debian library is prebuilt, so the CPPHTTPLIB_TCP_NODELAY macro
    // cannot change its default; set it at run time (avoids ~40 ms stalls
    // on keep-alive connections).
    server_.set_tcp_nodelay(true);
    server_.set_keep_alive_max_count(1000);
    server_.set_read_timeout(10);
    server_.set_write_timeout(10);
    server_.set_payload_max_length(1 << 20);
    // On every answer, errors included: nothing is cacheable, and a browser
    // must not guess a type other than the one sent.
    server_.set_default_headers(
        {{"Cache-Control", "no-store"}, {"X-Content-Type-Options", "nosniff"}});
    // cpp-httplib's default sets SO_REUSEPORT, with which a second gateway on
    // the same port starts and silently takes half the connections;
    // SO_REUSEADDR only allows a restart while old connections linger.
    server_.set_socket_options([](socket_t sock) {
        int yes = 1;
        ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    install_hooks();
}

bool HttpServer::configure_tls(std::string &error) {
    if (config_.tls_cert.empty())
        return true;
    auto tls = TlsContext::load(config_.tls_cert, config_.tls_key, error);
    if (!tls)
        return false;
    server_.use_tls(std::move(tls));
    return true;
}

void HttpServer::route(const std::string &method, const std::string &pattern, Handler inner,
                       const std::string &label) {
    routes_.push_back({method, std::regex(pattern), label.empty() ? pattern : label});
    // Checked here, once the body is read: answering from the pre-routing
    // hook would leave an unread body in the connection.
    auto route_label = std::make_shared<const std::string>(routes_.back().label);
    Handler handler = [inner = std::move(inner), route_label](const httplib::Request &req,
                                                              httplib::Response &res) {
        t_route_label = route_label.get();
        if (auto where = control_character_in(req)) {
            send_problem(res, problem_invalid_request("control character in " + *where));
            return;
        }
        inner(req, res);
    };
    if (method == "GET")
        server_.Get(pattern, std::move(handler));
    else if (method == "POST")
        server_.Post(pattern, std::move(handler));
    else if (method == "PUT")
        server_.Put(pattern, std::move(handler));
    else if (method == "PATCH")
        server_.Patch(pattern, std::move(handler));
    else if (method == "DELETE")
        server_.Delete(pattern, std::move(handler));
    else
        throw std::invalid_argument("unsupported method " + method);
}

std::vector<std::string> HttpServer::methods_for(const std::string &path) const {
    std::vector<std::string> methods;
    for (const auto &r : routes_) {
        if (std::regex_match(path, r.pattern) &&
            std::find(methods.begin(), methods.end(), r.method) == methods.end()) {
            methods.push_back(r.method);
            if (r.method == "GET")
                methods.push_back("HEAD");
        }
    }
    return methods;
}

std::string HttpServer::label_for(const std::string &method, const std::string &path) const {
    const std::string &m = method == "HEAD" ? std::string("GET") : method;
    for (const auto &r : routes_)
        if (r.method == m && std::regex_match(path, r.pattern))
            return r.label;
    return "unmatched";
}

void HttpServer::install_hooks() {
    server_.set_pre_routing_handler([](const httplib::Request &req, httplib::Response &res) {
        t_route_label = nullptr;
        t_request_start = SteadyClock::now();
        t_request_wall = std::chrono::system_clock::now();
        ensure_request_id(req, res);
        // cpp-httplib 0.11 reads a POST/PUT/PATCH/DELETE body without
        // Content-Length until the connection closes (read timeout), but in
        // HTTP/1.1 such a request has no body (RFC 9112 6.3). The Request is
        // not const in the library's caller, and the body is read only after
        // this hook.
        if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding") &&
            (req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
             req.method == "DELETE"))
            const_cast<httplib::Request &>(req).set_header("Content-Length", "0");
        return httplib::Server::HandlerResponse::Unhandled;
    });

    // Every 4xx/5xx without a body yet (no route, bad request line, payload
    // too large, ...) becomes problem+json; handlers' own problems pass.
    server_.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request &req, httplib::Response &res) {
            ensure_request_id(req, res);
            // The request did not arrive in time (http_connection.hpp): 408,
            // and the connection closes.
            if (request_read_timed_out()) {
                // So the answer says "Connection: close", not "Keep-Alive".
                const_cast<httplib::Request &>(req).set_header("Connection", "close");
                send_problem(res, problem_for_status(408, "the request did not arrive in time"));
                return httplib::Server::HandlerResponse::Handled;
            }
            if (!res.body.empty())
                return httplib::Server::HandlerResponse::Unhandled;
            if (res.status == 404) {
                auto methods = methods_for(req.path);
                if (!methods.empty()) {
                    res.set_header("Allow", join(methods, ", "));
                    send_problem(res, problem_for_status(
                                          405, "method " + req.method + " is not allowed here"));
                    return httplib::Server::HandlerResponse::Handled;
                }
                send_problem(res, problem_for_status(404, "no route for this path"));
                return httplib::Server::HandlerResponse::Handled;
            }
            send_problem(res, problem_for_status(res.status));
            return httplib::Server::HandlerResponse::Handled;
        }));

    server_.set_exception_handler(
        [](const httplib::Request &req, httplib::Response &res, std::exception_ptr ep) {
            std::string what = "unknown exception";
            try {
                if (ep)
                    std::rethrow_exception(ep);
            } catch (const std::exception &e) {
                what = e.what();
            } catch (...) {
            }
            ensure_request_id(req, res);
            log_event("error", "unhandled exception",
                      {{"request_id", request_id_of(res)}, {"error", what}});
            send_problem(res, problem_for_status(500));
        });

    server_.set_logger([this](const httplib::Request &req, const httplib::Response &res) {
        RequestLogEntry e;
        const bool timed = t_request_start != SteadyClock::time_point{};
        e.time = timed ? t_request_wall : std::chrono::system_clock::now();
        e.duration_ms =
            timed ? std::chrono::duration<double, std::milli>(SteadyClock::now() - t_request_start)
                        .count()
                  : 0.0;
        t_request_start = SteadyClock::time_point{};
        e.request_id = request_id_of(res);
        e.method = req.method;
        e.path = req.path;  // the query string is left out: it may carry secrets
        e.status = res.status;
        e.remote =
            req.remote_addr.empty() ? "" : req.remote_addr + ":" + std::to_string(req.remote_port);
        log_request(e);
        // Answers no handler gave (404, 405, 408, 413, ...) count under the
        // route their method and path would have reached, if any.
        const bool handled = t_route_label != nullptr;
        Metrics::global().observe_request(
            handled ? *t_route_label
                    : (req.method.empty() ? "unmatched" : label_for(req.method, req.path)),
            req.method, res.status, e.duration_ms / 1000.0);
        t_route_label = nullptr;
    });
}

bool HttpServer::bind(std::string &error) {
    // Each connection is a descriptor: let the process open as many as its
    // hard limit allows (the soft limit is often 1024).
    rlimit files{};
    if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &files);
    }
    errno = 0;
    if (!server_.bind_to_port(config_.listen, config_.port)) {
        const int cause = errno;
        error = "cannot listen on " + config_.listen + ":" + std::to_string(config_.port) + " (" +
                (cause == EADDRINUSE ? std::string("the port is in use by another process")
                 : cause != 0        ? std::string(std::strerror(cause))
                                     : std::string("address in use or not available")) +
                ")";
        return false;
    }
    server_.raise_backlog();
    return true;
}

bool HttpServer::run() {
    return server_.listen_after_bind();
}

}  // namespace tenancy::gateway
