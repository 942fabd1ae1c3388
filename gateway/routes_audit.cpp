// The audit log of an account's subtree (SPEC section 7):
//   GET /v1/accounts/{id}/audit-log          sealed entries, newest first
//       ?actor=&action=&from=&to=&cursor=&limit=  (limit 1..500, default 50)
//       -> {"data": [entry...], "next_cursor": "<position>" | null}
//   GET /v1/accounts/{id}/audit-log/verify   -> {ok, entries, first_bad, reason}
// {id} must be the acted-in account or a descendant (else 404, as for any
// account the caller cannot see); the caller's role must may read `audit`
// (else 403: sub-users and member roles do not read the log).
//
// Entries come from tenancy.audit_trail: those the sealer has linked (it runs
// every ~200 ms), each with its chain position, which is also the cursor.
#include "api_request.hpp"

#include <cctype>

namespace tenancy::gateway {
namespace {

constexpr int kDefaultLimit = 50;
constexpr int kMaxLimit = 500;

[[noreturn]] void refuse(int status, std::string detail) {
    throw ApiError{problem_for_status(status, std::move(detail))};
}

std::optional<std::string> query_param(const httplib::Request &req, const char *name) {
    if (!req.has_param(name))
        return std::nullopt;
    return req.get_param_value(name);
}

// A positive decimal integer of at most max_digits digits, or nullopt.
std::optional<long long> positive_integer(const std::string &s, size_t max_digits) {
    if (s.empty() || s.size() > max_digits)
        return std::nullopt;
    for (char c : s)
        if (!std::isdigit(static_cast<unsigned char>(c)))
            return std::nullopt;
    long long v = std::stoll(s);
    return v > 0 ? std::optional<long long>(v) : std::nullopt;
}

// The account's path, when the caller may read its log.
std::string readable_account_path(Tx &tx, const std::string &account) {
    Result r = tx.exec(
        "SELECT a.path::text, tenancy.may('audit', 'read') FROM tenancy.accounts a "
        "WHERE a.public_id = $1",
        {account});
    if (r.rows() == 0)
        refuse(404, "account \"" + account + "\" not found");
    if (r.value(0, 1) != std::optional<std::string>("t"))
        refuse(403, "this credential's role may not read the audit log");
    return r.value(0, 0).value_or("");
}

ApiAnswer list_entries(Tx &tx, const httplib::Request &req) {
    const std::string account = req.matches[1];
    int limit = kDefaultLimit;
    if (auto l = query_param(req, "limit")) {
        auto v = positive_integer(*l, 3);
        if (!v || *v > kMaxLimit)
            refuse(422, "limit must be an integer from 1 to " + std::to_string(kMaxLimit));
        limit = static_cast<int>(*v);
    }
    std::optional<std::string> cursor = query_param(req, "cursor");
    if (cursor && !positive_integer(*cursor, 18))
        refuse(422, "cursor must be a next_cursor value of an earlier page");

    Params params = {
        readable_account_path(tx, account), query_param(req, "actor"), query_param(req, "action"),
        query_param(req, "from"),           query_param(req, "to"),    cursor,
        std::to_string(limit + 1)};
    // block_pos <= chain_pos: the cursor bounds the chain's key range too.
    Result r = tx.exec(
        "SELECT jsonb_build_object('position', t.chain_pos, 'id', t.id, 'at', t.at, "
        "'account_path', t.account_path::text, 'actor', jsonb_build_object('kind', t.actor_kind, "
        "'id', t.actor_id, 'credential_id', t.credential_id), 'action', t.action, 'target', "
        "t.target, "
        "'row_key', t.row_key, 'change', t.change, 'digest', encode(t.digest, 'hex'), "
        "'sealed_at', t.sealed_at)::text, t.chain_pos "
        "FROM tenancy.audit_trail t "
        "WHERE t.account_path OPERATOR(tenancy.<@) $1::tenancy.account_path "
        "AND ($2::text IS NULL OR t.actor_id = $2) AND ($3::text IS NULL OR t.action = $3) "
        "AND ($4::timestamptz IS NULL OR t.at >= $4) AND ($5::timestamptz IS NULL OR t.at < $5) "
        "AND ($6::bigint IS NULL OR (t.chain_pos < $6 AND t.block_pos < $6)) "
        "ORDER BY t.block_pos DESC, t.chain_pos DESC LIMIT $7::integer",
        params);
    nlohmann::json data = nlohmann::json::array();
    int shown = std::min(r.rows(), limit);
    for (int i = 0; i < shown; i++)
        data.push_back(nlohmann::json::parse(r.value(i, 0).value_or("{}")));
    nlohmann::json next = nullptr;
    if (r.rows() > limit)
        next = r.value(shown - 1, 1).value_or("");
    return ApiAnswer{200, {{"data", data}, {"next_cursor", next}}};
}

ApiAnswer verify_chain(Tx &tx, const httplib::Request &req) {
    const std::string account = req.matches[1];
    readable_account_path(tx, account);
    Result r =
        tx.exec("SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify($1)", {account});
    if (r.rows() == 0)
        refuse(404, "account \"" + account + "\" has no audit chain");
    nlohmann::json first_bad = nullptr;
    if (auto b = r.value(0, 2))
        first_bad = std::stoll(*b);
    return ApiAnswer{200,
                     {{"ok", r.value(0, 0) == std::optional<std::string>("t")},
                      {"entries", std::stoll(r.value(0, 1).value_or("0"))},
                      {"first_bad", first_bad},
                      {"reason", r.value(0, 3).value_or("")}}};
}

}  // namespace

void register_audit_routes(HttpServer &server, DbPool &pool) {
    server.route("GET", R"(/v1/accounts/([^/]+)/audit-log)",
                 [&pool](const httplib::Request &req, httplib::Response &res) {
                     run_api_request(pool, "GET /v1/accounts/{id}/audit-log", req, res,
                                     list_entries);
                 });
    server.route("GET", R"(/v1/accounts/([^/]+)/audit-log/verify)",
                 [&pool](const httplib::Request &req, httplib::Response &res) {
                     run_api_request(pool, "GET /v1/accounts/{id}/audit-log/verify", req, res,
                                     verify_chain);
                 });
}

}  // namespace tenancy::gateway
