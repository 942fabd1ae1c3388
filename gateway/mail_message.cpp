// See mail_message.hpp. HTML is built here, not in SQL: the public base URL
// is this gateway's configuration, escaping and MIME belong with the
// transport, and a template change needs no extension upgrade.
#include "mail_message.hpp"

#include <ctime>
#include <optional>

namespace tenancy::gateway {
namespace {

using nlohmann::json;

std::optional<std::string> text_field(const json &obj, const char *name) {
    if (!obj.is_object())
        return std::nullopt;
    auto it = obj.find(name);
    if (it == obj.end() || !it->is_string() || it->get_ref<const std::string &>().empty())
        return std::nullopt;
    return it->get<std::string>();
}

bool is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// "#rgb" or "#rrggbb", else nullopt: a colour goes into a style attribute.
std::optional<std::string> css_colour(const json &branding) {
    std::optional<std::string> c = text_field(branding, "primary_color");
    if (!c && branding.is_object() && branding.contains("colors"))
        c = text_field(branding["colors"], "primary");
    if (!c || (c->size() != 4 && c->size() != 7) || (*c)[0] != '#')
        return std::nullopt;
    for (size_t i = 1; i < c->size(); ++i)
        if (!is_hex((*c)[i]))
            return std::nullopt;
    return c;
}

std::optional<std::string> logo_url(const json &branding) {
    std::optional<std::string> u = text_field(branding, "logo_url");
    if (!u || u->size() > 2000 || !(u->rfind("https://", 0) == 0 || u->rfind("http://", 0) == 0))
        return std::nullopt;
    for (unsigned char ch : *u)
        if (ch <= 0x20 || ch >= 0x7f)
            return std::nullopt;
    return u;
}

std::string brand_name(const json &branding) {
    if (auto n = text_field(branding, "name"))
        return *n;
    if (auto n = text_field(branding, "account_name"))
        return *n;
    return "Tenancy";
}

std::string trim_slash(std::string url) {
    while (!url.empty() && url.back() == '/')
        url.pop_back();
    return url;
}

// One paragraph of HTML from text: escaped, newlines as <br>.
std::string html_paragraph(const std::string &text) {
    std::string out = "<p style=\"margin:0 0 16px 0\">";
    for (char ch : html_escape(text)) {
        if (ch == '\n')
            out += "<br>";
        else
            out.push_back(ch);
    }
    return out + "</p>\n";
}

struct Page {
    std::string brand, colour, subject;
    std::optional<std::string> logo;
    std::string inner;  // HTML of the message's body
};

std::string page_html(const Page &p) {
    std::string h =
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html_escape(p.subject) +
        "</title></head>\n"
        "<body "
        "style=\"margin:0;padding:0;background:#f4f4f4;font-family:Arial,Helvetica,sans-serif\">\n"
        "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\"><tr>"
        "<td align=\"center\" style=\"padding:24px\">\n"
        "<table role=\"presentation\" width=\"600\" cellpadding=\"0\" cellspacing=\"0\" "
        "style=\"max-width:600px;background:#ffffff\">\n"
        "<tr><td style=\"background:" +
        p.colour + ";color:#ffffff;padding:16px 24px;font-size:20px;font-weight:bold\">";
    if (p.logo)
        h += "<img src=\"" + html_escape(*p.logo) + "\" alt=\"" + html_escape(p.brand) +
             "\" height=\"32\" style=\"vertical-align:middle;margin-right:12px;border:0\">";
    h += html_escape(p.brand) +
         "</td></tr>\n<tr><td style=\"padding:24px;color:#222222;font-size:15px;"
         "line-height:1.5\">\n" +
         p.inner + "</td></tr>\n</table>\n</td></tr></table>\n</body></html>\n";
    return h;
}

std::string button(const std::string &href, const std::string &label, const std::string &colour) {
    return "<p style=\"margin:0 0 16px 0\"><a href=\"" + html_escape(href) +
           "\" style=\"display:inline-block;background:" + colour +
           ";color:#ffffff;padding:10px 18px;border-radius:4px;text-decoration:none\">" +
           html_escape(label) + "</a></p>\n";
}

std::string code_line(const std::string &text) {
    return "<p style=\"margin:0 0 16px 0\"><code style=\"font-size:14px;background:#f0f0f0;"
           "padding:4px 6px\">" +
           html_escape(text) + "</code></p>\n";
}

std::optional<MailContent> render_invitation(const OutboxMail &m, const std::string &base,
                                             Page &page) {
    auto account = text_field(m.data, "account");
    auto role = text_field(m.data, "role");
    auto token = text_field(m.data, "token");
    if (!account || !role || !token)
        return std::nullopt;
    std::string expires = text_field(m.data, "expires_at").value_or("7 days from sending");
    std::string link = base + "/invitations/accept?token=" + url_component(*token);
    MailContent c;
    std::string intro = "You have been invited to " + *account + " as " + *role + ".";
    c.text = page.brand + "\n\n" + intro + "\n\nAccept the invitation:\n" + link +
             "\n\nOr accept with this token (single use, valid until " + expires + "):\n" + *token +
             "\n\nIf you did not expect this invitation, ignore this email.\n";
    page.inner =
        html_paragraph(intro) + button(link, "Accept the invitation", page.colour) +
        html_paragraph("Or accept with this token (single use, valid until " + expires + "):") +
        code_line(*token) +
        html_paragraph("If you did not expect this invitation, ignore this email.");
    c.html = page_html(page);
    return c;
}

std::optional<MailContent> render_sub_user(const OutboxMail &m, const std::string &base,
                                           Page &page) {
    auto name = text_field(m.data, "name");
    auto surname = text_field(m.data, "surname");
    auto account = text_field(m.data, "account");
    auto main_email = text_field(m.data, "main_account_email");
    auto email = text_field(m.data, "email");
    auto password = text_field(m.data, "temp_password");
    if (!name || !surname || !account || !main_email || !email || !password)
        return std::nullopt;
    std::string expires = text_field(m.data, "expires_at").value_or("7 days from sending");
    std::string link = base + "/login";
    std::string hello = "Hello " + *name + " " + *surname + ",";
    std::string intro = "You have been given access to " + *account + " as a sub-user.";
    std::string how = "Log in on the SUB-USER tab of the login page with:";
    std::string creds = "main account email: " + *main_email + "\nsub-user email: " + *email;
    std::string change =
        "You must change this password at first login; it expires on " + expires + ".";
    MailContent c;
    c.text = page.brand + "\n\n" + hello + "\n\n" + intro + "\n\n" + how + "\n" + link +
             "\n  main account email: " + *main_email + "\n  sub-user email: " + *email +
             "\n  temporary password: " + *password + "\n\n" + change + "\n";
    page.inner = html_paragraph(hello) + html_paragraph(intro) + html_paragraph(how) +
                 button(link, "Open the login page", page.colour) + html_paragraph(creds) +
                 html_paragraph("temporary password:") + code_line(*password) +
                 html_paragraph(change);
    c.html = page_html(page);
    return c;
}

const char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(const std::string &in) {
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                     (static_cast<unsigned char>(in[i + 1]) << 8) |
                     static_cast<unsigned char>(in[i + 2]);
        out += kBase64[(v >> 18) & 63];
        out += kBase64[(v >> 12) & 63];
        out += kBase64[(v >> 6) & 63];
        out += kBase64[v & 63];
    }
    if (i + 1 == in.size()) {
        unsigned v = static_cast<unsigned char>(in[i]) << 16;
        out += kBase64[(v >> 18) & 63];
        out += kBase64[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                     (static_cast<unsigned char>(in[i + 1]) << 8);
        out += kBase64[(v >> 18) & 63];
        out += kBase64[(v >> 12) & 63];
        out += kBase64[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

// A header value: as is when printable ASCII, else RFC 2047 encoded words
// of at most 45 bytes each, cut at UTF-8 character boundaries. CR and LF
// never reach a header (they would start a new one).
std::string header_text(const std::string &value) {
    std::string clean;
    for (char ch : value)
        clean.push_back(ch == '\r' || ch == '\n' || ch == '\t' ? ' ' : ch);
    bool plain = true;
    for (unsigned char ch : clean)
        if (ch < 0x20 || ch >= 0x7f)
            plain = false;
    if (plain && clean.find("=?") == std::string::npos)
        return clean;
    std::string out;
    size_t i = 0;
    while (i < clean.size()) {
        size_t end = std::min(clean.size(), i + 45);
        while (end < clean.size() && end > i &&
               (static_cast<unsigned char>(clean[end]) & 0xC0) == 0x80)
            --end;
        if (!out.empty())
            out += "\r\n ";
        out += "=?UTF-8?B?" + base64(clean.substr(i, end - i)) + "?=";
        i = end;
    }
    return out;
}

}  // namespace

std::string html_escape(const std::string &text) {
    std::string out;
    out.reserve(text.size());
    for (char ch : text) {
        switch (ch) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out.push_back(ch);
        }
    }
    return out;
}

std::string url_component(const std::string &text) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char ch : text) {
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out.push_back(static_cast<char>(ch));
        } else {
            out.push_back('%');
            out.push_back(hex[ch >> 4]);
            out.push_back(hex[ch & 15]);
        }
    }
    return out;
}

std::string base64_lines(const std::string &bytes) {
    std::string b = base64(bytes), out;
    for (size_t i = 0; i < b.size(); i += 76)
        out += b.substr(i, 76) + "\r\n";
    return out;
}

bool plain_address(const std::string &address) {
    if (address.empty() || address.size() > 254)
        return false;
    size_t at = address.find('@');
    if (at == 0 || at == std::string::npos || at + 1 >= address.size() ||
        address.find('@', at + 1) != std::string::npos)
        return false;
    for (unsigned char ch : address)
        if (ch <= 0x20 || ch >= 0x7f || ch == '<' || ch == '>' || ch == '"' || ch == ',' ||
            ch == '(' || ch == ')' || ch == ';' || ch == '\\' || ch == '[' || ch == ']')
            return false;
    return true;
}

std::string address_domain(const std::string &address) {
    size_t at = address.rfind('@');
    return at == std::string::npos ? "" : address.substr(at + 1);
}

std::string rfc5322_now() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
                  tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

MailContent render_mail(const OutboxMail &mail, const std::string &public_base_url) {
    Page page;
    page.brand = brand_name(mail.branding);
    page.colour = css_colour(mail.branding).value_or("#1f4e79");
    page.logo = logo_url(mail.branding);
    page.subject = mail.subject;
    const std::string base = trim_slash(public_base_url);
    std::optional<MailContent> c;
    if (mail.kind == "invitation")
        c = render_invitation(mail, base, page);
    else if (mail.kind == "sub_user_credentials")
        c = render_sub_user(mail, base, page);
    if (c)
        return *c;
    // A kind this gateway does not know, or data it cannot use: the body
    // SQL wrote, as text and as preformatted HTML.
    MailContent plain;
    plain.text = mail.body;
    page.inner = "<pre style=\"font-family:inherit;white-space:pre-wrap;margin:0\">" +
                 html_escape(mail.body) + "</pre>\n";
    plain.html = page_html(page);
    return plain;
}

std::string build_message(const OutboxMail &mail, const MailContent &content,
                          const std::string &from, const std::string &date) {
    const std::string boundary = "=_tenancy_outbox_" + std::to_string(mail.id);
    std::string m;
    m += "From: " + header_text(from) + "\r\n";
    m += "To: " + header_text(mail.recipient) + "\r\n";
    m += "Subject: " + header_text(mail.subject) + "\r\n";
    m += "Date: " + date + "\r\n";
    m += "Message-ID: " + header_text(mail.message_id) + "\r\n";
    m += "MIME-Version: 1.0\r\n";
    m += "Auto-Submitted: auto-generated\r\n";
    m += "Content-Type: multipart/alternative; boundary=\"" + boundary + "\"\r\n";
    m += "\r\n";
    m += "--" + boundary + "\r\n";
    m += "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    m += base64_lines(content.text);
    m += "--" + boundary + "\r\n";
    m += "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    m += base64_lines(content.html);
    m += "--" + boundary + "--\r\n";
    return m;
}

}  // namespace tenancy::gateway
