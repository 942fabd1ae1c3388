// See smtp_client.hpp.
#include "smtp_client.hpp"

#include <curl/curl.h>

#include <cstring>
#include <mutex>

namespace tenancy::gateway {
namespace {

struct Upload {
    const std::string *data;
    size_t offset = 0;
};

size_t read_upload(char *buffer, size_t size, size_t nitems, void *userdata) {
    auto *u = static_cast<Upload *>(userdata);
    size_t n = std::min(size * nitems, u->data->size() - u->offset);
    std::memcpy(buffer, u->data->data() + u->offset, n);
    u->offset += n;
    return n;
}

// The server's replies, from libcurl's debug stream: the last complete one
// and the last refusal (4xx/5xx; the QUIT that follows it answers 221). A
// reply ends with a line "NNN text"; "NNN-text" lines continue it.
struct Replies {
    std::string current, last, last_refusal;
};

int on_debug(CURL *, curl_infotype type, char *data, size_t size, void *userdata) {
    if (type != CURLINFO_HEADER_IN)
        return 0;
    auto *r = static_cast<Replies *>(userdata);
    std::string line(data, size);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
        line.pop_back();
    if (!r->current.empty())
        r->current += " ";
    r->current += line;
    if (line.size() < 4 || line[3] != '-') {
        r->last = r->current;
        if (!r->last.empty() && (r->last[0] == '4' || r->last[0] == '5'))
            r->last_refusal = r->last;
        r->current.clear();
    }
    return 0;
}

}  // namespace

void smtp_global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool smtp_url_valid(const std::string &url) {
    for (const char *scheme : {"smtp://", "smtps://"}) {
        size_t n = std::strlen(scheme);
        if (url.compare(0, n, scheme) == 0 && url.size() > n && url[n] != '/' && url[n] != ':')
            return url.find_first_of(" \t\r\n") == std::string::npos;
    }
    return false;
}

std::string smtp_url_with_domain(const std::string &url, const std::string &domain) {
    size_t host = url.find("://");
    if (host == std::string::npos || domain.empty())
        return url;
    size_t slash = url.find('/', host + 3);
    if (slash != std::string::npos && slash + 1 < url.size())
        return url;  // the operator named the EHLO domain
    return url.substr(0, slash == std::string::npos ? url.size() : slash) + "/" + domain;
}

SmtpOutcome smtp_send(const SmtpOptions &o, const std::string &recipient,
                      const std::string &message) {
    SmtpOutcome out;
    CURL *curl = curl_easy_init();
    if (curl == nullptr) {
        out.message = "curl_easy_init failed";
        return out;
    }
    Upload upload{&message};
    Replies replies;
    char error[CURL_ERROR_SIZE] = {0};
    std::string from = "<" + o.from + ">";
    curl_slist *rcpt = curl_slist_append(nullptr, ("<" + recipient + ">").c_str());
    const bool smtps = o.url.rfind("smtps://", 0) == 0;

    curl_easy_setopt(curl, CURLOPT_URL, o.url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from.c_str());
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_upload);
    curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(message.size()));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(o.timeout.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min<long long>(o.timeout.count(), 10000)));
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(curl, CURLOPT_VERBOSE, 1L);  // only for the debug callback below
    curl_easy_setopt(curl, CURLOPT_DEBUGFUNCTION, on_debug);
    curl_easy_setopt(curl, CURLOPT_DEBUGDATA, &replies);
    if (!smtps)
        // STARTTLS when offered; required before sending a password.
        curl_easy_setopt(
            curl, CURLOPT_USE_SSL,
            o.user.empty() ? static_cast<long>(CURLUSESSL_TRY) : static_cast<long>(CURLUSESSL_ALL));
    if (!o.user.empty()) {
        curl_easy_setopt(curl, CURLOPT_USERNAME, o.user.c_str());
        curl_easy_setopt(curl, CURLOPT_PASSWORD, o.password.c_str());
    }

    CURLcode res = curl_easy_perform(curl);
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(rcpt);
    curl_easy_cleanup(curl);

    out.code = static_cast<int>(code);
    if (res == CURLE_OK) {
        out.kind = SmtpOutcome::Kind::sent;
        out.message = replies.last;
        return out;
    }
    // The server's own words when it gave a reply code, else curl's.
    out.message = !replies.last_refusal.empty() && code >= 400
                      ? replies.last_refusal
                      : std::string(error[0] ? error : curl_easy_strerror(res));
    // A 5xx about this message is permanent; a refused login (535) or a
    // TLS requirement (530) is the operator's to fix: keep retrying.
    const bool login_trouble = res == CURLE_LOGIN_DENIED || res == CURLE_USE_SSL_FAILED ||
                               code == 530 || code == 534 || code == 535 || code == 538;
    out.kind = code >= 500 && code <= 599 && !login_trouble ? SmtpOutcome::Kind::permanent
                                                            : SmtpOutcome::Kind::temporary;
    return out;
}

}  // namespace tenancy::gateway
