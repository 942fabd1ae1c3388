// Authenticated /v1 requests (see api_request.hpp).
#include "api_request.hpp"

#include "log.hpp"

#include <strings.h>

namespace tenancy::gateway {

std::optional<std::string> bearer_credential(const std::string &authorization) {
    constexpr size_t kScheme = 7;  // "Bearer "
    if (authorization.size() <= kScheme ||
        strncasecmp(authorization.c_str(), "bearer ", kScheme) != 0)
        return std::nullopt;
    size_t start = authorization.find_first_not_of(' ', kScheme);
    if (start == std::string::npos)
        return std::nullopt;
    std::string credential = authorization.substr(start);
    // Credentials are short printable tokens; anything else is not one.
    if (credential.size() > 512)
        return std::nullopt;
    for (char c : credential)
        if (c <= 0x20 || c >= 0x7f)
            return std::nullopt;
    return credential;
}

namespace {

// What a 5xx answer says: the cause (possibly internals) stays in the log.
constexpr const char *kServerFailureDetail = "the request failed; the gateway log has the cause";

// How far a request's transaction got: a failure at a stage means every
// stage before it succeeded. Restricted: the credential was accepted, but its
// context may only complete its second factor or change its password.
enum class Stage { Role, Authenticate, Restricted, ActAs, Handler, Record };

// The SQLSTATE the database raises for what a restricted context may not do;
// problem_for_sqlstate() turns it into the answer.
const char *restricted_sqlstate(const std::string &role) {
    if (role == "mfa_pending")
        return "28T01";
    if (role == "password_change")
        return "28T02";
    return nullptr;
}

// Drops to tenancy_app, authenticates (reading the context's role in the same
// round trip) and acts in account when one is named. A restricted context
// (MFA pending, password to change) is refused before anything else runs
// unless the route allows it (or the request is only being recorded).
void enter_context(Tx &tx, const std::string &credential, const std::string &account, Stage *stage,
                   RestrictedContext restricted) {
    *stage = Stage::Role;
    tx.exec("SET LOCAL ROLE tenancy_app");
    *stage = Stage::Authenticate;
    // OFFSET 0 keeps the subquery, so authenticate() runs before current_role_name().
    Result r = tx.exec(
        "SELECT tenancy.current_role_name() FROM (SELECT tenancy.authenticate($1) OFFSET 0) a",
        {credential});
    if (const char *sqlstate = restricted_sqlstate(r.value(0, 0).value_or(""))) {
        *stage = Stage::Restricted;
        if (restricted == RestrictedContext::refuse) {
            Problem p = problem_for_sqlstate(sqlstate);
            p.detail = p.code == "mfa_required"
                           ? "this session must complete multi-factor authentication first"
                           : "this session must change its password first";
            throw ApiError{p};
        }
        return;  // a restricted context cannot switch accounts
    }
    if (!account.empty()) {
        *stage = Stage::ActAs;
        tx.exec("SELECT tenancy.act_as($1)", {account});
    }
}

void record_request(Tx &tx, const std::string &route, const std::string &method, int status,
                    const std::string &request_id) {
    nlohmann::json detail = {
        {"method", method}, {"route", route}, {"status", status}, {"request_id", request_id}};
    tx.exec("SELECT tenancy.audit_event('api.request', $1, $2::jsonb)", {route, detail.dump()});
}

// The problem for a failed transaction. Our functions' messages for client
// errors are written for the caller ("account \"x\" not found"); a 5xx
// message may carry internals and stays in the log.
Problem problem_for_failure(const TxError &error) {
    Problem p = problem_for_sqlstate(error.sqlstate);
    p.detail = p.status < 500 ? error.message : kServerFailureDetail;
    return p;
}

}  // namespace

void run_api_request(DbPool &pool, const std::string &route, const httplib::Request &req,
                     httplib::Response &res, const ApiHandler &handler,
                     RestrictedContext restricted) {
    const std::string request_id = request_id_of(res);
    std::optional<std::string> credential =
        bearer_credential(req.get_header_value("Authorization"));
    if (!credential) {
        res.set_header("WWW-Authenticate", "Bearer");
        send_problem(
            res, problem_for_status(401, "send Authorization: Bearer <API key or session token>"));
        return;
    }
    const std::string account = req.get_header_value(kAccountHeader);

    Stage stage = Stage::Role;
    ApiAnswer answer;
    std::optional<Problem> refused;
    TxOutcome outcome;
    try {
        outcome = run_transaction(pool, [&](Tx &tx) {
            enter_context(tx, *credential, account, &stage, restricted);
            stage = Stage::Handler;
            answer = handler(tx, req);
            stage = Stage::Record;
            record_request(tx, route, req.method, answer.status, request_id);
        });
    } catch (const ApiError &e) {
        refused = e.problem;
    } catch (const std::exception &e) {
        log_event("error", "api handler failed",
                  {{"request_id", request_id}, {"route", route}, {"error", e.what()}});
        refused = problem_for_status(500, kServerFailureDetail);
    }
    if (outcome) {
        if (answer.status == 204)
            res.status = 204;
        else
            send_json(res, answer.status, answer.body);
        return;
    }

    Problem problem = refused ? *refused : problem_for_failure(outcome.error);
    // The gateway's own database user may not become tenancy_app: a
    // deployment error, not the caller's.
    if (!refused && stage == Stage::Role && problem.status < 500) {
        log_event("error", "the gateway's database user cannot SET ROLE tenancy_app",
                  {{"request_id", request_id}, {"error", outcome.error.message}});
        problem = problem_for_status(500, kServerFailureDetail);
    }
    // Whatever authenticate() refuses (a bad, revoked or expired credential,
    // an inactive or vanished account) is a 401, not a 404 or 403.
    if (!refused && stage == Stage::Authenticate && problem.status < 500) {
        std::string detail = std::move(problem.detail);
        problem = problem_for_status(401, std::move(detail));
    }
    if (!refused && problem.status >= 500)
        log_event("error", "api request failed",
                  {{"request_id", request_id},
                   {"route", route},
                   {"sqlstate", outcome.error.sqlstate},
                   {"error", outcome.error.message}});
    if (problem.status == 401)
        res.set_header("WWW-Authenticate", "Bearer");
    send_problem(res, problem);

    // The credential was accepted, the request then refused: record it in a
    // transaction of its own (the first one rolled back). In the account the
    // request acted in, or the credential's own when switching failed or the
    // context was restricted.
    if (stage < Stage::Restricted || stage == Stage::Record)
        return;
    Stage again = Stage::Role;
    const std::string acted_in = stage > Stage::ActAs ? account : std::string();
    TxOutcome recorded = run_transaction(pool, [&](Tx &tx) {
        enter_context(tx, *credential, acted_in, &again, RestrictedContext::allow);
        record_request(tx, route, req.method, problem.status, request_id);
    });
    if (!recorded)
        log_event("warn", "refused api request not recorded in the audit log",
                  {{"request_id", request_id},
                   {"route", route},
                   {"sqlstate", recorded.error.sqlstate},
                   {"error", recorded.error.message}});
}

}  // namespace tenancy::gateway
