// Gateway configuration: command-line flags and TENANCY_* environment
// variables; a flag wins over its variable.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace tenancy::gateway {

struct Config {
    std::string listen = "127.0.0.1";
    int port = 8080;
    std::string database_url;
    int pool_size = 8;
    // How long a request waits for a pooled connection before it gives up.
    int pool_timeout_ms = 2000;
    // HTTP worker threads kept ready; each open connection holds one, and
    // more start on demand up to max_connections.
    int threads = 16;
    // Bound on one statement (and on connecting) so a hung database cannot
    // hold a worker forever.
    int statement_timeout_ms = 5000;
    // Calls tenancy.audit_seal() this often (audit_sealer.hpp); 0: never
    // (the extension's background sealer does it).
    int audit_seal_interval_ms = 0;
    // Total time to receive one request's line, headers and body, counted
    // from its first byte; a slower request gets 408 and its connection
    // closes (a per-recv timeout alone lets a byte every few seconds hold a
    // worker forever).
    int request_read_timeout_ms = 10000;
    // Connections one peer address may hold open at once; more are answered
    // 429 and closed, so one client cannot take every worker thread.
    int max_connections_per_peer = 8;
    // Connections served at once (each holds a thread); more are answered
    // 503 too_many_connections with Retry-After and closed at once.
    int max_connections = 1024;
    // An idle keep-alive connection closes after this long without a request.
    int keep_alive_timeout_ms = 5000;
    // Prepare each distinct statement once per database connection. Off
    // behind a transaction pooler (pgbouncer before 1.21 in transaction
    // mode): a name prepared on one server session is missing, or means
    // another statement, on the next (docs/operations/pooling.md).
    bool prepared_statements = true;
    // TLS: both or neither (PEM files: certificate chain, private key).
    std::string tls_cert;
    std::string tls_key;
    // A hot standby that serves GETs (replica_router.hpp); empty: none.
    std::string replica_url;
    // GETs go to the primary while the standby lags more than this.
    int replica_max_lag_ms = 1000;
    // The outbox mailer (mailer.hpp); off while smtp_url is empty. The SMTP
    // user and password come from TENANCY_SMTP_USER / TENANCY_SMTP_PASSWORD
    // only (a flag would show in ps).
    std::string smtp_url;         // smtp://host:port or smtps://host:port
    std::string smtp_from;        // envelope and From: address
    std::string public_base_url;  // links in mails: <base>/invitations/accept?token=...
    std::string smtp_user, smtp_password;
    int smtp_timeout_ms = 30000;      // one message, connection included
    int smtp_batch = 10;              // rows claimed per round
    int smtp_poll_ms = 1000;          // pause between rounds when nothing more is due
    int smtp_retry_base_ms = 30000;   // first retry after base x [0.5, 1), doubling
    int smtp_retry_max_ms = 3600000;  // cap of the backoff
};

struct ConfigResult {
    enum class Kind { ok, help, error } kind = Kind::ok;
    Config config;
    std::string message;  // the error, or the help text
};

// Looks an environment variable up; nullptr when unset. Injected so tests
// do not have to mutate the process environment.
using EnvLookup = std::function<const char *(const char *)>;

// args excludes the program name. Never throws.
ConfigResult parse_config(const std::vector<std::string> &args, const EnvLookup &env);

std::string usage_text();

// Strict decimal integer in [min, max]; false on anything else.
bool parse_int(const std::string &text, int min, int max, int &out);

// Whether libpq accepts the conninfo string or URI; fills error if not.
bool conninfo_valid(const std::string &conninfo, std::string &error);

}  // namespace tenancy::gateway
