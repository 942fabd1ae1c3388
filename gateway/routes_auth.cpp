// Routes: login, sub-user login, MFA verify, logout, switch (SPEC section 7).
// Each is one call of the extension (33_api_auth.sql, 30x_identity_*.sql): the
// database decides every rule; these handlers only shape the answer.
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

// The one answer of a refused login, whatever the cause (unknown name, wrong
// password, throttled): the extension answers NULL alike for all of them.
// Refusing rolls the request back (the request is recorded only in a
// context, and a refused login has none), yet the failure counts: the
// extension counts it in shared memory as the attempt starts, and its login
// audit writer writes the table row and the login.failure entries of a
// transaction that did not commit (README, "Failed-login queue").
Problem login_refused() {
    Problem p = problem_for_status(401, "invalid credentials or too many attempts");
    p.code = "invalid_credentials";
    p.title = "Invalid credentials";
    return p;
}

ApiAnswer login_answer(const Result &r) {
    std::optional<std::string> j = r.value(0, 0);
    if (!j)
        throw ApiError{login_refused()};
    return ApiAnswer{200, nlohmann::json::parse(*j)};
}

ApiAnswer login(Tx &tx, const ApiCall &call) {
    return login_answer(tx.exec("SELECT tenancy.api_login($1, $2, $3)::text",
                                {call.text("email"), call.text("password"), call.text("account")}));
}

ApiAnswer sub_user_login(Tx &tx, const ApiCall &call) {
    return login_answer(
        tx.exec("SELECT tenancy.api_login_sub_user($1, $2, $3)::text",
                {call.text("main_account_email"), call.text("email"), call.text("password")}));
}

ApiAnswer verify_mfa(Tx &tx, const ApiCall &call) {
    // A wrong code is not an error in SQL, so that its count commits. Not
    // exec_last: the audit record must say 401 when the code was wrong.
    Result r = tx.exec("SELECT tenancy.verify_mfa($1)", {call.text("code")});
    if (r.value(0, 0) != std::optional<std::string>("t")) {
        Problem p = problem_for_status(401, "invalid MFA code or too many attempts");
        p.code = "invalid_mfa_code";
        p.title = "Invalid MFA code";
        return ApiAnswer{401, problem_json(p, call.request_id)};
    }
    return ApiAnswer{204, nullptr};
}

ApiAnswer logout(Tx &tx, const ApiCall &) {
    tx.exec_last("SELECT tenancy.api_logout()");
    return ApiAnswer{204, nullptr};
}

ApiAnswer switch_account(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.switch_account($1)::text", {call.text("account")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

Field text_field(std::string name, size_t max_length, std::string description) {
    Field f;
    f.name = std::move(name);
    f.required = true;
    f.max_length = max_length;
    f.description = std::move(description);
    return f;
}

Field optional_text(std::string name, size_t max_length, std::string description) {
    Field f = text_field(std::move(name), max_length, std::move(description));
    f.required = false;
    f.nullable = true;
    return f;
}

Route route(std::string method, std::string path, std::string id, std::string summary) {
    Route r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.operation_id = std::move(id);
    r.summary = std::move(summary);
    r.tag = "auth";
    return r;
}

// Both logins answer the same body (tenancy._login_answer).
nlohmann::json login_schema() {
    return schema::object({{"token", schema::string()},
                           {"expires_at", schema::timestamp()},
                           {"account", schema::string()},
                           {"mfa_required", schema::boolean()},
                           {"must_change_password", schema::boolean()}});
}

}  // namespace

std::vector<Route> auth_routes() {
    std::vector<Route> routes;

    Route login_route = route(
        "POST", "/v1/auth/login", "login",
        "log in with email and password, in `account` (one of the user's accounts or a descendant; "
        "default: the first membership); a refused login answers 401 invalid_credentials, one "
        "answer whatever the cause. mfa_required: the session must call /v1/auth/mfa/verify "
        "first; must_change_password: /v1/me/password first");
    login_route.auth = Auth::none;
    login_route.body =
        std::vector<Field>{text_field("email", 254, "the user's email"),
                           text_field("password", 1024, "the user's password"),
                           optional_text("account", 200, "public id of the account to act in")};
    login_route.response = login_schema();
    login_route.errors = {401, 404};
    login_route.handler = login;
    routes.push_back(login_route);

    Route sub = route("POST", "/v1/auth/sub-user-login", "subUserLogin",
                      "a sub-user logs in with its main account's email, its own email and "
                      "password; must_change_password: the first login after (re)activation must "
                      "change the temporary password (/v1/me/password) before anything else");
    sub.auth = Auth::none;
    sub.body = std::vector<Field>{
        text_field("main_account_email", 254, "the email of an owner of the main account"),
        text_field("email", 254, "the sub-user's email"),
        text_field("password", 1024, "the sub-user's password")};
    sub.response = login_schema();
    sub.errors = {401};
    sub.handler = sub_user_login;
    routes.push_back(sub);

    Route verify = route("POST", "/v1/auth/mfa/verify", "verifyMfa",
                         "the session's second factor: a TOTP code (each usable once) or a "
                         "recovery code; a wrong code answers 401 invalid_mfa_code and counts (the "
                         "fifth of a session ends it)");
    verify.restricted = RestrictedContext::allow;
    verify.body = std::vector<Field>{text_field("code", 64, "TOTP or recovery code")};
    verify.status = 204;
    verify.errors = {403};
    verify.handler = verify_mfa;
    routes.push_back(verify);

    Route out = route("POST", "/v1/auth/logout", "logout",
                      "end this session: its token is refused from now on");
    out.restricted = RestrictedContext::allow;
    out.status = 204;
    out.errors = {403};
    out.handler = logout;
    routes.push_back(out);

    Route sw = route(
        "POST", "/v1/auth/switch", "switchAccount",
        "act in `account` from now on. A user session may switch to any account the user is a "
        "member of or a descendant of one (with the role of the nearest membership); a sub-user "
        "session to a descendant of its main account. A session is replaced: the answer's token "
        "acts in `account`, expires when the old one would have, and the old token ends at once. "
        "An API key holds no session: it may name a descendant of its account, the answer has no "
        "token, and the client sends Tenancy-Account: {account} with each request. An account "
        "outside those answers 404");
    sw.body = std::vector<Field>{text_field("account", 200, "public id of the account")};
    sw.response = schema::object({{"account", schema::string()},
                                  {"token", schema::string()},
                                  {"expires_at", schema::timestamp()}},
                                 {"token", "expires_at"});
    sw.errors = {403, 404};
    sw.handler = switch_account;
    routes.push_back(sw);
    return routes;
}

}  // namespace tenancy::gateway
