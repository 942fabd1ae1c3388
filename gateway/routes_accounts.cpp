// Routes: the account subtree (SPEC section 7): list, get, create, update,
// deactivate, reactivate, move, tree. Each is one SQL statement; the rules
// (who may, limits, validation, "not found" outside the subtree) are the
// extension's: tenancy.get_account / update_account (34_api_accounts.sql),
// create_account, deactivate_account, reactivate_account, move_account and
// account_tree (22_accounts.sql). The list reads tenancy.accounts under RLS.
//
//   GET   /v1/accounts          ?parent=&status=&cursor=&limit=  the acting account's
//                               subtree in tree order (parent: direct children of it)
//   POST  /v1/accounts          {parent, name} -> 201 account
//   GET   /v1/accounts/{id}     account {id, parent, name, status, plan, branding,
//                               settings, created_at, updated_at}
//   PATCH /v1/accounts/{id}     {name?, branding?, settings?}: branding and settings
//                               are JSON merge patches (RFC 7396; null removes a key,
//                               null as the whole value removes every override)
//   POST  /v1/accounts/{id}/deactivate | /reactivate | /move {new_parent} -> account
//   GET   /v1/accounts/{id}/tree  {id, name, status, plan, children: [...]}
// `parent` is null when the parent lies outside the caller's subtree.
#include "list_page.hpp"
#include "routes_catalog.hpp"

namespace tenancy::gateway {
namespace {

using nlohmann::json;

// The database answers with one JSON document (column 0, row 0).
json document(const Result &r) {
    return json::parse(r.value(0, 0).value_or("null"));
}

// An object field of the body as jsonb text: absent -> NULL (unchanged),
// JSON null -> 'null' (remove every override).
std::optional<std::string> patch_of(const ApiCall &call, const char *name) {
    auto it = call.body.find(name);
    if (it == call.body.end())
        return std::nullopt;
    return it->dump();
}

ApiAnswer list_accounts(Tx &tx, const ApiCall &call) {
    PageRequest page = page_request(call);
    std::optional<std::string> after;
    if (page.after && page.after->contains("path") && (*page.after)["path"].is_string())
        after = (*page.after)["path"].get<std::string>();
    // The subtree in path order (a subtree is one btree range), after the
    // cursor's path; the parent's id only when RLS shows the parent. The
    // parent is joined inside the limited subquery: on Citus that join runs
    // on each shard (both sides by main_id), where an outer join of the
    // limited rows with accounts would be planned on the coordinator (and
    // crashed Citus 13.2 on PostgreSQL 15).
    // Named by main account (main_id_is): one shard on Citus.
    Result r = tx.exec_last(
        "SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.public_id, 'parent', a.parent, "
        "'name', a.name, 'status', a.status, 'plan', a.plan, 'created_at', a.created_at, "
        "'updated_at', a.updated_at, 'path', a.path::text) ORDER BY a.path), '[]')::text "
        "FROM (SELECT x.*, p.public_id AS parent FROM tenancy.accounts x "
        "LEFT JOIN tenancy.accounts p ON p.main_id = x.main_id AND p.id = x.parent_id "
        "WHERE " +
            main_id_is("x", 5) +
            " AND x.path OPERATOR(tenancy.<@) tenancy.current_path() "
            "AND ($1::text IS NULL OR x.path OPERATOR(tenancy.>) $1::tenancy.account_path) "
            "AND ($2::text IS NULL OR x.status = $2) "
            "AND ($3::text IS NULL OR x.parent_id = (SELECT y.id FROM tenancy.accounts y "
            "WHERE " +
            main_id_is("y", 5) +
            " AND y.public_id = $3)) "
            "ORDER BY x.path LIMIT $4::integer) a",
        {after, call.query("status"), call.query("parent"), std::to_string(page.limit + 1),
         call.main_hint});
    ApiAnswer answer = page_answer(call, document(r), page, [](const json &row) {
        return json{{"path", row["path"]}};
    });
    // Paths are internal (numeric ids of every ancestor): only the sealed
    // cursor carries one.
    for (json &row : answer.body["data"])
        row.erase("path");
    return answer;
}

ApiAnswer get_account(Tx &tx, const ApiCall &call) {
    return {200, document(tx.exec_last("SELECT tenancy.get_account($1)::text",
                                       {call.path_param("id")}))};
}

ApiAnswer create_account(Tx &tx, const ApiCall &call) {
    return {201, document(tx.exec_last(
                     "SELECT tenancy.get_account(tenancy.create_account($1, $2))::text",
                     {call.text("parent"), call.text("name")}))};
}

ApiAnswer update_account(Tx &tx, const ApiCall &call) {
    return {200, document(tx.exec_last(
                     "SELECT tenancy.update_account($1, $2, $3::jsonb, $4::jsonb)::text",
                     {call.path_param("id"), call.text("name"), patch_of(call, "branding"),
                      patch_of(call, "settings")}))};
}

// A lifecycle call, then the account as it is now: get_account is VOLATILE,
// so it sees the change made by the fenced sub-select (OFFSET 0) first.
ApiHandler lifecycle(const char *call_sql, bool takes_new_parent = false) {
    std::string sql = std::string("SELECT tenancy.get_account(d.id)::text FROM (SELECT ") +
                      call_sql + ", $1::text AS id OFFSET 0) d";
    return [sql, takes_new_parent](Tx &tx, const ApiCall &call) {
        Params params = {call.path_param("id")};
        if (takes_new_parent)
            params.push_back(call.text("new_parent"));
        return ApiAnswer{200, document(tx.exec_last(sql, params))};
    };
}

ApiAnswer account_tree(Tx &tx, const ApiCall &call) {
    return {200, document(tx.exec_last("SELECT tenancy.account_tree($1)::text",
                                       {call.path_param("id")}))};
}

json account_schema() {
    return schema::object({{"id", schema::string()},
                           {"parent", schema::nullable(schema::string())},
                           {"name", schema::string()},
                           {"status", {{"type", "string"}, {"enum", {"active", "inactive"}}}},
                           {"plan", schema::string()},
                           {"branding", schema::any_object()},
                           {"settings", schema::any_object()},
                           {"created_at", schema::timestamp()},
                           {"updated_at", schema::timestamp()}});
}

Route route(const char *method, const char *path, const char *operation_id, const char *summary,
            ApiHandler handler) {
    Route r;
    r.method = method;
    r.path = path;
    r.operation_id = operation_id;
    r.summary = summary;
    r.tag = "accounts";
    r.handler = std::move(handler);
    r.response = account_schema();
    r.errors = {403, 404};
    return r;
}

// The database checks names (1..200 characters) and the patches' contents
// and sizes; these bounds only keep absurd bodies out (names are counted in
// characters there, in bytes here).
Field name_field() {
    return Field("name").max(800).describe("1 to 200 characters");
}
Field account_id_field(const char *name, const char *what) {
    return Field(name).require().max(64).describe(what);
}

}  // namespace

std::vector<Route> accounts_routes() {
    Route list = route("GET", "/v1/accounts", "listAccounts",
                       "the acting account's subtree in tree order", list_accounts);
    list.query = page_query_fields();
    list.query.push_back(
        Field("parent").max(64).describe("only the direct children of this account"));
    list.query.push_back(
        Field("status").values({"active", "inactive"}).describe("only accounts with this status"));
    list.response = schema::page(schema::object({{"id", schema::string()},
                                                 {"parent", schema::nullable(schema::string())},
                                                 {"name", schema::string()},
                                                 {"status", schema::string()},
                                                 {"plan", schema::string()},
                                                 {"created_at", schema::timestamp()},
                                                 {"updated_at", schema::timestamp()}}));
    list.errors = {};

    Route create =
        route("POST", "/v1/accounts", "createAccount",
              "creates a subaccount of parent, within the plan's limits", create_account);
    create.body = std::vector<Field>{account_id_field("parent", "the new account's parent"),
                                     name_field().require()};
    create.status = 201;
    create.errors = {403, 404, 409};

    Route get =
        route("GET", "/v1/accounts/{id}", "getAccount", "one account of the subtree", get_account);
    get.errors = {404};

    Route patch =
        route("PATCH", "/v1/accounts/{id}", "updateAccount",
              "renames; merges branding and settings (JSON merge patch, RFC 7396)", update_account);
    patch.body = std::vector<Field>{
        name_field(),
        Field("branding", FieldType::object)
            .allow_null()
            .max(8192)
            .describe("merge patch of {name, logo_url, colours: {primary, secondary, accent, "
                      "background, text}}; null removes every override (4 kB stored at most)"),
        Field("settings", FieldType::object)
            .allow_null()
            .max(32768)
            .describe("merge patch of the settings object; null removes every override (16 kB "
                      "stored at most)")};

    Route deactivate = route("POST", "/v1/accounts/{id}/deactivate", "deactivateAccount",
                             "soft delete: the subtree stops authenticating, its data is kept",
                             lifecycle("tenancy.deactivate_account($1)"));
    Route reactivate =
        route("POST", "/v1/accounts/{id}/reactivate", "reactivateAccount",
              "restores a deactivated account", lifecycle("tenancy.reactivate_account($1)"));
    Route move = route("POST", "/v1/accounts/{id}/move", "moveAccount",
                       "moves the subtree, with all its rows, under new_parent (owners)",
                       lifecycle("tenancy.move_account($1, $2)", true));
    move.body = std::vector<Field>{account_id_field("new_parent", "the account's new parent")};
    move.errors = {403, 404, 409};

    Route tree = route("GET", "/v1/accounts/{id}/tree", "getAccountTree",
                       "the account and its subtree as one nested document", account_tree);
    tree.response = schema::object({{"id", schema::string()},
                                    {"name", schema::string()},
                                    {"status", schema::string()},
                                    {"plan", schema::string()},
                                    {"children", schema::array(schema::any_object())}});
    tree.errors = {404};

    return {list, create, get, patch, deactivate, reactivate, move, tree};
}

}  // namespace tenancy::gateway
