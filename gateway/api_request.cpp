// Authenticated /v1 requests (see api_request.hpp).
#include "api_request.hpp"

#include "digest.hpp"
#include "list_page.hpp"
#include "log.hpp"
#include "read_log.hpp"
#include "replica_router.hpp"

#include <strings.h>

#include <chrono>

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

std::optional<std::string> api_key_main_id(const std::string &credential) {
    constexpr size_t kPrefix = 4;  // "tnc_"
    if (credential.compare(0, kPrefix, "tnc_") != 0)
        return std::nullopt;
    size_t end = credential.find('_', kPrefix);
    // 1 to 18 digits: any such number fits a bigint.
    if (end == std::string::npos || end == kPrefix || end - kPrefix > 18)
        return std::nullopt;
    for (size_t i = kPrefix; i < end; ++i)
        if (credential[i] < '0' || credential[i] > '9')
            return std::nullopt;
    return credential.substr(kPrefix, end - kPrefix);
}

namespace {

// What a 5xx answer says: the cause (possibly internals) stays in the log.
constexpr const char *kServerFailureDetail = "the request failed; the gateway log has the cause";

// The statements of a request, in order; a failure's stage says how far the
// request got (db_tx.hpp: kStageBegin, kStageStatement (the handler's),
// kStageCommit).
enum Stage : int { kRole = 1, kAuthenticate, kActAs, kIdempotency, kRecord };

// Authenticates and reads the context in one statement. $2: refuse a
// restricted context (28T01/28T02); $3: also return whoami()'s principal (a
// GET's record needs it). The fourth column: the context's main account
// (for ApiCall::main_hint). OFFSET 0 keeps authenticate() first.
constexpr const char *kAuthenticateSql =
    "SELECT tenancy.current_role_name(), tenancy.current_account(), "
    "CASE WHEN $3::boolean THEN (tenancy.whoami()->'principal')::text END, "
    "tenancy.current_main_id()::text, "
    "CASE WHEN $2::boolean THEN tenancy._refuse_restricted() END IS NULL "
    "FROM (SELECT tenancy.authenticate($1) OFFSET 0) a";
// Switches account and reads the main account acted in: a user may switch
// to an account of another main account.
constexpr const char *kActAsSql =
    "SELECT tenancy.current_main_id()::text FROM (SELECT tenancy.act_as($1) OFFSET 0) a";

bool is_restricted_refusal(const std::string &sqlstate) {
    return sqlstate == "28T01" || sqlstate == "28T02";
}

Problem problem_for_failure(const TxError &error) {
    Problem p = problem_for_sqlstate(error.sqlstate);
    // Our functions' messages for client errors are written for the caller
    // ("account \"x\" not found"); a 5xx message may carry internals.
    p.detail = p.status < 500 ? error.message : kServerFailureDetail;
    return p;
}

std::string utc_now() {
    auto now = std::chrono::system_clock::now();
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
    std::time_t secs = static_cast<std::time_t>(us / 1000000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long long>(us % 1000000));
    return buf;
}

// The request runs as tenancy_app. set_config, not SET LOCAL ROLE: on Citus
// a SET LOCAL statement is forwarded to the workers (that is how the context
// token reaches them), and a forwarded role would also downgrade the shard
// queries of the extension's SECURITY DEFINER functions there. set_config
// stays on the coordinator; Citus connects to the workers as tenancy_app
// (docs/operations/scale-out.md). On one node both do the same.
constexpr const char *kEnterAppRoleSql = "SELECT set_config('role', 'tenancy_app', true)";

constexpr const char *kRecordSql = "SELECT tenancy.audit_event('api.request', $1, $2::jsonb)";
constexpr const char *kRecordIfContextSql =
    "SELECT tenancy.audit_event('api.request', $1, $2::jsonb) "
    "WHERE tenancy.current_account() IS NOT NULL";

Params record_params(const Route &route, int status, const std::string &request_id) {
    const std::string label = route.method + " " + route.path;
    nlohmann::json detail = {
        {"method", route.method}, {"route", label}, {"status", status}, {"request_id", request_id}};
    return {label, detail.dump()};
}

// Queues the context statements (see kAuthenticateSql) for a bearer route;
// switched receives kActAsSql's row when account is not empty.
void enter_context(Tx &tx, const std::string &credential, const std::string &account,
                   bool refuse_restricted, bool want_principal, Result *auth,
                   Result *switched = nullptr) {
    tx.queue(kEnterAppRoleSql, {}, kRole);
    tx.queue(kAuthenticateSql,
             {credential, refuse_restricted ? "true" : "false", want_principal ? "true" : "false"},
             kAuthenticate, auth);
    if (!account.empty())
        tx.queue(kActAsSql, {account}, kActAs, switched);
}

// Records a refused request in a transaction of its own (the request's rolled
// back), in account (or the credential's own account when empty). A restricted
// context may be recorded too.
void record_refusal(DbPool &pool, const Route &route, const std::string &credential,
                    const std::string &account, int status, const std::string &request_id) {
    TxOutcome recorded = run_transaction(pool, [&](Tx &tx) {
        enter_context(tx, credential, account, false, false, nullptr);
        Params p = record_params(route, status, request_id);
        tx.exec_last(kRecordSql, p);
    });
    if (!recorded)
        log_event("warn", "refused api request not recorded in the audit log",
                  {{"request_id", request_id},
                   {"route", route.path},
                   {"sqlstate", recorded.error.sqlstate},
                   {"error", recorded.error.message}});
}

// A standby's failure that the primary would not have: it is unreachable,
// out of connections, shutting down, or cancelled a query for a conflict
// with recovery.
bool replica_failure(const std::string &sqlstate) {
    return sqlstate.rfind("08", 0) == 0 || sqlstate == "53300" || sqlstate == "57P01" ||
           sqlstate == "57P02" || sqlstate == "57P03" || sqlstate == "57014" || sqlstate == "40001";
}

void send_answer(httplib::Response &res, const ApiAnswer &answer) {
    if (answer.status == 204) {
        res.status = 204;
    } else {
        send_json(res, answer.status, answer.body);
        // A refusal a handler answers without rolling back (its count must
        // commit: a wrong MFA code) is a problem like any other.
        if (answer.status >= 400) {
            std::string body = std::move(res.body);
            res.set_content(body, kProblemContentType);
        }
    }
}

}  // namespace

void refuse(int status, std::string detail) {
    throw ApiError{problem_for_status(status, std::move(detail))};
}

void run_route(DbPool &pool, const Route &route, const httplib::Request &req,
               httplib::Response &res) {
    const std::string request_id = request_id_of(res);
    ApiCall call{req, request_id};
    std::vector<std::string> names = path_names(route.path);
    for (size_t i = 0; i < names.size() && i + 1 < req.matches.size(); ++i)
        call.path[names[i]] = req.matches[i + 1];

    const bool bearer = route.auth == Auth::bearer;
    std::optional<std::string> credential;
    if (bearer) {
        credential = bearer_credential(req.get_header_value("Authorization"));
        if (!credential) {
            res.set_header("WWW-Authenticate", "Bearer");
            send_problem(res, problem_for_status(
                                  401, "send Authorization: Bearer <API key or session token>"));
            return;
        }
    }
    const std::string account = bearer ? req.get_header_value(kAccountHeader) : std::string();
    const bool read_only = route.method == "GET";
    call.cursor_scope = cursor_scope(route, call, credential.value_or(""));
    // An API key names its main account; a session's is read from its
    // context before the handler runs (below).
    const std::optional<std::string> key_main =
        credential ? api_key_main_id(*credential) : std::nullopt;

    // Input is checked before anything runs. A bad request from a valid
    // credential is still an API call: it is answered after the credential
    // is checked (401 comes first) and recorded.
    std::optional<Problem> invalid = validate_query(route, req, call.query_values);
    if (!invalid)
        invalid = validate_body(route, req.body, call.body);
    std::optional<std::string> idempotency_key;
    if (!invalid && route.method == "POST" && req.has_header(kIdempotencyHeader)) {
        idempotency_key = req.get_header_value(kIdempotencyHeader);
        if (idempotency_key->empty() || idempotency_key->size() > 255) {
            invalid = problem_for_status(422, "Idempotency-Key must be 1 to 255 characters");
            invalid->code = "invalid_field";
            invalid->field = kIdempotencyHeader;
        }
    }

    RequestContext context;
    call.context = &context;
    Result auth;
    Result switched;
    ApiAnswer answer;
    std::optional<Problem> refused;
    bool replayed = false;
    const std::string request_hash = idempotency_key
                                         ? "\\x" + sha256_hex(route.method + " " + req.path + "\n" +
                                                              account + "\n" + call.body.dump())
                                         : std::string();
    TxOutcome outcome;
    // A GET goes to the standby when one is usable (replica_router.hpp).
    ReplicaRouter *replica = read_only ? replica_router() : nullptr;
    const bool on_replica = replica && replica->usable();
    try {
        auto body = [&](Tx &tx) {
            call.main_hint = key_main;
            if (bearer)
                enter_context(tx, *credential, account,
                              route.restricted == RestrictedContext::refuse, read_only, &auth,
                              &switched);
            else
                tx.queue(kEnterAppRoleSql, {}, kRole);
            if (bearer && !key_main && !invalid) {
                // A session token does not name its main account: one round
                // trip reads it from the context, so that on Citus the
                // handler's statements go to that main account's shard only.
                tx.flush();
                const Result &context_row = account.empty() ? auth : switched;
                const int column = account.empty() ? 3 : 0;
                if (context_row.rows() == 1)
                    call.main_hint = context_row.value(0, column);
            }
            if (invalid) {
                if (bearer)
                    tx.flush();  // runs the context statements: 401 comes before 422
                throw ApiError{*invalid};
            }
            if (idempotency_key) {
                Result stored;
                tx.queue("SELECT status, response FROM tenancy.idempotency_begin($1, $2::bytea)",
                         {*idempotency_key, request_hash}, kIdempotency, &stored);
                tx.flush();  // the handler runs only if this is the key's first request
                if (stored.rows() == 1) {
                    replayed = true;
                    answer.status = std::stoi(stored.value(0, 0).value_or("200"));
                    answer.body =
                        nlohmann::json::parse(stored.value(0, 1).value_or("null"), nullptr, false);
                }
            }
            // Recorded with the route's success status; a handler that
            // answers otherwise and does not end with exec_last gets its
            // real status rebound below. A route without a bearer (login)
            // has a context only when it succeeded.
            std::optional<size_t> record;
            if (!read_only)
                record = tx.defer(
                    bearer ? kRecordSql : kRecordIfContextSql,
                    record_params(route, replayed ? answer.status : route.status, request_id),
                    kRecord);
            if (replayed)
                return;
            if (idempotency_key)
                tx.hold_commit();
            try {
                answer = route.handler(tx, call);
            } catch (const ApiError &) {
                // A refusal before the handler's first statement: the
                // credential is checked all the same (401 comes first).
                if (bearer && auth.rows() == 0 && !tx.finished())
                    tx.flush();
                throw;
            }
            if (idempotency_key && !tx.finished()) {
                tx.defer("SELECT tenancy.idempotency_finish($1, $2::bytea, $3, $4)",
                         {*idempotency_key, request_hash, std::to_string(answer.status),
                          answer.status == 204 ? std::string() : answer.body.dump()},
                         kIdempotency);
            }
        };
        if (on_replica) {
            outcome = run_transaction(replica->replica(), body, TxOptions{true});
            if (!outcome && replica_failure(outcome.error.sqlstate)) {
                // The standby failed where the primary may not: read there.
                replica->set_aside();
                replica->count_fallback();
                auth = Result();
                switched = Result();
                outcome = run_transaction(pool, body, TxOptions{true});
            } else {
                replica->count_served();
            }
        } else {
            outcome = run_transaction(pool, body, TxOptions{read_only});
        }
    } catch (const ApiError &e) {
        refused = e.problem;
    } catch (const std::exception &e) {
        log_event("error", "api handler failed",
                  {{"request_id", request_id}, {"route", route.path}, {"error", e.what()}});
        refused = problem_for_status(500, kServerFailureDetail);
    }
    if (auth.rows() == 1) {
        context.role = auth.value(0, 0).value_or("");
        context.account = account.empty() ? auth.value(0, 1).value_or("") : account;
        if (auto p = auth.value(0, 2))
            context.principal = nlohmann::json::parse(*p, nullptr, false);
    }
    if (outcome) {
        if (replayed)
            res.set_header("Idempotency-Replayed", "true");
        send_answer(res, answer);
        if (read_only && bearer)
            if (ReadLog *log = read_log())
                log->push({{"at", utc_now()},
                           {"account", context.account},
                           {"principal", context.principal},
                           {"route", route.method + " " + route.path},
                           {"method", route.method},
                           {"status", answer.status},
                           {"request_id", request_id}});
        return;
    }

    const int stage = outcome.error.stage;
    Problem problem = refused ? *refused : problem_for_failure(outcome.error);
    // The gateway's own database user may not become tenancy_app: a
    // deployment error, not the caller's.
    if (!refused && stage == kRole && problem.status < 500) {
        log_event("error", "the gateway's database user cannot SET ROLE tenancy_app",
                  {{"request_id", request_id}, {"error", outcome.error.message}});
        problem = problem_for_status(500, kServerFailureDetail);
    }
    const bool restricted = !refused && is_restricted_refusal(outcome.error.sqlstate);
    // Whatever authenticate() refuses (a bad, revoked or expired credential,
    // an inactive or vanished account) is a 401, not a 404 or 403.
    if (!refused && stage == kAuthenticate && !restricted && problem.status < 500) {
        std::string detail = std::move(problem.detail);
        problem = problem_for_status(401, std::move(detail));
    }
    if (restricted)
        problem.detail = problem.code == "mfa_required"
                             ? "this session must complete multi-factor authentication first"
                             : "this session must change its password first";
    if (!refused && problem.status >= 500)
        log_event("error", "api request failed",
                  {{"request_id", request_id},
                   {"route", route.path},
                   {"sqlstate", outcome.error.sqlstate},
                   {"error", outcome.error.message}});
    if (problem.status == 401)
        res.set_header("WWW-Authenticate", "Bearer");
    send_problem(res, problem);

    // Record the refusal when the credential was accepted: in the account
    // the request acted in, or the credential's own when switching failed or
    // the context was restricted.
    const bool accepted = bearer && (auth.rows() == 1 || restricted);
    if (!accepted || problem.status >= 500)
        return;
    const bool acted = auth.rows() == 1 && stage != kActAs;
    if (read_only && auth.rows() == 1) {
        if (ReadLog *log = read_log())
            log->push({{"at", utc_now()},
                       {"account", acted ? context.account : auth.value(0, 1).value_or("")},
                       {"principal", context.principal},
                       {"route", route.method + " " + route.path},
                       {"method", route.method},
                       {"status", problem.status},
                       {"request_id", request_id}});
        return;
    }
    record_refusal(pool, route, *credential, acted ? account : std::string(), problem.status,
                   request_id);
}

}  // namespace tenancy::gateway
