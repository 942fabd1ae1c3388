// Routes: per-account security settings (PHI protection, call recording,
// transcript encryption, audit log). One call of the extension each
// (52_security_settings.sql), which enforces owner-only, plan gating and
// tighten-only: 403 (not the owner), 409 plan_limit_reached (the plan lacks
// the feature), 409 conflict (an ancestor enforces it), 404 (not in the
// caller's subtree).
#include "routes_catalog.hpp"

namespace tenancy::gateway {

namespace {

const char *const kNames[] = {"phi_protection", "call_recording", "transcript_encryption",
                              "audit_log"};

nlohmann::json settings_schema(bool nullable) {
    std::vector<std::pair<std::string, nlohmann::json>> props;
    std::vector<std::string> optional;
    for (const char *n : kNames) {
        props.emplace_back(n, nullable ? schema::nullable(schema::boolean()) : schema::boolean());
        optional.push_back(n);
    }
    return schema::object(props, nullable ? optional : std::vector<std::string>{});
}

ApiAnswer get_security(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.security_settings($1)::text", {call.path_param("id")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer patch_security(Tx &tx, const ApiCall &call) {
    Result r = tx.exec_last("SELECT tenancy.set_security_settings($1, $2::jsonb)::text",
                            {call.path_param("id"), call.body.dump()});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

}  // namespace

std::vector<Route> security_routes() {
    nlohmann::json answer = schema::object({{"account", schema::string()},
                                            {"effective", settings_schema(false)},
                                            {"own", settings_schema(true)}});

    Route get;
    get.method = "GET";
    get.path = "/v1/accounts/{id}/security";
    get.operation_id = "getSecuritySettings";
    get.summary =
        "an account's security settings: effective (inherited from the ancestors, within the "
        "main account's plan) and own (what the account set itself)";
    get.tag = "accounts";
    get.response = answer;
    get.errors = {404};
    get.handler = get_security;

    Route patch;
    patch.method = "PATCH";
    patch.path = "/v1/accounts/{id}/security";
    patch.operation_id = "updateSecuritySettings";
    patch.summary =
        "switch security settings (owner only; null = inherit again). 409 plan_limit_reached "
        "when the main account's plan lacks the feature; 409 when an ancestor enforces it (a "
        "descendant may "
        "tighten, never loosen: for call_recording, off is the tight side). Turning PHI "
        "protection on re-redacts the subtree's stored transcripts in the background";
    patch.tag = "accounts";
    std::vector<Field> body;
    for (const char *n : kNames)
        body.push_back(Field(n, FieldType::boolean).allow_null().describe("true, false or null"));
    patch.body = body;
    patch.response = answer;
    patch.errors = {403, 404, 409};
    patch.handler = patch_security;

    return {get, patch};
}

}  // namespace tenancy::gateway
