// Sends one message over SMTP with libcurl (smtp:// with STARTTLS when the
// server offers it, required when credentials are set; smtps:// implicit TLS)
// and says whether a failure is worth retrying.
#pragma once

#include <chrono>
#include <string>

namespace tenancy::gateway {

struct SmtpOptions {
    std::string url;  // smtp://host:port or smtps://host:port
    std::string from;
    std::string user, password;  // empty: no AUTH
    std::chrono::milliseconds timeout{30000};
};

struct SmtpOutcome {
    enum class Kind { sent, temporary, permanent } kind = Kind::temporary;
    int code = 0;         // the server's last reply code, 0 when none came
    std::string message;  // the server's last reply line(s), or curl's reason
};

// Once per process, before any thread sends (curl_global_init).
void smtp_global_init();

// 5xx: permanent; 4xx, no answer, connection refused, timeout, TLS or
// authentication trouble: temporary (an operator can fix those and the
// message still goes).
SmtpOutcome smtp_send(const SmtpOptions &options, const std::string &recipient,
                      const std::string &message);

// The URL with the EHLO domain as its path (libcurl's way to name it):
// smtp://host:port -> smtp://host:port/<domain>. Kept as is when it has a path.
std::string smtp_url_with_domain(const std::string &url, const std::string &domain);

// Whether url starts with smtp:// or smtps:// and names a host.
bool smtp_url_valid(const std::string &url);

}  // namespace tenancy::gateway
