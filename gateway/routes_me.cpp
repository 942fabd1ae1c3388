// Routes of the caller itself (SPEC section 7): GET /v1/me, its password,
// MFA enrolment, and its own sessions. Each is one call of the extension
// (302_identity_sessions.sql, 305_identity_mfa.sql, 33_api_auth.sql), which enforces every rule.
// GET /v1/me: {principal, account, role, scope, expires_at, memberships:
// [{account, role}]}; memberships: a user's memberships that row-level
// security shows in the account acted in (an API key or sub-user has none).
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {

namespace {

ApiAnswer get_me(Tx &tx, const ApiCall &call) {
    // No correlated subquery under whoami() in FROM: Citus plans the
    // memberships on their own. Row security shows those under the account
    // acted in, all in its main account: $1 (ApiCall::main_hint) names it,
    // so Citus reads one shard.
    Result r = tx.exec_last(
        "SELECT (tenancy.whoami() || jsonb_build_object('memberships', (SELECT coalesce(jsonb_agg("
        "jsonb_build_object('account', a.public_id, 'role', m.role) ORDER BY a.path), '[]') "
        "FROM tenancy.memberships m JOIN tenancy.accounts a ON a.main_id = m.main_id AND a.id = "
        "m.account_id "
        "WHERE m.user_id = CASE WHEN tenancy.whoami()->'principal'->>'kind' = 'user' "
        "THEN (tenancy.whoami()->'principal'->>'id')::bigint END "
        "AND m.main_id = coalesce($1::bigint, m.main_id))))::text",
        {call.main_hint});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

// Runs the route's one statement. The database refuses a wrong old password
// or MFA code with the SQLSTATE of a refused credential (28P01, 28000), which
// problem.cpp answers 401; here the credential itself is valid, and a 401
// would tell the client its session is gone: such a refusal of this
// statement is answered as `instead`.
Result exec_last_refusing(Tx &tx, const std::string &sql, const Params &params,
                          const std::string &sqlstate, int status, const char *code,
                          const char *title) {
    try {
        return tx.exec_last(sql, params);
    } catch (const DbError &e) {
        if (e.sqlstate() != sqlstate || tx.failed_stage() != kStageStatement)
            throw;
        Problem p = problem_for_status(status, e.what());
        p.code = code;
        p.title = title;
        throw ApiError{p};
    }
}

ApiAnswer change_password(Tx &tx, const ApiCall &call) {
    exec_last_refusing(tx, "SELECT tenancy.change_password($1, $2)",
                       {call.text("old_password"), call.text("new_password")}, "28P01", 403,
                       "invalid_password", "Invalid password");
    return ApiAnswer{204, nullptr};
}

ApiAnswer enroll_mfa(Tx &tx, const ApiCall &) {
    Result r = tx.exec_last("SELECT tenancy.enroll_mfa()");
    return ApiAnswer{200, {{"otpauth_uri", r.value(0, 0).value_or("")}}};
}

ApiAnswer confirm_mfa(Tx &tx, const ApiCall &call) {
    Result r = exec_last_refusing(tx, "SELECT to_jsonb(tenancy.confirm_mfa($1))::text",
                                  {call.text("code")}, "28000", 422, "invalid_mfa_code",
                                  "Invalid MFA code");
    return ApiAnswer{200,
                     {{"recovery_codes", nlohmann::json::parse(r.value(0, 0).value_or("[]"))}}};
}

ApiAnswer list_sessions(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> before;
    if (page.after && page.after->contains("id") && (*page.after)["id"].is_number_integer())
        before = std::to_string((*page.after)["id"].get<long long>());
    Result r = tx.exec_last(
        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', s.id::text, 'account', s.account, "
        "'current', s.current, 'mfa_verified', s.mfa_verified, 'created_at', s.created_at, "
        "'expires_at', s.expires_at) ORDER BY s.id DESC), '[]')::text "
        "FROM tenancy.list_sessions($1::bigint, $2::integer) s",
        {before, std::to_string(page.limit + 1)});
    return page_answer(call, nlohmann::json::parse(r.value(0, 0).value_or("[]")), page,
                       [](const nlohmann::json &row) {
                           return nlohmann::json{{"id", std::stoll(row["id"].get<std::string>())}};
                       });
}

// Session ids are decimal without leading zeros, so that the database's "not
// found" names exactly the id sent; anything else names no session (the same 404).
ApiAnswer delete_session(Tx &tx, const ApiCall &call) {
    const std::string &sid = call.path_param("sid");
    bool digits = !sid.empty() && sid.size() <= 18 && sid[0] != '0';
    for (char c : sid)
        digits = digits && c >= '0' && c <= '9';
    if (!digits)
        refuse(404, "session " + sid + " not found");
    tx.exec_last("SELECT tenancy.revoke_session($1::bigint)", {sid});
    return ApiAnswer{204, nullptr};
}

Field required_text(std::string name, size_t max_length, std::string description) {
    Field f;
    f.name = std::move(name);
    f.required = true;
    f.max_length = max_length;
    f.description = std::move(description);
    return f;
}

Route me_route(std::string method, std::string path, std::string id, std::string summary) {
    Route r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.operation_id = std::move(id);
    r.summary = std::move(summary);
    r.tag = "me";
    return r;
}

}  // namespace

std::vector<Route> me_routes() {
    Route me;
    me.method = "GET";
    me.path = "/v1/me";
    me.operation_id = "getMe";
    me.summary = "who the credential is, the account it acts in, its role and memberships";
    me.tag = "me";
    me.response = schema::object(
        {{"principal", schema::object({{"kind", schema::string()}, {"id", schema::string()}}, {})},
         {"account", schema::string()},
         {"role", schema::string()},
         {"scope", schema::nullable(schema::string())},
         {"expires_at", schema::nullable(schema::timestamp())},
         {"memberships", schema::array(schema::object(
                             {{"account", schema::string()}, {"role", schema::string()}}))}},
        {"scope", "expires_at"});
    me.handler = get_me;

    Route password = me_route("POST", "/v1/me/password", "changePassword",
                              "change one's own password (users and sub-users); clears a pending "
                              "password change, which is the only thing such a session may do, "
                              "and ends the principal's other sessions. A wrong old password "
                              "answers 403 invalid_password and counts as a failed attempt (5 "
                              "within 15 minutes refuse every attempt for a while)");
    password.restricted = RestrictedContext::allow;
    password.body = std::vector<Field>{
        required_text("old_password", 1024, "the current password"),
        required_text("new_password", 1024, "8 to 1024 bytes, not the current one")};
    password.status = 204;
    password.errors = {403};
    password.handler = change_password;

    Route enroll = me_route("POST", "/v1/me/mfa", "enrollMfa",
                            "start TOTP enrolment (a fully verified user session): a new secret "
                            "as an otpauth:// URI; MFA is on once /v1/me/mfa/confirm accepts a "
                            "code from it. 409 when MFA is already on");
    enroll.response = schema::object({{"otpauth_uri", schema::string()}});
    enroll.errors = {403, 409};
    enroll.handler = enroll_mfa;

    Route confirm = me_route("POST", "/v1/me/mfa/confirm", "confirmMfa",
                             "turn MFA on with a code of the enrolled secret; answers ten "
                             "single-use recovery codes, shown only here. A wrong code answers "
                             "422 invalid_mfa_code and leaves MFA off");
    confirm.body = std::vector<Field>{required_text("code", 16, "a TOTP code")};
    confirm.response = schema::object({{"recovery_codes", schema::array(schema::string())}});
    confirm.errors = {403, 409};
    confirm.handler = confirm_mfa;

    Route sessions = me_route("GET", "/v1/me/sessions", "listSessions",
                              "the caller's own live sessions (not ended, not expired), newest "
                              "first; current marks the session of this request. A user or "
                              "sub-user session only (an API key has none: 403)");
    sessions.query = page_query_fields();
    sessions.response =
        schema::page(schema::object({{"id", schema::string()},
                                     {"account", schema::nullable(schema::string())},
                                     {"current", schema::boolean()},
                                     {"mfa_verified", schema::boolean()},
                                     {"created_at", schema::timestamp()},
                                     {"expires_at", schema::timestamp()}}));
    sessions.errors = {403};
    sessions.handler = list_sessions;

    Route end = me_route("DELETE", "/v1/me/sessions/{sid}", "deleteSession",
                         "end one of one's own sessions (its token is refused from then on); "
                         "another principal's session answers 404, as a missing one does");
    end.status = 204;
    end.errors = {403, 404};
    end.handler = delete_session;

    return {me, password, enroll, confirm, sessions, end};
}

}  // namespace tenancy::gateway
