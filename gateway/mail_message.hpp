// One outbox row as an email: the text and HTML alternatives (with the
// account's branding and links from the public base URL) and the RFC 5322
// message with MIME multipart/alternative. Pure: no I/O, unit-tested.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace tenancy::gateway {

// What tenancy.mail_claim() returns for one row.
struct OutboxMail {
    long long id = 0;
    std::string kind;  // "invitation", "sub_user_credentials", or "" (plain body)
    std::string recipient;
    std::string subject;
    std::string body;                                // the plain text written in SQL
    nlohmann::json data = nlohmann::json::object();  // template facts (may hold the secret)
    nlohmann::json branding = nlohmann::json::object();
    std::string message_id;  // <outbox-<id>.<installation>@tenancy>
    int attempts = 0;
};

struct MailContent {
    std::string text;
    std::string html;
};

// The two alternatives. Branding is tenant-controlled: only a logo URL that
// is http(s) and colours written #rgb/#rrggbb are used, everything is
// HTML-escaped, and a kind this gateway does not know falls back to body.
MailContent render_mail(const OutboxMail &mail, const std::string &public_base_url);

// The whole message: headers (From, To, Subject as RFC 2047 UTF-8, Date,
// Message-ID, MIME-Version, Auto-Submitted) and the two parts in base64,
// lines ending CRLF. date is an RFC 5322 date.
std::string build_message(const OutboxMail &mail, const MailContent &content,
                          const std::string &from, const std::string &date);

// Whether an address can go into an SMTP envelope and a header as is:
// local@domain of printable ASCII without spaces, <, >, quotes, commas or
// control characters, at most 254 bytes.
bool plain_address(const std::string &address);

// The domain of an address ("" when none).
std::string address_domain(const std::string &address);

// RFC 5322 date of now, e.g. "Mon, 07 Dec 2026 06:44:28 +0000".
std::string rfc5322_now();

std::string html_escape(const std::string &text);
std::string base64_lines(const std::string &bytes);  // 76-column lines, CRLF
std::string url_component(const std::string &text);  // percent-encoding (RFC 3986 unreserved kept)

}  // namespace tenancy::gateway
