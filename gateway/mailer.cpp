// See mailer.hpp.
#include "mailer.hpp"

#include "log.hpp"

namespace tenancy::gateway {
namespace {

// A failing database or mail server is reported once a minute, not every round.
constexpr auto kErrorLogEvery = std::chrono::seconds(60);

std::string millis(std::chrono::milliseconds ms) {
    return std::to_string(ms.count()) + " milliseconds";
}

nlohmann::json parse_object(const std::optional<std::string> &text) {
    nlohmann::json j = nlohmann::json::parse(text.value_or("{}"), nullptr, false);
    return j.is_object() ? j : nlohmann::json::object();
}

const char *kind_name(SmtpOutcome::Kind k) {
    switch (k) {
        case SmtpOutcome::Kind::sent:
            return "sent";
        case SmtpOutcome::Kind::temporary:
            return "temporary";
        case SmtpOutcome::Kind::permanent:
            return "permanent";
    }
    return "?";
}

}  // namespace

Mailer::Mailer(DbPool &pool, MailerOptions options) : pool_(pool), options_(std::move(options)) {
    smtp_global_init();
    options_.smtp.url = smtp_url_with_domain(options_.smtp.url, address_domain(options_.smtp.from));
    thread_ = std::thread([this] { loop(); });
}

Mailer::~Mailer() {
    stop();
}

void Mailer::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id())
        thread_.join();
}

bool Mailer::stopping() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stopping_;
}

std::chrono::seconds Mailer::lease() const {
    auto per_message = std::chrono::duration_cast<std::chrono::seconds>(options_.smtp.timeout) +
                       std::chrono::seconds(1);
    return per_message * options_.batch + std::chrono::seconds(30);
}

void Mailer::loop() {
    auto last_error_log = std::chrono::steady_clock::time_point{};
    log_event("info", "mailer started",
              {{"claimer", options_.claimer},
               {"batch", options_.batch},
               {"lease_s", static_cast<long long>(lease().count())}});
    for (;;) {
        bool more = false;
        try {
            more = round();
        } catch (const DbError &e) {
            auto now = std::chrono::steady_clock::now();
            if (now - last_error_log >= kErrorLogEvery) {
                last_error_log = now;
                log_event("warn", "mailer round failed",
                          {{"sqlstate", e.sqlstate()}, {"error", e.what()}});
            }
        } catch (const std::exception &e) {
            log_event("error", "mailer round failed", {{"error", e.what()}});
        }
        std::unique_lock<std::mutex> lock(mutex_);
        if (more ? stopping_ : wake_.wait_for(lock, options_.poll, [this] { return stopping_; }))
            break;
    }
    log_event("info", "mailer stopped",
              {{"sent", stats_.sent.load()},
               {"retried", stats_.retried.load()},
               {"failed", stats_.failed.load()}});
}

void Mailer::sample_queue(PGconn *conn) {
    Result q = exec_params(conn, "SELECT depth, oldest_age_s FROM tenancy.mail_queue()", {},
                           pool_.client_statement_timeout());
    stats_.queue_depth = std::stoll(q.value(0, 0).value_or("0"));
    stats_.oldest_unsent_age_s = std::stod(q.value(0, 1).value_or("0"));
}

bool Mailer::round() {
    // Outcomes the database could not take last time go first: claiming
    // before them would take those rows back and send them again.
    while (!pending_.empty()) {
        if (!mark(pending_.front()))
            return false;
        pending_.erase(pending_.begin());
    }
    std::vector<OutboxMail> mails;
    {
        DbPool::Lease lease_conn = pool_.acquire();
        sample_queue(lease_conn.get());
        Result r = exec_params(
            lease_conn.get(),
            "SELECT id, coalesce(kind, ''), recipient, subject, body, data::text, branding::text, "
            "message_id, attempts FROM tenancy.mail_claim($1, $2::integer, $3::interval)",
            {options_.claimer, std::to_string(options_.batch),
             std::to_string(lease().count()) + " seconds"},
            pool_.client_statement_timeout());
        for (int i = 0; i < r.rows(); ++i) {
            OutboxMail m;
            m.id = std::stoll(r.value(i, 0).value_or("0"));
            m.kind = r.value(i, 1).value_or("");
            m.recipient = r.value(i, 2).value_or("");
            m.subject = r.value(i, 3).value_or("");
            m.body = r.value(i, 4).value_or("");
            m.data = parse_object(r.value(i, 5));
            m.branding = parse_object(r.value(i, 6));
            m.message_id = r.value(i, 7).value_or("");
            m.attempts = std::stoi(r.value(i, 8).value_or("0"));
            mails.push_back(std::move(m));
        }
    }  // no pooled connection is held while talking to the mail server
    for (const OutboxMail &m : mails) {
        if (stopping())
            break;  // the rest stay leased to this claimer
        SmtpOutcome outcome;
        if (!plain_address(m.recipient)) {
            outcome.kind = SmtpOutcome::Kind::permanent;
            outcome.message = "the recipient address cannot be used in SMTP";
        } else {
            MailContent content = render_mail(m, options_.public_base_url);
            outcome = smtp_send(options_.smtp, m.recipient,
                                build_message(m, content, options_.smtp.from, rfc5322_now()));
        }
        // No recipient in the log (personal data); the server's code says why.
        log_event(outcome.kind == SmtpOutcome::Kind::sent ? "info" : "warn", "mail",
                  {{"outbox_id", m.id},
                   {"outcome", kind_name(outcome.kind)},
                   {"smtp_code", outcome.code},
                   {"attempt", m.attempts + 1}});
        Mark mk{m.id, outcome};
        if (!mark(mk)) {
            pending_.push_back(mk);
            return false;
        }
    }
    return static_cast<int>(mails.size()) == options_.batch;
}

bool Mailer::mark(const Mark &m) {
    try {
        DbPool::Lease conn = pool_.acquire();
        const std::string id = std::to_string(m.id);
        Result r;
        switch (m.outcome.kind) {
            case SmtpOutcome::Kind::sent:
                r = exec_params(conn.get(), "SELECT tenancy.mail_sent($1::bigint, $2)",
                                {id, options_.claimer}, pool_.client_statement_timeout());
                ++stats_.sent;
                break;
            case SmtpOutcome::Kind::temporary:
                r = exec_params(conn.get(),
                                "SELECT tenancy.mail_retry($1::bigint, $2, $3, $4::interval, "
                                "$5::interval) IS NOT NULL",
                                {id, options_.claimer, m.outcome.message,
                                 millis(options_.retry_base), millis(options_.retry_cap)},
                                pool_.client_statement_timeout());
                ++stats_.retried;
                break;
            case SmtpOutcome::Kind::permanent:
                r = exec_params(conn.get(), "SELECT tenancy.mail_failed($1::bigint, $2, $3)",
                                {id, options_.claimer, m.outcome.message},
                                pool_.client_statement_timeout());
                ++stats_.failed;
                break;
        }
        if (r.value(0, 0).value_or("f") != "t")
            log_event("warn", "mail outcome not recorded: the row is no longer this mailer's",
                      {{"outbox_id", m.id}, {"outcome", kind_name(m.outcome.kind)}});
        return true;
    } catch (const DbError &e) {
        log_event("warn", "mail outcome not recorded yet (database)",
                  {{"outbox_id", m.id}, {"sqlstate", e.sqlstate()}, {"error", e.what()}});
        return false;
    }
}

}  // namespace tenancy::gateway
