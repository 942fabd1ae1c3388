// Routes: usage records and reports (billing roll-up), and an account's
// effective (inherited) settings and branding. The rules live in the
// extension (54_usage.sql, 55_effective_settings.sql); these routes call it.
//   POST /v1/usage                          one usage record -> 201 the record
//   GET  /v1/accounts/{id}/usage?from=&to=  totals per kind: the account alone, its subtree
//   GET  /v1/accounts/{id}/settings/effective  {account, settings, branding}, merged
// Quantities travel as decimal strings ("12.5"): exact, as billing needs.
#include "routes_catalog.hpp"

#include <regex>

namespace tenancy::gateway {
namespace {

// The extension's validation errors (SQLSTATE 22023) say what is wrong in
// their first words; this names the request field they are about.
const char *field_of_message(const std::string &message) {
    static const std::vector<std::pair<std::string, const char *>> prefixes = {
        {"unknown usage kind", "kind"}, {"usage quantity", "quantity"}, {"usage time", "at"},
        {"usage ref must", "ref"},      {"usage report range", "to"},
    };
    for (const auto &[prefix, field] : prefixes)
        if (message.compare(0, prefix.size(), prefix) == 0)
            return field;
    return nullptr;
}

// Runs the route's statement; a refusal by the extension's validation comes
// back as 422 invalid_field naming the field.
Result exec_naming_fields(Tx &tx, bool last, const std::string &sql, const Params &params) {
    try {
        return last ? tx.exec_last(sql, params) : tx.exec(sql, params);
    } catch (const DbError &e) {
        const char *field = field_of_message(e.what());
        if (e.sqlstate() != "22023" || tx.failed_stage() != kStageStatement || !field)
            throw;
        Problem p = problem_for_status(422, e.what());
        p.code = "invalid_field";
        p.title = "Invalid field";
        p.field = field;
        throw ApiError{p};
    }
}

// Decimal text: digits, an optional fraction of up to 6 digits.
bool is_quantity(const std::string &s) {
    static const std::regex re(R"([0-9]{1,13}(\.[0-9]{1,6})?)");
    return std::regex_match(s, re);
}

ApiAnswer record_usage(Tx &tx, const ApiCall &call) {
    std::string quantity = call.text("quantity").value_or("");
    if (!is_quantity(quantity)) {
        Problem p = problem_for_status(
            422, "quantity must be a decimal string such as \"12.5\" (at most 6 decimals)");
        p.code = "invalid_field";
        p.title = "Invalid field";
        p.field = "quantity";
        throw ApiError{p};
    }
    Result id = exec_naming_fields(
        tx, false,
        "SELECT tenancy.record_usage(coalesce($1, tenancy.current_account()), $2, $3::numeric, "
        "coalesce($4::timestamptz, now()), $5)",
        {call.text("account"), call.text("kind"), quantity, call.text("at"), call.text("ref")});
    // The record as stored (a retried ref answers the first record), read by
    // the extension under the usage policies' rules: on Citus only the role
    // that wrote the shard (record_usage() as its owner) may read it in this
    // transaction.
    Result r = tx.exec_last("SELECT tenancy.usage_record($1)::text", {id.value(0, 0)});
    if (!r.value(0, 0))  // not readable back: cannot happen for a role that may write usage
        refuse(404, "usage record not found");
    return ApiAnswer{201, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer usage_totals(Tx &tx, const ApiCall &call) {
    // [from, to): from defaults to the start of the current UTC month, to to one
    // month after from.
    Result r = exec_naming_fields(
        tx, true,
        "WITH w AS (SELECT f, coalesce($3::timestamptz, "
        "((f AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC') AS t "
        "FROM (SELECT coalesce($2::timestamptz, date_trunc('month', now(), 'UTC')) AS f) x) "
        "SELECT jsonb_build_object('account', $1::text, 'from', w.f, 'to', w.t, "
        "'own', (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', u.kind, 'unit', k.unit, "
        "'quantity', u.quantity::text) ORDER BY u.kind), '[]') "
        "FROM tenancy.usage_report($1, w.f, w.t, false) u JOIN tenancy.usage_kinds k USING "
        "(kind)), "
        "'subtree', (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', u.kind, 'unit', k.unit, "
        "'quantity', u.quantity::text) ORDER BY u.kind), '[]') "
        "FROM tenancy.usage_report($1, w.f, w.t, true) u JOIN tenancy.usage_kinds k USING (kind))"
        ")::text FROM w",
        {call.path_param("id"), call.query("from"), call.query("to")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

ApiAnswer effective_settings(Tx &tx, const ApiCall &call) {
    // Branding for every role; settings for roles that read them (else null).
    Result r = tx.exec_last(
        "SELECT jsonb_build_object('account', $1::text, "
        "'branding', tenancy.effective_branding($1), "
        "'settings', CASE WHEN tenancy.may('settings', 'read') "
        "THEN tenancy.effective_settings($1) END)::text",
        {call.path_param("id")});
    return ApiAnswer{200, nlohmann::json::parse(r.value(0, 0).value_or("{}"))};
}

Route usage_route(std::string method, std::string path, std::string id, std::string summary) {
    Route r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.operation_id = std::move(id);
    r.summary = std::move(summary);
    r.tag = "usage";
    return r;
}

}  // namespace

std::vector<Route> usage_routes() {
    Route record = usage_route(
        "POST", "/v1/usage", "recordUsage",
        "record usage (call minutes, LLM tokens, ...) for the acting account or a descendant; "
        "roles that write usage (owner, admin: the platform's API key). A ref already recorded "
        "for the account and kind answers that record and records nothing (a retry); the same "
        "ref with another quantity answers 409");
    record.body = std::vector<Field>{
        Field("account").max(64).describe(
            "account id (the acting account or a descendant); default: the acting account"),
        Field("kind").require().max(63).describe(
            "usage kind: call_minutes, llm_tokens, tts_characters, stt_minutes, sms_messages, or "
            "one the operator added"),
        Field("quantity")
            .require()
            .max(24)
            .describe("decimal string, 0 to 10^12, at most 6 decimals, e.g. \"12.5\""),
        Field("at", FieldType::timestamp)
            .allow_null()
            .describe("when the usage happened (default now; not in the future)"),
        Field("ref").allow_null().max(200).describe(
            "the platform's reference (a call id): unique per account and kind")};
    record.status = 201;
    record.response = schema::object({{"id", schema::string()},
                                      {"account", schema::string()},
                                      {"kind", schema::string()},
                                      {"quantity", schema::string()},
                                      {"at", schema::timestamp()},
                                      {"ref", schema::nullable(schema::string())}});
    record.errors = {403, 404, 409};
    record.handler = record_usage;

    Route totals = usage_route(
        "GET", "/v1/accounts/{id}/usage", "getUsage",
        "usage totals per kind over [from, to) for the account alone (own) and with its whole "
        "subtree (subtree: what billing rolls up to the main account); roles that read usage");
    totals.query = {Field("from", FieldType::timestamp)
                        .describe("start, inclusive (default: the current UTC month's start)"),
                    Field("to", FieldType::timestamp)
                        .describe("end, exclusive (default: one month after from)")};
    nlohmann::json total = schema::object(
        {{"kind", schema::string()}, {"unit", schema::string()}, {"quantity", schema::string()}});
    totals.response = schema::object({{"account", schema::string()},
                                      {"from", schema::timestamp()},
                                      {"to", schema::timestamp()},
                                      {"own", schema::array(total)},
                                      {"subtree", schema::array(total)}});
    totals.errors = {403, 404};
    totals.handler = usage_totals;

    Route effective = usage_route(
        "GET", "/v1/accounts/{id}/settings/effective", "getEffectiveSettings",
        "the account's settings and branding merged over its ancestors' (objects key by key, a "
        "value set lower down wins); settings is null for roles that do not read settings");
    effective.tag = "accounts";
    effective.response = schema::object({{"account", schema::string()},
                                         {"branding", schema::any_object()},
                                         {"settings", schema::nullable(schema::any_object())}});
    effective.errors = {403, 404};
    effective.handler = effective_settings;

    return {record, totals, effective};
}

}  // namespace tenancy::gateway
