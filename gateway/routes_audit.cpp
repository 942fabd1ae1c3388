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
// every ~200 ms), each with its chain position, which the sealed cursor holds.
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

// The account's path, when the caller may read its log. Named by main
// account (main_id_is): one shard on Citus.
std::string readable_account_path(Tx &tx, const ApiCall &call, const std::string &account) {
    Result r = tx.exec(
        "SELECT a.path::text, tenancy.may('audit', 'read') FROM tenancy.accounts a "
        "WHERE a.public_id = $1 AND " +
            main_id_is("a", 2),
        {account, call.main_hint});
    if (r.rows() == 0)
        refuse(404, "account \"" + account + "\" not found");
    if (r.value(0, 1) != std::optional<std::string>("t"))
        refuse(403, "this credential's role may not read the audit log");
    return r.value(0, 0).value_or("");
}

ApiAnswer list_entries(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("pos") && (*page.after)["pos"].is_number_integer())
        after = std::to_string((*page.after)["pos"].get<long long>());
    Params params = {readable_account_path(tx, call, call.path_param("id")),
                     call.query("actor"),
                     call.query("action"),
                     call.query("from"),
                     call.query("to"),
                     after,
                     std::to_string(page.limit + 1)};
    // tenancy.audit_page reads where the chain lives (on Citus, the worker
    // holding the main account's shard).
    Result r = tx.exec_last(
        "SELECT tenancy.audit_page($1::tenancy.account_path, $2, $3, $4::timestamptz, "
        "$5::timestamptz, $6::bigint, $7::integer)::text",
        params);
    return page_answer(call, nlohmann::json::parse(r.value(0, 0).value_or("[]")), page,
                       [](const nlohmann::json &row) {
                           return nlohmann::json{{"pos", row["position"]}};
                       });
}

ApiAnswer verify_chain(Tx &tx, const ApiCall &call) {
    const std::string &account = call.path_param("id");
    readable_account_path(tx, call, account);
    Result r = tx.exec_last("SELECT ok, entries, first_bad, reason FROM tenancy.audit_verify($1)",
                            {account});
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

std::vector<Route> audit_routes() {
    Route list;
    list.method = "GET";
    list.path = "/v1/accounts/{id}/audit-log";
    list.operation_id = "listAuditLog";
    list.summary = "sealed audit entries of the account's subtree, newest first";
    list.tag = "audit";
    list.query = page_query_fields();
    list.query.push_back(Field("actor").describe("actor id, as in the entries"));
    list.query.push_back(Field("action").describe("action name, e.g. api.request"));
    list.query.push_back(Field("from", FieldType::timestamp).describe("entries at or after"));
    list.query.push_back(Field("to", FieldType::timestamp).describe("entries before"));
    list.errors = {403, 404};
    nlohmann::json entry = schema::object({{"position", schema::integer()},
                                           {"id", schema::integer()},
                                           {"at", schema::timestamp()},
                                           {"account_path", schema::string()},
                                           {"actor", schema::any_object()},
                                           {"action", schema::string()},
                                           {"target", schema::nullable(schema::string())},
                                           {"row_key", schema::nullable(schema::any_object())},
                                           {"change", schema::nullable(schema::any_object())},
                                           {"digest", schema::string()},
                                           {"sealed_at", schema::nullable(schema::timestamp())}},
                                          {"target", "row_key", "change", "sealed_at"});
    list.response = schema::page(entry);
    list.handler = list_entries;

    Route verify;
    verify.method = "GET";
    verify.path = "/v1/accounts/{id}/audit-log/verify";
    verify.operation_id = "verifyAuditLog";
    verify.summary = "checks the account's hash chain; names the first bad entry";
    verify.tag = "audit";
    verify.errors = {403, 404};
    verify.response = schema::object({{"ok", schema::boolean()},
                                      {"entries", schema::integer()},
                                      {"first_bad", schema::nullable(schema::integer())},
                                      {"reason", schema::string()}});
    verify.handler = verify_chain;
    return {list, verify};
}

}  // namespace tenancy::gateway
