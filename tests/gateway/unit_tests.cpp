// Gateway unit tests: a plain harness, no mocks. The database cases run
// against the real throw-away cluster named by PGHOST/PGPORT/PGUSER.
// Prints one "PASS name" or "FAIL name: why" line per case; exit status 1 if
// any failed.
#include "api_request.hpp"
#include "config.hpp"
#include "db_pool.hpp"
#include "db_tx.hpp"
#include "http_connection.hpp"
#include "http_server.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "mail_message.hpp"
#include "problem.hpp"
#include "request_checks.hpp"

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tenancy::gateway;
using namespace std::chrono_literals;
using namespace std::string_literals;

namespace {

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond))                                                                       \
            throw Failure(std::string("line ") + std::to_string(__LINE__) + ": " + #cond); \
    } while (0)

#define CHECK_EQ(a, b)                                                                       \
    do {                                                                                     \
        auto va_ = (a);                                                                      \
        auto vb_ = (b);                                                                      \
        if (!(va_ == vb_)) {                                                                 \
            std::ostringstream os_;                                                          \
            os_ << "line " << __LINE__ << ": " #a " == " #b " (got " << va_ << " vs " << vb_ \
                << ")";                                                                      \
            throw Failure(os_.str());                                                        \
        }                                                                                    \
    } while (0)

int g_failed = 0;
int g_passed = 0;

void run_case(const char *name, const std::function<void()> &fn) {
    try {
        fn();
        std::printf("PASS %s\n", name);
        ++g_passed;
    } catch (const std::exception &e) {
        std::printf("FAIL %s: %s\n", name, e.what());
        ++g_failed;
    }
    std::fflush(stdout);
}

using Env = std::map<std::string, std::string>;

ConfigResult parse(const std::vector<std::string> &args, const Env &env = {}) {
    return parse_config(args, [&env](const char *name) -> const char * {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    });
}

bool is_error(const ConfigResult &r, const std::string &needle) {
    return r.kind == ConfigResult::Kind::error && r.message.find(needle) != std::string::npos;
}

// The test database: libpq takes host, port and user from PG* variables.
const std::string kConninfo = "dbname=postgres";

PoolOptions pool_options(int size, std::chrono::milliseconds acquire_timeout = 2000ms) {
    PoolOptions o;
    o.conninfo = kConninfo;
    o.max_size = size;
    o.acquire_timeout = acquire_timeout;
    o.statement_timeout = 3000ms;
    return o;
}

std::string scalar(DbPool &pool, const std::string &sql, const Params &params = {}) {
    std::string value;
    TxOutcome out = run_transaction(pool, [&](Tx &tx) {
        Result r = tx.exec(sql, params);
        if (r.rows() != 1)
            throw Failure("expected one row from: " + sql);
        value = r.value(0, 0).value_or("<null>");
    });
    if (!out)
        throw Failure("query failed: " + out.error.sqlstate + " " + out.error.message);
    return value;
}

// ---------------------------------------------------------------- mail

void mail_cases() {
    run_case("mail_hostile_branding_is_inert", [] {
        OutboxMail m;
        m.id = 7;
        m.kind = "invitation";
        m.recipient = "a@b.test";
        m.subject = "Invitation to <x>";
        m.data = {{"account", "A&B <script>"}, {"role", "member"}, {"token", "tni_1_2_abc"}};
        m.branding = {{"name", "\"><img src=x onerror=alert(1)>"},
                      {"logo_url", "javascript:alert(1)"},
                      {"primary_color", "red;background:url(x)"}};
        MailContent c = render_mail(m, "https://app.test/");
        CHECK(c.html.find("<script>") == std::string::npos);
        CHECK(c.html.find("A&amp;B &lt;script&gt;") != std::string::npos);
        CHECK(c.html.find("onerror=alert(1)>") == std::string::npos);
        CHECK(c.html.find("javascript:") == std::string::npos);
        CHECK(c.html.find("url(x)") == std::string::npos);
        CHECK(c.text.find("https://app.test/invitations/accept?token=tni_1_2_abc") !=
              std::string::npos);
    });
    run_case("mail_unknown_kind_sends_the_body", [] {
        OutboxMail m;
        m.kind = "";
        m.body = "hello <you>";
        MailContent c = render_mail(m, "https://app.test");
        CHECK(c.text == "hello <you>");
        CHECK(c.html.find("hello &lt;you&gt;") != std::string::npos);
    });
    run_case("mail_headers_cannot_be_injected", [] {
        OutboxMail m;
        m.id = 9;
        m.recipient = "a@b.test";
        m.subject = "Hi\r\nBcc: evil@x.test";
        m.message_id = "<outbox-9.00@tenancy>";
        std::string msg = build_message(m, MailContent{"t", "h"}, "n@t.test", "date");
        CHECK(msg.find("\r\nBcc:") == std::string::npos);
        CHECK(msg.find("Message-ID: <outbox-9.00@tenancy>\r\n") != std::string::npos);
        CHECK(msg.find("Content-Type: multipart/alternative") != std::string::npos);
        CHECK(!plain_address("a@b.test>\r\nRCPT TO:<c@d.test"));
        CHECK(!plain_address("a<b@c.test"));
        CHECK(plain_address("first.last+tag@example.com"));
    });
    run_case("config_mailer_needs_from_and_base_url", [] {
        std::map<std::string, std::string> env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        CHECK(is_error(parse({"--smtp-url", "smtp://127.0.0.1:25"}, env), "--smtp-from"));
        CHECK(is_error(parse({"--smtp-url", "smtp://127.0.0.1:25", "--smtp-from", "a@b.test"}, env),
                       "--public-base-url"));
        CHECK(is_error(parse({"--smtp-url", "http://x", "--smtp-from", "a@b.test"}, env),
                       "SMTP URL"));
        auto ok = parse({"--smtp-url", "smtps://mail.test:465", "--smtp-from", "a@b.test",
                         "--public-base-url", "https://app.test"},
                        env);
        CHECK(ok.kind == ConfigResult::Kind::ok);
    });
}

// ---------------------------------------------------------------- config

void config_cases() {
    run_case("config_defaults", [] {
        auto r = parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"}});
        CHECK(r.kind == ConfigResult::Kind::ok);
        CHECK_EQ(r.config.listen, std::string("127.0.0.1"));
        CHECK_EQ(r.config.port, 8080);
        CHECK_EQ(r.config.pool_size, 8);
        CHECK_EQ(r.config.database_url, std::string("dbname=x"));
    });
    run_case("config_flags_override_env", [] {
        auto r = parse({"--port", "9000", "--listen=0.0.0.0", "--pool-size", "3", "--database-url",
                        "postgresql://u@localhost/db"},
                       {{"TENANCY_PORT", "7000"},
                        {"TENANCY_LISTEN", "10.0.0.1"},
                        {"TENANCY_POOL_SIZE", "5"},
                        {"TENANCY_DATABASE_URL", "dbname=env"}});
        CHECK(r.kind == ConfigResult::Kind::ok);
        CHECK_EQ(r.config.port, 9000);
        CHECK_EQ(r.config.listen, std::string("0.0.0.0"));
        CHECK_EQ(r.config.pool_size, 3);
        CHECK_EQ(r.config.database_url, std::string("postgresql://u@localhost/db"));
    });
    run_case("config_env_used_without_flags", [] {
        auto r = parse({}, {{"TENANCY_PORT", "7000"},
                            {"TENANCY_LISTEN", "::1"},
                            {"TENANCY_POOL_SIZE", "5"},
                            {"TENANCY_DATABASE_URL", "host=/tmp dbname=env"}});
        CHECK(r.kind == ConfigResult::Kind::ok);
        CHECK_EQ(r.config.port, 7000);
        CHECK_EQ(r.config.listen, std::string("::1"));
        CHECK_EQ(r.config.pool_size, 5);
    });
    run_case("config_audit_seal_interval", [] {
        auto off = parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"}});
        CHECK_EQ(off.config.audit_seal_interval_ms, 0);
        auto on =
            parse({"--audit-seal-interval-ms", "250"}, {{"TENANCY_DATABASE_URL", "dbname=x"}});
        CHECK(on.kind == ConfigResult::Kind::ok);
        CHECK_EQ(on.config.audit_seal_interval_ms, 250);
        auto env = parse(
            {}, {{"TENANCY_DATABASE_URL", "dbname=x"}, {"TENANCY_AUDIT_SEAL_INTERVAL_MS", "1000"}});
        CHECK_EQ(env.config.audit_seal_interval_ms, 1000);
        CHECK(parse({"--audit-seal-interval-ms", "-1"}, {{"TENANCY_DATABASE_URL", "dbname=x"}})
                  .kind == ConfigResult::Kind::error);
        CHECK(parse({"--audit-seal-interval-ms", "60001"}, {{"TENANCY_DATABASE_URL", "dbname=x"}})
                  .kind == ConfigResult::Kind::error);
    });
    run_case("config_connection_limits", [] {
        Env env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        auto d = parse({}, env);
        CHECK_EQ(d.config.request_read_timeout_ms, 10000);
        CHECK_EQ(d.config.max_connections_per_peer, 8);
        auto f = parse({"--request-read-timeout-ms", "2500", "--max-connections-per-peer=3"}, env);
        CHECK(f.kind == ConfigResult::Kind::ok);
        CHECK_EQ(f.config.request_read_timeout_ms, 2500);
        CHECK_EQ(f.config.max_connections_per_peer, 3);
        auto e = parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"},
                            {"TENANCY_REQUEST_READ_TIMEOUT_MS", "700"},
                            {"TENANCY_MAX_CONNECTIONS_PER_PEER", "64"}});
        CHECK_EQ(e.config.request_read_timeout_ms, 700);
        CHECK_EQ(e.config.max_connections_per_peer, 64);
        CHECK(
            is_error(parse({"--request-read-timeout-ms", "99"}, env), "--request-read-timeout-ms"));
        CHECK(is_error(parse({"--max-connections-per-peer", "0"}, env),
                       "--max-connections-per-peer"));
    });
    run_case("config_max_connections_and_keep_alive", [] {
        Env env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        auto d = parse({}, env);
        CHECK_EQ(d.config.max_connections, 1024);
        CHECK_EQ(d.config.keep_alive_timeout_ms, 5000);
        auto f = parse({"--max-connections", "2000", "--keep-alive-timeout-ms=750"}, env);
        CHECK(f.kind == ConfigResult::Kind::ok);
        CHECK_EQ(f.config.max_connections, 2000);
        CHECK_EQ(f.config.keep_alive_timeout_ms, 750);
        auto e = parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"},
                            {"TENANCY_MAX_CONNECTIONS", "64"},
                            {"TENANCY_KEEP_ALIVE_TIMEOUT_MS", "30000"}});
        CHECK_EQ(e.config.max_connections, 64);
        CHECK_EQ(e.config.keep_alive_timeout_ms, 30000);
        CHECK(is_error(parse({"--max-connections", "0"}, env), "--max-connections"));
        CHECK(is_error(parse({"--max-connections", "65537"}, env), "--max-connections"));
        CHECK(is_error(parse({"--keep-alive-timeout-ms", "99"}, env), "--keep-alive-timeout-ms"));
    });
    run_case("config_prepared_statements", [] {
        Env env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        CHECK(parse({}, env).config.prepared_statements);
        auto off = parse({"--prepared-statements", "off"}, env);
        CHECK(off.kind == ConfigResult::Kind::ok && !off.config.prepared_statements);
        CHECK(parse({"--prepared-statements=on"}, env).config.prepared_statements);
        auto from_env = parse(
            {}, {{"TENANCY_DATABASE_URL", "dbname=x"}, {"TENANCY_PREPARED_STATEMENTS", "off"}});
        CHECK(from_env.kind == ConfigResult::Kind::ok && !from_env.config.prepared_statements);
        CHECK(parse({"--prepared-statements", "on"},
                    {{"TENANCY_DATABASE_URL", "dbname=x"}, {"TENANCY_PREPARED_STATEMENTS", "off"}})
                  .config.prepared_statements);
        CHECK(is_error(parse({"--prepared-statements", "maybe"}, env), "expected on or off"));
        CHECK(is_error(parse({"--prepared-statements"}, env), "needs a value"));
        CHECK(parse({"--help"}).message.find("--prepared-statements") != std::string::npos);
    });
    run_case("config_tls_needs_cert_and_key", [] {
        Env env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        auto none = parse({}, env);
        CHECK(none.kind == ConfigResult::Kind::ok && none.config.tls_cert.empty());
        auto both = parse({"--tls-cert", "/c.pem", "--tls-key", "/k.pem"}, env);
        CHECK(both.kind == ConfigResult::Kind::ok);
        CHECK_EQ(both.config.tls_cert, std::string("/c.pem"));
        CHECK_EQ(both.config.tls_key, std::string("/k.pem"));
        auto from_env = parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"},
                                   {"TENANCY_TLS_CERT", "/e.pem"},
                                   {"TENANCY_TLS_KEY", "/ek.pem"}});
        CHECK_EQ(from_env.config.tls_cert, std::string("/e.pem"));
        CHECK_EQ(from_env.config.tls_key, std::string("/ek.pem"));
        CHECK(is_error(parse({"--tls-cert", "/c.pem"}, env), "both --tls-cert and --tls-key"));
        CHECK(is_error(parse({"--tls-key", "/k.pem"}, env), "both --tls-cert and --tls-key"));
    });
    run_case("config_help", [] {
        auto r = parse({"--help"});
        CHECK(r.kind == ConfigResult::Kind::help);
        CHECK(r.message.find("--database-url") != std::string::npos);
        CHECK(r.message.find("TENANCY_POOL_SIZE") != std::string::npos);
    });
    run_case("config_unknown_flag", [] {
        CHECK(is_error(parse({"--database-url", "dbname=x", "--bogus"}), "unknown option"));
        CHECK(is_error(parse({"positional"}, {{"TENANCY_DATABASE_URL", "dbname=x"}}),
                       "unknown option"));
    });
    run_case("config_missing_value", [] {
        CHECK(is_error(parse({"--database-url", "dbname=x", "--port"}), "needs a value"));
        CHECK(is_error(parse({"--database-url"}), "needs a value"));
        CHECK(is_error(parse({"--listen="}, {{"TENANCY_DATABASE_URL", "dbname=x"}}), "non-empty"));
    });
    run_case("config_bad_numbers", [] {
        Env env{{"TENANCY_DATABASE_URL", "dbname=x"}};
        for (const char *bad : {"abc", "0", "65536", "80x", "-1", " 80", "", "99999999999999"})
            CHECK(is_error(parse({"--port", bad}, env), "--port"));
        CHECK(is_error(parse({"--pool-size", "0"}, env), "--pool-size"));
        CHECK(is_error(parse({"--pool-size=1.5"}, env), "--pool-size"));
        CHECK(is_error(parse({}, {{"TENANCY_DATABASE_URL", "dbname=x"}, {"TENANCY_PORT", "http"}}),
                       "TENANCY_PORT"));
    });
    run_case("config_database_required", [] {
        CHECK(is_error(parse({}), "database is required"));
        CHECK(is_error(parse({"--port", "81"}), "database is required"));
    });
    run_case("config_invalid_conninfo", [] {
        CHECK(is_error(parse({"--database-url", "host"}), "invalid database URL"));
        CHECK(is_error(parse({"--database-url", "nosuchkey=1"}), "invalid database URL"));
        CHECK(is_error(parse({"--database-url", "postgresql://h/db?bogus=1"}),
                       "invalid database URL"));
        CHECK(parse({"--database-url", "postgresql://u:p@h:5/db?sslmode=disable"}).kind ==
              ConfigResult::Kind::ok);
    });
}

// ------------------------------------------------------- problems, mapping

void problem_cases() {
    run_case("sqlstate_mapping", [] {
        struct Row {
            const char *state;
            int status;
            const char *code;
        };
        const Row rows[] = {
            {"28000", 401, "unauthenticated"},
            {"28P01", 401, "unauthenticated"},
            {"28T01", 401, "mfa_required"},
            {"28T02", 403, "password_change_required"},
            {"28T03", 500, "internal_error"},
            {"42501", 403, "forbidden"},
            {"P0002", 404, "not_found"},
            {"23505", 409, "conflict"},
            {"40001", 409, "concurrent_update"},
            {"40P01", 409, "concurrent_update"},
            {"53400", 409, "plan_limit_reached"},
            {"55000", 409, "conflict"},
            {"22001", 422, "unprocessable"},
            {"22P02", 422, "unprocessable"},
            {"23503", 422, "unprocessable"},
            {"23514", 422, "unprocessable"},
            {"08006", 503, "database_unavailable"},
            {"08001", 503, "database_unavailable"},
            {"57P01", 503, "database_unavailable"},
            {"53300", 503, "database_unavailable"},
            {"57014", 503, "database_timeout"},
            {"XX000", 500, "internal_error"},
            {"42883", 500, "internal_error"},
            {"P0001", 500, "internal_error"},
            {"", 500, "internal_error"},
            {"2200", 500, "internal_error"},
        };
        for (const auto &row : rows) {
            Problem p = problem_for_sqlstate(row.state);
            if (p.status != row.status || p.code != row.code)
                throw Failure(std::string(row.state) + " -> " + std::to_string(p.status) + " " +
                              p.code);
            CHECK(!p.title.empty());
        }
    });
    run_case("problem_json_shape", [] {
        Problem p = problem_for_status(404, "no such account");
        auto j = problem_json(p, "req-1");
        CHECK_EQ(j.at("status").get<int>(), 404);
        CHECK_EQ(j.at("code").get<std::string>(), std::string("not_found"));
        CHECK_EQ(j.at("title").get<std::string>(), std::string("Not found"));
        CHECK_EQ(j.at("detail").get<std::string>(), std::string("no such account"));
        CHECK_EQ(j.at("type").get<std::string>(), std::string("urn:tenancy:problem:not_found"));
        CHECK_EQ(j.at("request_id").get<std::string>(), std::string("req-1"));
        // Without a detail, detail repeats the title; without an id, no key.
        auto k = problem_json(problem_for_status(405));
        CHECK_EQ(k.at("detail").get<std::string>(), std::string("Method not allowed"));
        CHECK(!k.contains("request_id"));
        CHECK_EQ(std::string(kProblemContentType), std::string("application/problem+json"));
    });
    run_case("problem_for_status_codes", [] {
        CHECK_EQ(problem_for_status(405).code, std::string("method_not_allowed"));
        CHECK_EQ(problem_for_status(400).code, std::string("bad_request"));
        CHECK_EQ(problem_for_status(413).code, std::string("payload_too_large"));
        CHECK_EQ(problem_for_status(418).status, 418);
        CHECK_EQ(problem_for_status(500).code, std::string("internal_error"));
        CHECK_EQ(problem_for_status(200).status, 500);
        CHECK_EQ(problem_for_status(408).code, std::string("request_timeout"));
        CHECK_EQ(problem_for_status(429).code, std::string("too_many_connections"));
        Problem bad = problem_invalid_request("control character in the path");
        CHECK_EQ(bad.status, 400);
        CHECK_EQ(bad.code, std::string("invalid_request"));
        CHECK_EQ(bad.detail, std::string("control character in the path"));
    });
    run_case("control_characters_found", [] {
        CHECK(!has_control_character(""));
        CHECK(!has_control_character("acc_1_abc ~!\x80\xc3\xa9"));
        for (char c : {'\0', '\x01', '\t', '\n', '\r', '\x1f', '\x7f'})
            CHECK(has_control_character(std::string("acc_1") + c + "x"));
        httplib::Request req;
        req.path = "/v1/me";
        req.params.emplace("limit", "5");
        req.headers.emplace("Tenancy-Account", "acc_1_abc");
        req.headers.emplace("User-Agent", std::string("odd\x01agent"));  // not read: not checked
        CHECK(!control_character_in(req));
        auto with = [&](auto change) {
            httplib::Request r = req;
            change(r);
            return control_character_in(r).value_or("");
        };
        CHECK_EQ(with([](auto &r) { r.path = "/v1/accounts/acc\0x"s; }), std::string("the path"));
        CHECK_EQ(with([](auto &r) { r.params.emplace("action", "a\0b"s); }),
                 std::string("query parameter \"action\""));
        CHECK_EQ(with([](auto &r) { r.params.emplace(std::string("x\ny"), "1"); }),
                 std::string("query parameter \"?\""));
        CHECK_EQ(with([](auto &r) { r.headers.emplace("Tenancy-Account", "acc_1_abc\0evil"s); }),
                 std::string("header Tenancy-Account"));
        CHECK_EQ(with([](auto &r) { r.headers.emplace("authorization", "Bearer a\rb"); }),
                 std::string("header Authorization"));
    });
    run_case("peer_counter_caps_each_address", [] {
        PeerCounter peers(2);
        CHECK(peers.acquire("10.0.0.1"));
        CHECK(peers.acquire("10.0.0.1"));
        CHECK(!peers.acquire("10.0.0.1"));
        CHECK_EQ(peers.count("10.0.0.1"), 2);
        CHECK(peers.acquire("10.0.0.2"));  // another address has its own allowance
        peers.release("10.0.0.1");
        CHECK(peers.acquire("10.0.0.1"));
        peers.release("10.0.0.1");
        peers.release("10.0.0.1");
        peers.release("10.0.0.1");  // one release too many does not go negative
        CHECK_EQ(peers.count("10.0.0.1"), 0);
        CHECK(peers.acquire("10.0.0.1"));
        CHECK(peers.acquire("10.0.0.1"));
        CHECK(!peers.acquire("10.0.0.1"));
    });
    run_case("problem_503_carries_retry_after", [] {
        httplib::Response res;
        send_problem(res, problem_for_sqlstate("08006"));
        CHECK_EQ(res.status, 503);
        CHECK_EQ(res.get_header_value("Retry-After"), std::string("1"));
        httplib::Response other;
        send_problem(other, problem_for_status(404));
        CHECK(!other.has_header("Retry-After"));
    });
    run_case("metrics_requests_and_latency_rendered", [] {
        Metrics m;
        m.observe_request("/v1/accounts/{id}", "GET", 200, 0.003);
        m.observe_request("/v1/accounts/{id}", "GET", 200, 0.2);
        m.observe_request("/v1/accounts/{id}", "GET", 404, 0.001);
        m.observe_request("unmatched", "BREW", 400, 0.0);
        std::string out = m.render();
        auto has = [&out](const std::string &line) {
            return out.find("\n" + line + "\n") != std::string::npos;
        };
        CHECK(has("# TYPE tenancy_http_requests_total counter"));
        CHECK(
            has("tenancy_http_requests_total{route=\"/v1/accounts/{id}\",method=\"GET\","
                "status=\"200\"} 2"));
        CHECK(
            has("tenancy_http_requests_total{route=\"/v1/accounts/{id}\",method=\"GET\","
                "status=\"404\"} 1"));
        // A method outside HTTP's set cannot create series of its own.
        CHECK(
            has("tenancy_http_requests_total{route=\"unmatched\",method=\"other\","
                "status=\"400\"} 1"));
        CHECK(has("# TYPE tenancy_http_request_duration_seconds histogram"));
        const std::string b =
            "tenancy_http_request_duration_seconds_bucket{route=\"/v1/accounts/{id}\","
            "method=\"GET\",le=";
        CHECK(has(b + "\"0.001\"} 1"));   // the 1 ms request
        CHECK(has(b + "\"0.0025\"} 1"));  // cumulative
        CHECK(has(b + "\"0.005\"} 2"));
        CHECK(has(b + "\"0.1\"} 2"));
        CHECK(has(b + "\"0.25\"} 3"));
        CHECK(has(b + "\"+Inf\"} 3"));
        CHECK(
            has("tenancy_http_request_duration_seconds_count{route=\"/v1/accounts/{id}\","
                "method=\"GET\"} 3"));
        CHECK(
            has("tenancy_http_request_duration_seconds_sum{route=\"/v1/accounts/{id}\","
                "method=\"GET\"} 0.204"));
    });
    run_case("metrics_counters_and_gauges", [] {
        Metrics m;
        m.add("tenancy_things_total", "Things.", 0);
        m.add("tenancy_things_total", "ignored: the first help stays");
        m.add("tenancy_things_total", "", 4);
        m.add("tenancy_drops_total{reason=\"full\"}", "Drops.", 2);
        m.add("tenancy_drops_total{reason=\"error\"}", "Drops.");
        int depth = 7;
        m.gauge("tenancy_queue_depth", "Queue depth.", [&depth] { return double(depth); });
        m.sampled_counter("tenancy_seen_total", "Seen.", [] { return 12.0; });
        depth = 9;  // sampled when rendering
        std::string out = m.render();
        auto at = [&out](const std::string &line) { return out.find("\n" + line + "\n"); };
        CHECK(at("# HELP tenancy_things_total Things.") != std::string::npos);
        CHECK(at("tenancy_things_total 5") != std::string::npos);
        // One family: HELP and TYPE once, then both series.
        auto help = at("# HELP tenancy_drops_total Drops.");
        CHECK(help != std::string::npos);
        CHECK(out.find("# HELP tenancy_drops_total", help + 2) == std::string::npos);
        CHECK(at("# TYPE tenancy_drops_total counter") != std::string::npos);
        CHECK(at("tenancy_drops_total{reason=\"error\"} 1") > help);
        CHECK(at("tenancy_drops_total{reason=\"full\"} 2") > help);
        CHECK(at("# TYPE tenancy_queue_depth gauge") != std::string::npos);
        CHECK(at("tenancy_queue_depth 9") != std::string::npos);
        CHECK(at("# TYPE tenancy_seen_total counter") != std::string::npos);
        CHECK(at("tenancy_seen_total 12") != std::string::npos);
        m.gauge("tenancy_queue_depth", "Queue depth.", [] { return 0.5; });  // replaces
        CHECK(m.render().find("\ntenancy_queue_depth 0.5\n") != std::string::npos);
        for (const char *bad : {"", "9lives", "has space", "x{", "x{a=1}", "x{a=\"1\"", "x{=\"1\"}",
                                "tenancy_http_requests_total"}) {
            bool threw = false;
            try {
                m.add(bad, "bad");
            } catch (const std::invalid_argument &) {
                threw = true;
            }
            CHECK(threw);
        }
        CHECK_EQ(escape_label_value("a\"b\\c\nd"), std::string("a\\\"b\\\\c\\nd"));
    });
    run_case("worker_pool_grows_on_demand_and_retires_idle_threads", [] {
        std::mutex mu;
        std::condition_variable cv;
        int running = 0;
        bool release = false;
        {
            WorkerPool pool(2, 10, 200ms);
            // Whatever a CHECK below throws, the jobs are released first, or
            // the pool's destructor would wait for them forever.
            struct Release {
                std::mutex &mu;
                std::condition_variable &cv;
                bool &release;
                ~Release() {
                    {
                        std::lock_guard<std::mutex> lock(mu);
                        release = true;
                    }
                    cv.notify_all();
                }
            } releaser{mu, cv, release};
            CHECK_EQ(pool.threads(), size_t{2});
            // Six jobs that each hold their thread: the pool starts more
            // (threads that have not reached their wait yet do not count as
            // idle, so it may start a few more than four).
            for (int i = 0; i < 6; ++i)
                pool.enqueue([&] {
                    std::unique_lock<std::mutex> lock(mu);
                    ++running;
                    cv.notify_all();
                    cv.wait(lock, [&] { return release; });
                });
            {
                std::unique_lock<std::mutex> lock(mu);
                CHECK(cv.wait_for(lock, 10s, [&] { return running == 6; }));
            }
            CHECK(pool.threads() >= size_t{6} && pool.threads() <= size_t{10});
            CHECK(pool.busy() >= size_t{6});
            {
                std::lock_guard<std::mutex> lock(mu);
                release = true;
            }
            cv.notify_all();
            // Idle beyond the minimum for 200 ms: back to 2.
            for (int i = 0; i < 200 && pool.threads() > 2; ++i)
                std::this_thread::sleep_for(20ms);
            CHECK_EQ(pool.threads(), size_t{2});
        }
        // Never more than max_threads: the rest queue and still all run.
        std::atomic<int> done{0};
        {
            WorkerPool pool(1, 3);
            for (int i = 0; i < 20; ++i)
                pool.enqueue([&] {
                    std::this_thread::sleep_for(5ms);
                    ++done;
                });
            CHECK(pool.threads() <= 3);
            pool.shutdown();  // runs what is queued, then returns
            CHECK_EQ(done.load(), 20);
            CHECK_EQ(pool.threads(), size_t{0});
        }
    });
    run_case("bearer_credential_parsing", [] {
        auto none = std::optional<std::string>();
        CHECK(bearer_credential("Bearer tnc_1_2_abc") == std::optional<std::string>("tnc_1_2_abc"));
        CHECK(bearer_credential("bearer   tns_9_x") == std::optional<std::string>("tns_9_x"));
        CHECK(bearer_credential("BEARER k") == std::optional<std::string>("k"));
        CHECK(bearer_credential("") == none);
        CHECK(bearer_credential("Bearer") == none);
        CHECK(bearer_credential("Bearer ") == none);
        CHECK(bearer_credential("Bearer    ") == none);
        CHECK(bearer_credential("Basic dXNlcjpw") == none);
        CHECK(bearer_credential("Bearertnc_1") == none);
        CHECK(bearer_credential("Bearer a b") == none);
        CHECK(bearer_credential("Bearer a\tb") == none);
        CHECK(bearer_credential("Bearer caf\xc3\xa9") == none);
        CHECK(bearer_credential("Bearer " + std::string(512, 'k')) ==
              std::optional<std::string>(std::string(512, 'k')));
        CHECK(bearer_credential("Bearer " + std::string(513, 'k')) == none);
    });
    run_case("api_key_main_id_parsing", [] {
        auto none = std::optional<std::string>();
        CHECK(api_key_main_id("tnc_42_7_secret") == std::optional<std::string>("42"));
        CHECK(api_key_main_id("tnc_123456789012345678_1_s") ==
              std::optional<std::string>("123456789012345678"));
        CHECK(api_key_main_id("tnc_1234567890123456789_1_s") == none);  // 19 digits
        CHECK(api_key_main_id("tnc__7_s") == none);
        CHECK(api_key_main_id("tnc_42") == none);
        CHECK(api_key_main_id("tnc_4x2_7_s") == none);
        CHECK(api_key_main_id("tnc_-1_7_s") == none);
        CHECK(api_key_main_id("tns_42_7_s") == none);  // a session token
        CHECK(api_key_main_id("TNC_42_7_s") == none);
        CHECK(api_key_main_id("tn") == none);
        CHECK(api_key_main_id("") == none);
    });
    run_case("request_id_sanitizing", [] {
        CHECK_EQ(sanitize_request_id("abc-123_x.y:z"), std::string("abc-123_x.y:z"));
        CHECK_EQ(sanitize_request_id(""), std::string());
        CHECK_EQ(sanitize_request_id("has space"), std::string());
        CHECK_EQ(sanitize_request_id("line\nbreak"), std::string());
        CHECK_EQ(sanitize_request_id("{\"json\":1}"), std::string());
        CHECK_EQ(sanitize_request_id(std::string(129, 'a')), std::string());
        CHECK_EQ(sanitize_request_id(std::string(128, 'a')), std::string(128, 'a'));
        std::string a = new_request_id(), b = new_request_id();
        CHECK_EQ(a.size(), size_t(32));
        CHECK(a != b);
        CHECK_EQ(sanitize_request_id(a), a);
    });
    run_case("request_log_line_shape", [] {
        RequestLogEntry e;
        e.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1795427696789));
        e.request_id = "r1";
        e.method = "GET";
        e.path = "/healthz";
        e.status = 200;
        e.duration_ms = 1.23456;
        e.remote = "127.0.0.1:5000";
        auto j = request_log_json(e);
        CHECK_EQ(j.at("time").get<std::string>(), std::string("2026-11-23T09:54:56.789Z"));
        CHECK_EQ(j.at("request_id").get<std::string>(), std::string("r1"));
        CHECK_EQ(j.at("status").get<int>(), 200);
        CHECK_EQ(j.at("duration_ms").get<double>(), 1.235);
        CHECK_EQ(j.at("remote").get<std::string>(), std::string("127.0.0.1:5000"));
        CHECK_EQ(j.at("msg").get<std::string>(), std::string("request"));
        CHECK(j.dump().find('\n') == std::string::npos);
    });
}

// -------------------------------------------------------------- database

void database_cases() {
    run_case("db_committed_transaction_visible", [] {
        DbPool pool(pool_options(2));
        TxOutcome setup = run_transaction(pool, [](Tx &tx) {
            tx.exec("DROP TABLE IF EXISTS gw_unit");
            tx.exec("CREATE TABLE gw_unit (id int PRIMARY KEY, note text)");
        });
        CHECK(setup.committed);
        TxOutcome out = run_transaction(pool, [](Tx &tx) {
            Result r = tx.exec("INSERT INTO gw_unit VALUES ($1, $2)", {"1", "one"});
            CHECK_EQ(r.affected_rows(), 1L);
        });
        CHECK(out.committed);
        CHECK(out.error.sqlstate.empty());
        // Seen from a separate pool, i.e. another session: really committed.
        DbPool other(pool_options(1));
        CHECK_EQ(scalar(other, "SELECT note FROM gw_unit WHERE id = $1", {"1"}),
                 std::string("one"));
    });
    run_case("db_params_are_data_not_sql", [] {
        DbPool pool(pool_options(1));
        const std::string tricky = "x'); DROP TABLE gw_unit; --";
        TxOutcome out = run_transaction(pool, [&](Tx &tx) {
            tx.exec("INSERT INTO gw_unit VALUES ($1, $2), ($3, $4)",
                    {"2", tricky, "3", std::nullopt});
        });
        CHECK(out.committed);
        CHECK_EQ(scalar(pool, "SELECT note FROM gw_unit WHERE id = 2"), tricky);
        CHECK_EQ(scalar(pool, "SELECT coalesce(note, 'null!') FROM gw_unit WHERE id = 3"),
                 std::string("null!"));
        TxOutcome read = run_transaction(pool, [](Tx &tx) {
            Result r = tx.exec("SELECT note FROM gw_unit WHERE id = 3");
            CHECK_EQ(r.rows(), 1);
            CHECK(!r.value(0, 0).has_value());
            CHECK_EQ(r.column_name(0), std::string("note"));
        });
        CHECK(read.committed);
    });
    run_case("db_failure_rolls_back_and_reports_sqlstate", [] {
        DbPool pool(pool_options(1));
        bool after_error_ran = false;
        TxOutcome out = run_transaction(pool, [&](Tx &tx) {
            tx.exec("INSERT INTO gw_unit VALUES (10, 'rolled back')");
            tx.exec("INSERT INTO gw_unit VALUES (1, 'duplicate')");  // 23505
            after_error_ran = true;
        });
        CHECK(!out.committed);
        CHECK(!after_error_ran);
        CHECK_EQ(out.error.sqlstate, std::string("23505"));
        CHECK(out.error.message.find("duplicate key") != std::string::npos);
        CHECK(!out.error.detail.empty());
        CHECK_EQ(problem_for_sqlstate(out.error.sqlstate).status, 409);
        CHECK_EQ(scalar(pool, "SELECT count(*) FROM gw_unit WHERE id = 10"), std::string("0"));
        // The connection went back clean and is reused.
        CHECK_EQ(pool.stats().open, 1);
        CHECK_EQ(scalar(pool, "SELECT 41 + 1"), std::string("42"));
    });
    run_case("db_error_sqlstates_from_server", [] {
        DbPool pool(pool_options(1));
        auto state_of = [&](const std::string &sql) {
            TxOutcome out = run_transaction(pool, [&](Tx &tx) { tx.exec(sql); });
            CHECK(!out.committed);
            return out.error.sqlstate;
        };
        CHECK_EQ(state_of("SELECT 1/0"), std::string("22012"));
        CHECK_EQ(state_of("SELECT 'x'::int"), std::string("22P02"));
        CHECK_EQ(state_of("SELECT * FROM no_such_table"), std::string("42P01"));
        CHECK_EQ(state_of("DO $$BEGIN RAISE SQLSTATE 'P0002' USING MESSAGE = 'gone'; END$$"),
                 std::string("P0002"));
        CHECK_EQ(state_of("DO $$BEGIN RAISE SQLSTATE '42501' USING MESSAGE = 'no'; END$$"),
                 std::string("42501"));
    });
    run_case("db_swallowed_error_does_not_commit", [] {
        DbPool pool(pool_options(1));
        TxOutcome out = run_transaction(pool, [](Tx &tx) {
            tx.exec("INSERT INTO gw_unit VALUES (20, 'lost')");
            try {
                tx.exec("SELECT 1/0");
            } catch (const DbError &) {
            }
        });
        CHECK(!out.committed);
        CHECK_EQ(out.error.sqlstate, std::string("25P02"));
        CHECK_EQ(scalar(pool, "SELECT count(*) FROM gw_unit WHERE id = 20"), std::string("0"));
    });
    run_case("db_pipeline_one_round_trip_and_failed_stage", [] {
        DbPool pool(pool_options(1));
        // Queued statements go out with exec_last and COMMIT as one pipeline:
        // the server sees one transaction, all of it committed.
        Result first;
        TxOutcome out = run_transaction(pool, [&](Tx &tx) {
            tx.queue("INSERT INTO gw_unit VALUES (130, 'queued')", {}, 7, &first);
            tx.defer("INSERT INTO gw_unit VALUES (131, 'deferred')", {}, 8);
            Result r = tx.exec_last("SELECT count(*)::text FROM gw_unit WHERE id = 130");
            CHECK_EQ(r.value(0, 0).value_or(""), std::string("1"));
        });
        CHECK(out.committed);
        CHECK_EQ(first.command_tag(), std::string("INSERT 0 1"));
        CHECK_EQ(scalar(pool, "SELECT count(*) FROM gw_unit WHERE id IN (130, 131)"),
                 std::string("2"));
        // A failing queued statement names its stage; nothing after it ran
        // and nothing before it stays.
        out = run_transaction(pool, [&](Tx &tx) {
            tx.queue("INSERT INTO gw_unit VALUES (132, 'rolled back')", {}, 7);
            tx.queue("SELECT 1/0", {}, 9);
            tx.exec_last("INSERT INTO gw_unit VALUES (133, 'never')");
        });
        CHECK(!out.committed);
        CHECK_EQ(out.error.sqlstate, std::string("22012"));
        CHECK_EQ(out.error.stage, 9);
        CHECK_EQ(scalar(pool, "SELECT count(*) FROM gw_unit WHERE id IN (132, 133)"),
                 std::string("0"));
        // The connection is clean for the next transaction.
        CHECK_EQ(scalar(pool, "SELECT 1"), std::string("1"));
        CHECK_EQ(pool.stats().open, 1);
    });
    run_case("db_read_only_transaction_refuses_writes", [] {
        DbPool pool(pool_options(1));
        TxOutcome out = run_transaction(
            pool, [](Tx &tx) { tx.exec_last("INSERT INTO gw_unit VALUES (140, 'no')"); },
            TxOptions{true});
        CHECK(!out.committed);
        CHECK_EQ(out.error.sqlstate, std::string("25006"));
    });
    run_case("db_non_db_exception_rolls_back_and_propagates", [] {
        DbPool pool(pool_options(1));
        bool caught = false;
        try {
            run_transaction(pool, [](Tx &tx) {
                tx.exec("INSERT INTO gw_unit VALUES (30, 'lost')");
                throw std::logic_error("caller bug");
            });
        } catch (const std::logic_error &) {
            caught = true;
        }
        CHECK(caught);
        CHECK_EQ(scalar(pool, "SELECT count(*) FROM gw_unit WHERE id = 30"), std::string("0"));
    });
    run_case("db_statement_timeout", [] {
        PoolOptions o = pool_options(1);
        o.statement_timeout = 200ms;
        DbPool pool(o);
        TxOutcome out = run_transaction(pool, [](Tx &tx) { tx.exec("SELECT pg_sleep(5)"); });
        CHECK(!out.committed);
        CHECK_EQ(out.error.sqlstate, std::string("57014"));
        CHECK_EQ(scalar(pool, "SELECT 'still usable'"), std::string("still usable"));
    });
    run_case("db_pool_exhaustion_waits_then_times_out", [] {
        DbPool pool(pool_options(1, 300ms));
        DbPool::Lease held = pool.acquire();
        CHECK(held);
        std::string state;
        try {
            pool.acquire();
        } catch (const DbError &e) {
            state = e.sqlstate();
        }
        CHECK_EQ(state, std::string("53300"));
        CHECK_EQ(problem_for_sqlstate(state).status, 503);
        // The transaction helper reports the same instead of throwing.
        TxOutcome out = run_transaction(pool, [](Tx &) {});
        CHECK_EQ(out.error.sqlstate, std::string("53300"));
        CHECK(pool.stats().open <= 1);
    });
    run_case("db_pool_waiter_gets_released_connection", [] {
        DbPool pool(pool_options(1, 5000ms));
        DbPool::Lease held = pool.acquire();
        PGconn *first = held.get();
        std::atomic<bool> got{false};
        PGconn *second = nullptr;
        std::thread waiter([&] {
            DbPool::Lease l = pool.acquire();
            second = l.get();
            got = true;
        });
        // The waiter is blocked while the only connection is held; releasing
        // it hands the same connection over.
        std::this_thread::sleep_for(100ms);
        bool got_while_held = got;
        held.release();
        waiter.join();
        CHECK(!got_while_held);
        CHECK(got);
        CHECK(first == second);
        CHECK_EQ(pool.stats().open, 1);
    });
    run_case("db_pool_counts_waiters", [] {
        DbPool pool(pool_options(1, 5000ms));
        DbPool::Lease held = pool.acquire();
        CHECK_EQ(pool.stats().waiting, 0);
        std::thread waiter([&] { DbPool::Lease l = pool.acquire(); });
        for (int i = 0; i < 250 && pool.stats().waiting == 0; ++i)
            std::this_thread::sleep_for(20ms);
        CHECK_EQ(pool.stats().waiting, 1);
        CHECK_EQ(pool.stats().in_use, 1);
        held.release();
        waiter.join();
        CHECK_EQ(pool.stats().waiting, 0);
    });
    run_case("db_pool_reconnects_after_connection_killed", [] {
        DbPool pool(pool_options(2));
        std::string pid = scalar(pool, "SELECT pg_backend_pid()::text");
        DbPool admin(pool_options(1));
        CHECK_EQ(scalar(admin, "SELECT pg_terminate_backend($1::int)::text", {pid}),
                 std::string("true"));
        // Wait (bounded) until the server has really ended that backend.
        for (int i = 0; i < 100; ++i) {
            if (scalar(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", {pid}) ==
                "0")
                break;
            std::this_thread::sleep_for(50ms);
        }
        // The pooled connection is dead; the helper notices at BEGIN and
        // retries on a fresh connection.
        std::string new_pid = scalar(pool, "SELECT pg_backend_pid()::text");
        CHECK(new_pid != pid);
        std::string err;
        CHECK(ping(pool, 2000ms, err));
    });
    run_case("db_pool_recovers_when_all_connections_died", [] {
        DbPool pool(pool_options(3));
        std::vector<std::string> pids;
        {
            // Three connections open at once, then all idle in the pool.
            DbPool::Lease a = pool.acquire(), b = pool.acquire(), c = pool.acquire();
            for (auto *l : {&a, &b, &c})
                pids.push_back(exec_params(l->get(), "SELECT pg_backend_pid()::text", {}, 2000ms)
                                   .value(0, 0)
                                   .value());
        }
        CHECK_EQ(pool.stats().idle, 3);
        DbPool admin(pool_options(1));
        for (const auto &pid : pids)
            scalar(admin, "SELECT pg_terminate_backend($1::int)::text", {pid});
        for (int i = 0; i < 100; ++i) {
            if (scalar(admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                       {"{" + pids[0] + "," + pids[1] + "," + pids[2] + "}"}) == "0")
                break;
            std::this_thread::sleep_for(50ms);
        }
        // Like a database restart: the first request meets a dead connection,
        // which drops every idle one, and the retry runs on a fresh one.
        TxOutcome out = run_transaction(pool, [](Tx &tx) { tx.exec("SELECT 1"); });
        CHECK(out.committed);
        CHECK_EQ(pool.stats().open, 1);
        std::string err;
        CHECK(ping(pool, 2000ms, err));
    });
    run_case("db_ping_reports_unreachable", [] {
        PoolOptions o = pool_options(1);
        o.conninfo = "host=127.0.0.1 port=1 dbname=postgres";
        DbPool pool(o);
        std::string err;
        CHECK(!ping(pool, 2000ms, err));
        CHECK(err.find("cannot connect") != std::string::npos);
        CHECK_EQ(pool.stats().open, 0);
        TxOutcome out = run_transaction(pool, [](Tx &) {});
        CHECK_EQ(out.error.sqlstate, std::string("08001"));
        CHECK_EQ(problem_for_sqlstate(out.error.sqlstate).code,
                 std::string("database_unavailable"));
    });
    run_case("db_pool_close", [] {
        DbPool pool(pool_options(2));
        CHECK_EQ(scalar(pool, "SELECT 1"), std::string("1"));
        DbPool::Lease held = pool.acquire();
        pool.close();
        std::string state;
        try {
            pool.acquire();
        } catch (const DbError &e) {
            state = e.sqlstate();
        }
        CHECK_EQ(state, std::string("57P01"));
        held.release();  // closed on return, not pooled
        CHECK_EQ(pool.stats().open, 0);
    });
    run_case("db_cleanup", [] {
        DbPool pool(pool_options(1));
        CHECK(run_transaction(pool, [](Tx &tx) { tx.exec("DROP TABLE gw_unit"); }).committed);
    });
}

}  // namespace

int main(int argc, char **argv) {
    bool with_db = !(argc > 1 && std::string(argv[1]) == "--no-db");
    config_cases();
    mail_cases();
    problem_cases();
    if (with_db)
        database_cases();
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
