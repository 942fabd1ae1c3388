#include "config.hpp"

#include "mail_message.hpp"
#include "smtp_client.hpp"

#include <libpq-fe.h>

#include <cerrno>
#include <cstdlib>

namespace tenancy::gateway {

namespace {

struct IntOption {
    const char *flag;
    const char *env;
    int Config::*field;
    int min;
    int max;
};

struct StringOption {
    const char *flag;
    const char *env;
    std::string Config::*field;
};

const StringOption kStringOptions[] = {
    {"--listen", "TENANCY_LISTEN", &Config::listen},
    {"--database-url", "TENANCY_DATABASE_URL", &Config::database_url},
    {"--tls-cert", "TENANCY_TLS_CERT", &Config::tls_cert},
    {"--tls-key", "TENANCY_TLS_KEY", &Config::tls_key},
    {"--replica-url", "TENANCY_REPLICA_URL", &Config::replica_url},
    {"--smtp-url", "TENANCY_SMTP_URL", &Config::smtp_url},
    {"--smtp-from", "TENANCY_SMTP_FROM", &Config::smtp_from},
    {"--public-base-url", "TENANCY_PUBLIC_BASE_URL", &Config::public_base_url},
};

const IntOption kIntOptions[] = {
    {"--port", "TENANCY_PORT", &Config::port, 1, 65535},
    {"--pool-size", "TENANCY_POOL_SIZE", &Config::pool_size, 1, 1000},
    {"--pool-timeout-ms", "TENANCY_POOL_TIMEOUT_MS", &Config::pool_timeout_ms, 1, 600000},
    {"--threads", "TENANCY_THREADS", &Config::threads, 1, 1024},
    {"--statement-timeout-ms", "TENANCY_STATEMENT_TIMEOUT_MS", &Config::statement_timeout_ms, 100,
     3600000},
    {"--audit-seal-interval-ms", "TENANCY_AUDIT_SEAL_INTERVAL_MS", &Config::audit_seal_interval_ms,
     0, 60000},
    {"--request-read-timeout-ms", "TENANCY_REQUEST_READ_TIMEOUT_MS",
     &Config::request_read_timeout_ms, 100, 600000},
    {"--max-connections-per-peer", "TENANCY_MAX_CONNECTIONS_PER_PEER",
     &Config::max_connections_per_peer, 1, 100000},
    {"--max-connections", "TENANCY_MAX_CONNECTIONS", &Config::max_connections, 1, 65536},
    {"--keep-alive-timeout-ms", "TENANCY_KEEP_ALIVE_TIMEOUT_MS", &Config::keep_alive_timeout_ms,
     100, 3600000},
    {"--replica-max-lag-ms", "TENANCY_REPLICA_MAX_LAG_MS", &Config::replica_max_lag_ms, 0, 3600000},
    {"--smtp-timeout-ms", "TENANCY_SMTP_TIMEOUT_MS", &Config::smtp_timeout_ms, 100, 600000},
    {"--smtp-batch", "TENANCY_SMTP_BATCH", &Config::smtp_batch, 1, 1000},
    {"--smtp-poll-ms", "TENANCY_SMTP_POLL_MS", &Config::smtp_poll_ms, 10, 600000},
    {"--smtp-retry-base-ms", "TENANCY_SMTP_RETRY_BASE_MS", &Config::smtp_retry_base_ms, 1,
     86400000},
    {"--smtp-retry-max-ms", "TENANCY_SMTP_RETRY_MAX_MS", &Config::smtp_retry_max_ms, 1, 86400000},
};

struct BoolOption {
    const char *flag;
    const char *env;
    bool Config::*field;
};

const BoolOption kBoolOptions[] = {
    {"--prepared-statements", "TENANCY_PREPARED_STATEMENTS", &Config::prepared_statements},
};

ConfigResult fail(std::string message) {
    ConfigResult r;
    r.kind = ConfigResult::Kind::error;
    r.message = std::move(message);
    return r;
}

bool set_int(Config &c, const IntOption &o, const std::string &value, const std::string &source,
             std::string &error) {
    int v = 0;
    if (!parse_int(value, o.min, o.max, v)) {
        error = source + ": expected an integer from " + std::to_string(o.min) + " to " +
                std::to_string(o.max) + ", got \"" + value + "\"";
        return false;
    }
    c.*o.field = v;
    return true;
}

bool set_bool(Config &c, const BoolOption &o, const std::string &value, const std::string &source,
              std::string &error) {
    if (value == "on" || value == "true" || value == "1") {
        c.*o.field = true;
    } else if (value == "off" || value == "false" || value == "0") {
        c.*o.field = false;
    } else {
        error = source + ": expected on or off, got \"" + value + "\"";
        return false;
    }
    return true;
}

}  // namespace

bool parse_int(const std::string &text, int min, int max, int &out) {
    if (text.empty() || text.size() > 12)
        return false;
    for (char ch : text)
        if (ch < '0' || ch > '9')
            return false;
    long long v = std::strtoll(text.c_str(), nullptr, 10);
    if (v < min || v > max)
        return false;
    out = static_cast<int>(v);
    return true;
}

bool conninfo_valid(const std::string &conninfo, std::string &error) {
    char *err = nullptr;
    PQconninfoOption *opts = PQconninfoParse(conninfo.c_str(), &err);
    if (opts == nullptr) {
        error = err ? err : "out of memory";
        while (!error.empty() && (error.back() == '\n' || error.back() == ' '))
            error.pop_back();
        if (err)
            PQfreemem(err);
        return false;
    }
    PQconninfoFree(opts);
    return true;
}

std::string usage_text() {
    return "Usage: tenancy-gateway [options]\n"
           "Options (each also read from its environment variable; a flag wins):\n"
           "  --listen ADDR              TENANCY_LISTEN               address to bind "
           "(default 127.0.0.1)\n"
           "  --port N                   TENANCY_PORT                 TCP port (default 8080)\n"
           "  --database-url CONNINFO    TENANCY_DATABASE_URL         libpq conninfo or URI "
           "(required)\n"
           "  --pool-size N              TENANCY_POOL_SIZE            max database connections "
           "(default 8)\n"
           "  --pool-timeout-ms N        TENANCY_POOL_TIMEOUT_MS      wait for a free connection "
           "(default 2000)\n"
           "  --threads N                TENANCY_THREADS              HTTP worker threads kept "
           "ready; more start on demand up to --max-connections (default 16)\n"
           "  --statement-timeout-ms N   TENANCY_STATEMENT_TIMEOUT_MS bound on one statement "
           "(default 5000)\n"
           "  --audit-seal-interval-ms N TENANCY_AUDIT_SEAL_INTERVAL_MS call tenancy.audit_seal() "
           "this often (default 0: never; the extension's background sealer does it)\n"
           "  --request-read-timeout-ms N TENANCY_REQUEST_READ_TIMEOUT_MS total time to receive "
           "one request's headers and body, then 408 (default 10000)\n"
           "  --max-connections-per-peer N TENANCY_MAX_CONNECTIONS_PER_PEER open connections per "
           "client address, more get 429 (default 8)\n"
           "  --max-connections N        TENANCY_MAX_CONNECTIONS      connections served at once, "
           "more get 503 at once (default 1024)\n"
           "  --keep-alive-timeout-ms N  TENANCY_KEEP_ALIVE_TIMEOUT_MS an idle connection closes "
           "after this long (default 5000)\n"
           "  --prepared-statements on|off TENANCY_PREPARED_STATEMENTS prepare each statement once "
           "per database connection (default on; off behind a transaction pooler such as "
           "pgbouncer)\n"
           "  --tls-cert FILE            TENANCY_TLS_CERT             serve HTTPS with this PEM "
           "certificate chain (with --tls-key)\n"
           "  --tls-key FILE             TENANCY_TLS_KEY              the certificate's PEM "
           "private key\n"
           "  --replica-url CONNINFO     TENANCY_REPLICA_URL          a hot standby that serves "
           "GETs (default: none)\n"
           "  --replica-max-lag-ms N     TENANCY_REPLICA_MAX_LAG_MS   GETs go to the primary while "
           "the standby lags more (default 1000)\n"
           "  --smtp-url URL             TENANCY_SMTP_URL             deliver the outbox to "
           "smtp://host:port "
           "(STARTTLS when offered) or smtps://host:port (default: no mailer)\n"
           "  --smtp-from ADDR           TENANCY_SMTP_FROM            sender address (required "
           "with "
           "--smtp-url)\n"
           "  --public-base-url URL      TENANCY_PUBLIC_BASE_URL      base of links in mails "
           "(required with --smtp-url)\n"
           "                             TENANCY_SMTP_USER, TENANCY_SMTP_PASSWORD  SMTP login "
           "(environment only; needs TLS)\n"
           "  --smtp-timeout-ms N        TENANCY_SMTP_TIMEOUT_MS      bound on sending one message "
           "(default 30000)\n"
           "  --smtp-batch N             TENANCY_SMTP_BATCH           rows claimed per round "
           "(default 10)\n"
           "  --smtp-poll-ms N           TENANCY_SMTP_POLL_MS         pause between rounds "
           "(default 1000)\n"
           "  --smtp-retry-base-ms N     TENANCY_SMTP_RETRY_BASE_MS   first retry delay, doubling "
           "with jitter (default 30000)\n"
           "  --smtp-retry-max-ms N      TENANCY_SMTP_RETRY_MAX_MS    longest retry delay "
           "(default 3600000)\n"
           "  --help                     print this help and exit\n";
}

ConfigResult parse_config(const std::vector<std::string> &args, const EnvLookup &env) {
    ConfigResult result;
    Config &c = result.config;
    std::string error;

    // Environment first, so flags override it.
    for (const auto &o : kStringOptions) {
        const char *v = env ? env(o.env) : nullptr;
        if (v != nullptr && *v != '\0')
            c.*o.field = v;
    }
    for (const auto &o : kIntOptions) {
        const char *v = env ? env(o.env) : nullptr;
        if (v != nullptr && *v != '\0' && !set_int(c, o, v, o.env, error))
            return fail(error);
    }
    for (const auto &o : kBoolOptions) {
        const char *v = env ? env(o.env) : nullptr;
        if (v != nullptr && *v != '\0' && !set_bool(c, o, v, o.env, error))
            return fail(error);
    }

    for (size_t i = 0; i < args.size(); ++i) {
        const std::string &arg = args[i];
        if (arg == "--help" || arg == "-h") {
            result.kind = ConfigResult::Kind::help;
            result.message = usage_text();
            return result;
        }
        std::string name = arg, value;
        bool inline_value = false;
        auto eq = arg.find('=');
        if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            inline_value = true;
        }
        const StringOption *so = nullptr;
        const IntOption *io = nullptr;
        for (const auto &o : kStringOptions)
            if (name == o.flag)
                so = &o;
        for (const auto &o : kIntOptions)
            if (name == o.flag)
                io = &o;
        const BoolOption *bo = nullptr;
        for (const auto &o : kBoolOptions)
            if (name == o.flag)
                bo = &o;
        if (so == nullptr && io == nullptr && bo == nullptr)
            return fail("unknown option \"" + arg + "\"");
        if (!inline_value) {
            if (i + 1 >= args.size())
                return fail("option " + name + " needs a value");
            value = args[++i];
        }
        if (so != nullptr) {
            if (value.empty())
                return fail("option " + name + " needs a non-empty value");
            c.*so->field = value;
        } else if (bo != nullptr) {
            if (!set_bool(c, *bo, value, name, error))
                return fail(error);
        } else if (!set_int(c, *io, value, name, error)) {
            return fail(error);
        }
    }

    if (c.database_url.empty())
        return fail("a database is required: --database-url or TENANCY_DATABASE_URL");
    if (!conninfo_valid(c.database_url, error))
        return fail("invalid database URL: " + error);
    if (c.tls_cert.empty() != c.tls_key.empty())
        return fail(
            "TLS needs both --tls-cert and --tls-key (or TENANCY_TLS_CERT and "
            "TENANCY_TLS_KEY)");
    if (!c.replica_url.empty() && !conninfo_valid(c.replica_url, error))
        return fail("invalid replica URL: " + error);
    if (env) {
        const char *user = env("TENANCY_SMTP_USER"), *password = env("TENANCY_SMTP_PASSWORD");
        c.smtp_user = user ? user : "";
        c.smtp_password = password ? password : "";
    }
    if (!c.smtp_url.empty()) {
        if (!smtp_url_valid(c.smtp_url))
            return fail("invalid SMTP URL (expected smtp://host:port or smtps://host:port): " +
                        c.smtp_url);
        if (!plain_address(c.smtp_from))
            return fail("a mailer needs --smtp-from with a plain address (user@domain)");
        if (c.public_base_url.rfind("https://", 0) != 0 &&
            c.public_base_url.rfind("http://", 0) != 0)
            return fail("a mailer needs --public-base-url starting with https:// or http://");
        if (c.smtp_retry_max_ms < c.smtp_retry_base_ms)
            return fail("--smtp-retry-max-ms must be at least --smtp-retry-base-ms");
    }
    return result;
}

}  // namespace tenancy::gateway
